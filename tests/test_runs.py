"""End-to-end runs through the command line."""

import csv
import json

import h5py
import numpy as np
import pytest

from conftest import CONFIGS, cli


@pytest.fixture(scope="module")
def hydrogen_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "h"
    r = cli("run", f"{CONFIGS}/hydrogen.yaml", "--out", str(out), "optimizer.iterations=150",
            "sampler.walkers=512", "evaluation.samples=40000", "output.log_every=50")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_short_hydrogen_run_lowers_the_energy(hydrogen_run):
    out, r = hydrogen_run
    s = json.loads((out / "summary.json").read_text())
    for key in ["energy", "energy_err", "variance", "acceptance", "iterations", "wall_s",
                "samples_per_s"]:
        assert key in s and np.isfinite(s[key]), key
    assert s["iterations"] == 150
    # Variational and close: the exact energy is -0.5.
    assert s["energy"] < -0.49, s
    assert s["energy"] > -0.5 - 5 * s["energy_err"], s
    assert 0.3 < s["acceptance"] < 0.7
    assert "E = " in r.stdout and "ETA" in r.stdout


def test_run_directory_contents(hydrogen_run):
    out, _ = hydrogen_run
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 150
    assert {"energy", "energy_err", "variance", "acceptance", "step", "seconds"} <= set(rows[0])
    first = np.mean([float(r["energy"]) for r in rows[:10]])
    last = np.mean([float(r["energy"]) for r in rows[-10:]])
    assert last < first
    with h5py.File(out / "params.h5") as f:
        assert f.attrs["n_parameters"] == sum(v.size for v in f["parameters"].values())
    cfg = (out / "config.yaml").read_text()
    assert "iterations: 150" in cfg


def test_evaluate_writes_observables(hydrogen_run):
    out, _ = hydrogen_run
    r = cli("evaluate", str(out), "--samples", "30000")
    assert r.returncode == 0, r.stderr[-3000:]
    obs = json.loads((out / "observables.json").read_text())
    for key in ["r", "r2", "inv_r"]:
        assert obs[key]["error"] > 0
    # Close to the exact 1s values (<r> = 1.5, <r^2> = 3, <1/r> = 1) for a good state.
    assert abs(obs["r"]["mean"] - 1.5) < 0.05
    assert abs(obs["inv_r"]["mean"] - 1.0) < 0.05
    rho = obs["radial_density"]
    p_r = np.array(rho["p_r"])
    width = rho["edges"][1] - rho["edges"][0]
    assert abs(p_r.sum() * width - 1.0) < 0.01  # P(r) normalised (0.1% tail cut)


def test_evaluate_missing_run_dir_is_one_line(tmp_path):
    r = cli("evaluate", str(tmp_path / "nope"), timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not found" in r.stderr


def test_unwritable_output_directory_fails_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("run", "--out", str(blocker / "sub"), "optimizer.iterations=1", timeout=300)
    assert r.returncode == 2
    assert "output.dir" in r.stderr and "Traceback" not in r.stderr


def test_adam_runs_and_reports(tmp_path):
    out = tmp_path / "adam"
    r = cli("run", f"{CONFIGS}/harmonic_oscillator.yaml", "--out", str(out),
            "optimizer.type=adam", "optimizer.lr=0.02", "optimizer.iterations=60",
            "sampler.walkers=256", "evaluation.samples=5000")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["energy"] > 0.5 - 5 * s["energy_err"]  # variational
    assert s["energy"] < 0.6


def test_non_finite_energies_never_reach_the_optimizer(tmp_path):
    # A potential that returns NaN beyond |x| > 2, where |psi|^2 is never
    # negligible: every iteration has non-finite energies, each one rewinds
    # (nothing is applied, nothing is recorded) and after recovery.max_rewinds
    # the run stops with one line. (A NaN that goes away after a rewind:
    # tests/test_checkpoint.py.)
    (tmp_path / "nanpot.py").write_text(
        "import tensorflow as tf\n"
        "def v(x):\n"
        "    r2 = tf.reduce_sum(x * x, axis=[1, 2])\n"
        "    return tf.where(r2 > 4.0, tf.constant(float('nan'), x.dtype), 0.5 * r2)\n")
    cfg = tmp_path / "nan.yaml"
    cfg.write_text("system: {particles: 1, dim: 1}\n"
                   "potential: {type: user, function: nanpot:v}\n"
                   "reference_energy: 0.5\n")
    r = cli("run", str(cfg), "--out", str(tmp_path / "run"), "optimizer.iterations=3",
            "sampler.walkers=512", "sampler.init_width=3.0", "sampler.thermalization=0",
            "evaluation.samples=1000", "recovery.max_rewinds=2")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stdout.count("local energies not finite; rewound to the start of iteration 0") == 2
    assert "not finite after 2 rewind(s) (recovery.max_rewinds = 2)" in r.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert rows == []


def test_wrong_shape_user_potential_through_the_cli_is_one_line_exit_2(tmp_path):
    (tmp_path / "badpot.py").write_text(
        "import tensorflow as tf\n"
        "def v(x):\n"
        "    return tf.reduce_sum(x * x, axis=2)  # (walkers, N): one value per particle\n")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("system: {particles: 2, dim: 1}\n"
                   "potential: {type: user, function: badpot:v}\n"
                   "wavefunction: {factors: [{type: gaussian_envelope}]}\n")
    r = cli("run", str(cfg), "--out", str(tmp_path / "run"), timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "badpot:v" in r.stderr and "(3, 2)" in r.stderr


def test_evaluate_finds_the_user_potential_from_any_directory(tmp_path):
    # The module sits next to the config; run from one directory, evaluate from another.
    src = tmp_path / "project"
    src.mkdir()
    (src / "mypot.py").write_text(
        "import tensorflow as tf\n"
        "def trap(x, k=1.0):\n"
        "    return 0.5 * k * tf.reduce_sum(x * x, axis=[1, 2])\n")
    (src / "job.yaml").write_text(
        "system: {particles: 1, dim: 1}\n"
        "potential: {type: user, function: mypot:trap, params: {k: 4.0}}\n"
        "wavefunction: {factors: [{type: gaussian_envelope, alpha: 1.0}]}\n"
        "sampler: {walkers: 64, thermalization: 10}\n"
        "optimizer: {iterations: 2}\n"
        "evaluation: {samples: 640, thermalization: 5}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = cli("run", str(src / "job.yaml"), "--out", str(tmp_path / "run"), cwd=str(elsewhere))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "job:" in r.stdout and "reference" not in r.stdout  # name from the file, no reference
    r = cli("evaluate", str(tmp_path / "run"), "--samples", "2000", cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    obs = json.loads((tmp_path / "run" / "observables.json").read_text())
    # psi = exp(-x^2) is exact for k = 4 (omega = 2): E = 1 with zero variance
    assert abs(obs["energy"]["energy"] - 1.0) < 1e-10
    assert obs["samples"] >= 2000


def test_evaluation_redraws_a_block_with_non_finite_energies_and_reports_it():
    from conftest import ground_state
    from distvmc import config
    from distvmc.objectives import NonFiniteEnergyError

    cfg = config.load(None, ["system.dim=1", "potential.type=harmonic",
                             "wavefunction.factors=[{type: gaussian_envelope, alpha: 0.4}]",
                             "sampler.walkers=100", "evaluation.samples=3000"])
    job = ground_state(cfg, 1)
    obj = job.driver.objective
    clean = obj.local_energy
    calls = {"n": 0}

    def poisoned(x, first_bad=1):
        calls["n"] += 1
        e = clean(x)
        if calls["n"] <= first_bad:
            e[:7] = np.nan
        return e

    obj.local_energy = poisoned
    out = obj.evaluate()
    assert out["nonfinite"] == 7 and out["redrawn_blocks"] == 1
    assert out["samples"] == 3000 and np.isfinite(out["energy_err"]) and out["energy_err"] > 0
    assert np.isfinite(out["energy"])

    calls["n"] = 0
    obj.local_energy = lambda x: poisoned(x, first_bad=10 ** 6)  # never goes away
    with pytest.raises(NonFiniteEnergyError, match="evaluation: non-finite local energies"):
        obj.evaluate()


def test_parameters_that_differ_between_ranks_stop_the_run():
    """api.parameters_agree: equal digests pass; a rank whose parameters differ raises."""
    from types import SimpleNamespace

    from distvmc.api import parameters_agree

    flat = np.linspace(-1.0, 1.0, 7)
    wf = SimpleNamespace(get_flat=lambda: flat)
    job = SimpleNamespace(found=[SimpleNamespace(wf=wf), SimpleNamespace(wf=None)])

    class TwoRanks:  # rank 1 holds `other`'s digest
        size = 2

        def __init__(self, other):
            self.other = other

        def allgather(self, x):
            theirs = parameters_agree(SimpleNamespace(found=[SimpleNamespace(wf=SimpleNamespace(
                get_flat=lambda: self.other))]), SimpleNamespace(size=1))
            row = np.frombuffer(bytes.fromhex(theirs), dtype=np.uint8).astype(np.float64)
            return np.concatenate([x, row[None, :]])

    digest = parameters_agree(job, TwoRanks(flat.copy()))
    assert len(digest) == 64
    changed = flat.copy()
    changed[3] = np.nextafter(changed[3], 2.0)  # one ulp on one parameter
    with pytest.raises(RuntimeError, match=r"parameters differ between ranks .*ranks \[1\]"):
        parameters_agree(job, TwoRanks(changed))


def test_updates_cut_by_max_update_norm_are_recorded_and_reported(tmp_path, hydrogen_run):
    """history.csv marks each clipped update; when nearly all were clipped the log says that
    lr had no effect (measured: every pionless run so far was clipped at every iteration)."""
    out = tmp_path / "clip"
    r = cli("run", f"{CONFIGS}/harmonic_oscillator.yaml", "--out", str(out),
            "optimizer.iterations=50", "optimizer.max_update_norm=1e-7",
            "sampler.walkers=128", "evaluation.samples=2000")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 50 and all(row["clipped"] == "1" for row in rows)
    assert all(float(row["update_norm"]) == pytest.approx(1e-7) for row in rows)
    assert "shortened 100% of the last 50 updates" in r.stdout + r.stderr
    decayed = tmp_path / "decay"  # the cap on lr's schedule: max_update_norm / (1 + lr_decay t)
    r = cli("run", f"{CONFIGS}/harmonic_oscillator.yaml", "--out", str(decayed),
            "optimizer.iterations=50", "optimizer.max_update_norm=1e-7", "optimizer.lr_decay=0.5",
            "optimizer.max_update_norm_decay=true", "sampler.walkers=128",
            "evaluation.samples=2000")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(decayed / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(row["update_norm"]) for row in rows] == pytest.approx(
        [1e-7 / (1 + 0.5 * t) for t in range(50)], rel=1e-9)
    assert "the steps followed its decay" in r.stdout + r.stderr
    free, log = hydrogen_run  # no max_update_norm: nothing clipped, no note
    with open(free / "history.csv") as f:
        assert {row["clipped"] for row in csv.DictReader(f)} == {"0"}
    assert "shortened" not in log.stdout + log.stderr
