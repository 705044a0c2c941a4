"""Shared test helpers."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def cli(*args, cwd=None, timeout=600, env=None):
    """Run ``python -m distvmc.cli ARGS`` and return the CompletedProcess."""
    import subprocess

    e = dict(os.environ)
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "distvmc.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=e)


def quiet(*a, **k):
    pass


def ground_state(cfg, iterations: int, comm=None):
    """A Job (distvmc.job) with state 0 trained for ``iterations`` iterations, in process."""
    from distvmc.comm import SingleProcess
    from distvmc.job import Job
    from distvmc.systems import build_system

    job = Job(cfg, comm or SingleProcess(), build_system(cfg), log=quiet)
    job.start_state(0)
    job.driver.train(iterations)
    return job
