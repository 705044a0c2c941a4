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
