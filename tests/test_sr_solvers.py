"""The SR solvers in real runs: cg reaches dense's energy; no GPU means no run when one is required."""

from __future__ import annotations

import numpy as np
import pytest

from distvmc import config

from conftest import CONFIGS, cli, ground_state

HELIUM = [
    "wavefunction.factors.2.hidden=[16, 16]",
    "sampler.walkers=512", "sampler.thermalization=100", "sampler.sweeps_per_sample=5",
    "optimizer.lr=0.1", "optimizer.lr_decay=0",
]


@pytest.mark.slow
def test_helium_with_cg_reaches_the_dense_energy_within_error_bars():
    out = {}
    for solver in ("dense", "cg"):
        cfg = config.load(f"{CONFIGS}/helium.yaml", HELIUM + [f"optimizer.solver={solver}"])
        job = ground_state(cfg, 40)
        solves = [r["solve"] for r in job.history if "solve" in r]
        if solver == "cg":  # every iteration solved to cg_tol, warm-started after the first
            assert all(s.startswith("cg(") for s in solves), solves
        out[solver] = job.driver.objective.evaluate(samples=40000)
    d, c = out["dense"], out["cg"]
    err = np.hypot(d["energy_err"], c["energy_err"])
    assert abs(c["energy"] - d["energy"]) < 4 * err, (d["energy"], c["energy"], err)
    assert c["energy"] < -2.85  # and it is a real optimization (HF-like product: -2.75)


def test_require_gpu_on_a_cpu_machine_is_one_line_and_exit_code_2(tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    p = cli("run", "distributed.require_gpu=true", "optimizer.iterations=1",
            "--out", str(tmp_path / "run"))
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip().splitlines()
    assert err[-1].startswith("distvmc: error: distributed.require_gpu = true but rank 0/1: "
                              "CPU (no GPU visible): "), err
    assert "pip install" in err[-1]
    assert not (tmp_path / "run" / "summary.json").exists()


def test_every_rank_names_its_device():
    from distvmc.comm import SingleProcess, describe_device

    line = describe_device(SingleProcess())
    assert line.startswith("rank 0/1: ")
    assert line.endswith("CPU (no GPU visible)") or line.startswith("rank 0/1: GPU ")


def test_a_cg_run_resumed_from_a_checkpoint_is_bitwise_the_uninterrupted_run(tmp_path):
    # CG is warm-started from the previous delta: that delta is optimizer state, so a run
    # stopped after 4 iterations and resumed to 8 must repeat the 8-iteration run bit for bit.
    from distvmc.io import read_history

    base = ["wavefunction.factors.0.hidden=[8, 8]", "sampler.walkers=64",
            "sampler.thermalization=20", "sampler.sweeps_per_sample=3",
            "evaluation.samples=640", "evaluation.thermalization=5", "optimizer.solver=cg",
            "optimizer.cg_tol=1e-3", "checkpoint.every=0"]
    full, part = tmp_path / "full", tmp_path / "part"
    for args in (["optimizer.iterations=8", "--out", str(full)],
                 ["optimizer.iterations=4", "--out", str(part)],
                 ["--resume", str(part), "optimizer.iterations=8"]):
        r = cli("run", *base, *args, timeout=300) if args[0] != "--resume" else \
            cli("run", *args, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_history(str(full)), read_history(str(part))
    assert len(a) == len(b) == 8
    assert all(str(row["solve"]).startswith("cg(") for row in a)
    for ra, rb in zip(a, b):
        assert ra["energy"] == rb["energy"] and ra["update_norm"] == rb["update_norm"], (ra, rb)


@pytest.mark.parametrize("variant", [["optimizer.o_matrix=recompute"],
                                     ["optimizer.linear_algebra=device"]])
def test_recomputed_or_device_o_follows_the_stored_host_trajectory(variant):
    # The same run with O never formed (network passes per S v), or with O and the CG
    # vectors as device tensors, repeats the NumPy run: same energies, same updates, to
    # rounding (the walkers only diverge if an acceptance sits on a rounding boundary).
    base = ["wavefunction.factors.2.hidden=[16, 16]", "sampler.walkers=256",
            "sampler.thermalization=50", "sampler.sweeps_per_sample=3",
            "optimizer.solver=cg", "optimizer.cg_tol=1e-10", "optimizer.cg_maxiter=500"]
    runs = {}
    for name, extra in (("stored", []), ("variant", variant)):
        cfg = config.load(f"{CONFIGS}/helium.yaml", base + extra)
        job = ground_state(cfg, 6)
        runs[name] = job.history
        obj = job.driver.objective
        used = (obj.o_products is not None, obj.on_device)  # the variant really ran
        assert used == ((False, False) if name == "stored" else
                        ((True, False) if "recompute" in variant[0] else (False, True)))
    for a, b in zip(runs["stored"], runs["variant"]):
        assert abs(a["energy"] - b["energy"]) <= 1e-9 * abs(a["energy"]), (a, b)
        assert abs(a["update_norm"] - b["update_norm"]) <= 1e-7 * a["update_norm"], (a, b)
    assert len(runs["variant"]) == 6
