"""One training loop for every mode: checkpoints, bitwise resume and pre-emption in grid
and excited-state runs, the Python API against the command line, a signed wavefunction
with a node through the sampler, the local energy and SR."""

from __future__ import annotations

import json
import os
import signal

import h5py
import numpy as np
import pytest
import tensorflow as tf

from conftest import CONFIGS, cli, quiet
from test_checkpoint import EXIT_PREEMPTED, TIMEOUT_S, Proc, copy_run, distvmc, history

GRID = [os.path.join(CONFIGS, "harmonic_oscillator_excited.yaml"), "excited.states=2",
        "grid.spacing=0.1", "grid.box=6.5", "optimizer.iterations=60", "grid.tolerance=1e-12",
        "checkpoint.every=7", "output.log_every=1", "excited.reference_energies=[0.5, 1.5]"]
SAMPLING = ["name=osc_excited", "system.dim=1", "potential.type=harmonic",
            "wavefunction.factors=[{type: mlp, signed: true, hidden: [6]}, "
            "{type: gaussian_envelope, alpha: 0.5}]",
            "sampler.walkers=64", "sampler.step=1.0", "sampler.thermalization=20",
            "sampler.sweeps_per_sample=3", "excited.states=2", "excited.overlap_samples=128",
            "optimizer.iterations=14", "optimizer.lr=0.1", "evaluation.samples=2000",
            "evaluation.thermalization=10", "checkpoint.every=5", "output.log_every=1"]


def state_params(run_dir) -> dict[str, bytes]:
    with h5py.File(os.path.join(run_dir, "params.h5")) as f:
        out = {}
        f.visititems(lambda n, o: out.__setitem__(n, o[()].tobytes())
                     if isinstance(o, h5py.Dataset) else None)
        return out


def interrupted_and_resumed(args, tmp_path, after: str):
    """(reference run, interrupted-then-resumed run): SIGTERM once ``after`` is printed."""
    ref = Proc(distvmc("run", *args, "--out", str(tmp_path / "reference")))
    intr = Proc(distvmc("run", *args, "--out", str(tmp_path / "interrupted")))
    intr.wait_for(after)
    os.kill(intr.proc.pid, signal.SIGTERM)
    assert intr.finish() == EXIT_PREEMPTED, intr.text[-3000:]
    assert "pre-emption signal" in intr.text
    assert ref.finish() == 0, ref.text[-3000:]
    run = copy_run(tmp_path / "interrupted", tmp_path / "resumed")
    r = cli("run", "--resume", str(run), timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    assert "resumed from" in r.stdout
    return tmp_path / "reference", run, r.stdout


def assert_same(reference, run):
    ref_h, h = history(reference), history(run)
    assert len(ref_h) == len(h) > 0
    for i, (a, b) in enumerate(zip(ref_h, h)):
        assert a == b, f"history differs at row {i}:\n{a}\n{b}"
    assert state_params(reference) == state_params(run), "parameters differ (bitwise)"
    s_ref = json.loads((reference / "summary.json").read_text())
    s = json.loads((run / "summary.json").read_text())
    for a, b in zip(s_ref["energies"], s["energies"]):
        assert a["energy"] == b["energy"] and a["energy_err"] == b["energy_err"]
    assert s["overlaps"] == s_ref["overlaps"]
    with h5py.File(run / "results.h5") as f:
        assert sorted(f["states"].keys()) == ["0", "1"]
        assert f["history/energy"].shape == (len(h),)


def test_grid_mode_sigterm_then_resume_is_bitwise(tmp_path):
    reference, run, out = interrupted_and_resumed(GRID, tmp_path, r"^\[state 1\] \[ *5/60\]")
    assert "at iteration" in out
    assert_same(reference, run)
    s = json.loads((run / "summary.json").read_text())
    assert abs(s["energies"][1]["energy"] - 1.5) < 1e-3


@pytest.mark.slow
def test_sampling_excited_states_sigterm_then_resume_is_bitwise(tmp_path):
    reference, run, _ = interrupted_and_resumed(SAMPLING, tmp_path, r"^\[state 1\] \[ *3/14\]")
    assert_same(reference, run)


def test_api_and_cli_give_bitwise_the_same_run(tmp_path):
    import distvmc

    args = ["wavefunction.factors.0.hidden=[6]", "sampler.walkers=64", "sampler.thermalization=10",
            "optimizer.iterations=5", "evaluation.samples=640", "evaluation.thermalization=5"]
    r = cli("run", os.path.join(CONFIGS, "hydrogen.yaml"), *args, "--out", str(tmp_path / "cli"))
    assert r.returncode == 0, r.stderr
    res = distvmc.run(os.path.join(CONFIGS, "hydrogen.yaml"), args, out=str(tmp_path / "api"),
                      log=quiet)
    assert state_params(tmp_path / "cli") == state_params(tmp_path / "api")
    assert history(tmp_path / "cli") == history(tmp_path / "api")
    s = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert (res.energy, res.energy_err) == (s["energy"], s["energy_err"])
    assert len(res.history) == 5 and res.run_dir == str(tmp_path / "api")
    # the returned wavefunction is the trained one: (sign, log|psi|) of walkers
    sign, logabs = res.wavefunction(tf.constant(np.ones((2, 1, 3))))
    assert sign.shape == (2,) and np.all(sign.numpy() == 1.0)
    loaded = distvmc.load(res.run_dir)
    np.testing.assert_array_equal(loaded.wavefunction.get_flat(), res.wavefunction.get_flat())
    assert loaded.energy == res.energy


def test_api_takes_a_python_potential(tmp_path):
    import distvmc

    def trap(x):  # a 1D oscillator, omega = 2: E_0 = 1 with psi = exp(-x^2)
        return 2.0 * tf.reduce_sum(x * x, axis=[1, 2])

    cfg = {"system": {"particles": 1, "dim": 1}, "potential": {"type": "none"},
           "wavefunction": {"factors": [{"type": "gaussian_envelope", "alpha": 0.4}]},
           "sampler": {"walkers": 128}, "optimizer": {"iterations": 40, "lr": 0.2},
           "evaluation": {"samples": 5000}}
    res = distvmc.run(cfg, out=str(tmp_path / "run"), potential=trap, log=quiet)
    assert abs(res.energy - 1.0) < 1e-8 and res.summary["variance"] < 1e-10


class OddState(tf.Module):
    """psi = x exp(-a x^2) in 1D, a trainable: a node at x = 0 (a plug-in factor with the
    legacy interface: log_abs and sign). At a = 1/2 the oscillator's first excited state,
    E = 3/2."""

    def __init__(self, a):
        super().__init__()
        self.a = tf.Variable(a, dtype=tf.float64, name="a")

    def log_abs(self, x):
        return tf.math.log(tf.abs(x[:, 0, 0])) - self.a * x[:, 0, 0] ** 2

    def sign(self, x):
        return tf.sign(tf.stop_gradient(x[:, 0, 0]))


def test_a_signed_wavefunction_with_a_node_runs_through_sampler_local_energy_and_sr():
    from distvmc import config
    from distvmc.comm import SingleProcess
    from distvmc.job import Job
    from distvmc.systems import build_system
    from distvmc.wavefunctions import Wavefunction

    cfg = config.load(None, ["system.dim=1", "potential.type=harmonic", "sampler.walkers=256",
                             "optimizer.lr=0.2", "optimizer.iterations=50",
                             "evaluation.samples=20000"])
    job = Job(cfg, SingleProcess(), build_system(cfg), quiet,
              wavefunction=lambda c, s, seed: Wavefunction([OddState(0.3)], (1, 1)))
    job.start_state(0)
    wf, obj = job.wf, job.driver.objective
    x = obj.sampler.x.numpy()
    sign, _ = wf(tf.constant(x))
    assert set(np.unique(sign.numpy())) == {-1.0, 1.0}  # walkers on both sides of the node
    job.driver.train(50)
    assert abs(float(wf.factors[0].a.numpy()) - 0.5) < 1e-6  # SR found the exact width
    out = obj.evaluate()
    assert abs(out["energy"] - 1.5) < 1e-9 and out["variance"] < 1e-12  # zero variance
    xs = obj.sampler.x.numpy()[:, 0, 0]
    assert (xs < 0).mean() == pytest.approx(0.5, abs=0.15)  # |psi|^2 is even: both lobes


def test_state_0_of_an_excited_state_run_is_trained_as_the_plain_run():
    from distvmc import config
    from distvmc.comm import SingleProcess
    from distvmc.job import Job
    from distvmc.systems import build_system

    base = [o for o in SAMPLING if not o.startswith("excited.states")]
    thetas, energies = [], []
    for states in (1, 2):
        cfg = config.load(None, base + [f"excited.states={states}"])
        job = Job(cfg, SingleProcess(), build_system(cfg), quiet)
        job.start_state(0)
        job.train()
        thetas.append(job.wf.get_flat())
        energies.append([r["energy"] for r in job.history])
    np.testing.assert_array_equal(thetas[0], thetas[1])
    assert energies[0] == energies[1] and len(energies[0]) == 14
