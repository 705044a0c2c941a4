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
