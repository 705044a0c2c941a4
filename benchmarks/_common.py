"""Shared helpers for the benchmark scripts (figures printed, nothing asserted)."""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from distvmc import config  # noqa: E402
from distvmc.comm import SingleProcess  # noqa: E402
from distvmc.driver import Driver  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def build(path: str | None, overrides: list[str], comm=None) -> Driver:
    """The driver of state 0 of a config (its objective holds the sampler, the local
    energy and the log-derivatives)."""
    from distvmc.job import Job
    from distvmc.systems import build_system

    cfg = config.load(path, overrides)
    job = Job(cfg, comm or SingleProcess(), build_system(cfg), log=lambda *a, **k: None)
    job.start_state(0)
    return job.driver


def time_iterations(driver: Driver, n: int, warmup: int = 2) -> dict:
    """Run warmup + n optimization iterations; mean seconds per phase over the n."""
    driver.objective.prepare()
    for _ in range(warmup):
        driver.step()
    recs = []
    for _ in range(n):
        t0 = time.perf_counter()
        rec = driver.step()
        rec["wall"] = time.perf_counter() - t0
        recs.append(rec)
    keys = ["wall", "t_sample", "t_eloc", "t_optimizer", "t_jacobian", "t_overlap", "t_solve"]
    out = {k: float(np.mean([r.get(k, np.nan) for r in recs])) for k in keys}
    out["energy"] = recs[-1]["energy"]
    out["solve"] = recs[-1].get("solve")
    return out


def fmt_phases(t: dict) -> str:
    other = t["wall"] - sum(np.nan_to_num(t[k]) for k in ("t_sample", "t_eloc", "t_jacobian",
                                                           "t_overlap", "t_solve"))
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
