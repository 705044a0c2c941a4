"""Shared helpers for the benchmark scripts (figures printed, nothing asserted)."""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from distvmc import config  # noqa: E402
from distvmc.driver import VMC  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def build(path: str | None, overrides: list[str]) -> VMC:
    return VMC(config.load(path, overrides), log=lambda *a, **k: None)


def time_iterations(vmc: VMC, n: int, warmup: int = 2) -> dict:
    """Run warmup + n optimization iterations; mean seconds per phase over the n."""
    vmc.thermalize()
    for _ in range(warmup):
        vmc.step()
    recs = []
    for _ in range(n):
        t0 = time.perf_counter()
        rec = vmc.step()
        rec["wall"] = time.perf_counter() - t0
        recs.append(rec)
    keys = ["wall", "t_sample", "t_eloc", "t_optimizer", "t_jacobian", "t_overlap", "t_solve"]
    out = {k: float(np.mean([r.get(k, np.nan) for r in recs])) for k in keys}
    out["energy"] = recs[-1]["energy"]
    out["solve"] = recs[-1].get("solve")
    return out


def fmt_phases(t: dict) -> str:
    other = t["t_optimizer"] - t["t_jacobian"] - t["t_overlap"] - t["t_solve"]
    return (f"{t['wall']:.3f} s/iteration  [sampling {t['t_sample']:.3f}, local energy "
            f"{t['t_eloc']:.3f}, Jacobian {t['t_jacobian']:.3f}, S/F {t['t_overlap']:.3f}, "
            f"solve {t['t_solve']:.3f}, other {other:.3f}]")


def best_of(fn, repeat: int = 5) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)
