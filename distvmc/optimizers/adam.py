"""Adam on the energy gradient g = 2 F (F = <O E> + extra, or an explicit force)."""

from __future__ import annotations

import time

import numpy as np

from distvmc.optimizers.sr import Gradient, force


class Adam:
    """Adam; its state (m, v, t) is part of every snapshot and checkpoint."""

    needs_metric = False

    def __init__(self, cfg, comm, n_parameters: int):
        self.cfg = cfg
        self.comm = comm
        self.m = np.zeros(n_parameters)
        self.v = np.zeros(n_parameters)
        self.t = 0
        self.timings: dict[str, float] = {}

    def state(self) -> dict:
        return {"m": self.m.copy(), "v": self.v.copy(), "t": np.array(self.t)}

    def set_state(self, state: dict) -> None:
        self.m = np.array(state["m"], dtype=np.float64)
        self.v = np.array(state["v"], dtype=np.float64)
        self.t = int(state["t"])

    def direction(self, g: Gradient, shift: float = 0.0) -> tuple[np.ndarray, dict]:
        t0 = time.perf_counter()
        grad = 2.0 * force(g, self.comm)
        c = self.cfg
        self.t += 1
        self.m = c.beta1 * self.m + (1 - c.beta1) * grad
        self.v = c.beta2 * self.v + (1 - c.beta2) * grad * grad
        mhat = self.m / (1 - c.beta1 ** self.t)
        vhat = self.v / (1 - c.beta2 ** self.t)
        self.timings = {"allreduce": time.perf_counter() - t0}
        return mhat / (np.sqrt(vhat) + c.epsilon), {"solver": "adam", "solve": "adam"}
