"""Adam on the energy gradient g = 2 <O E> (centred), for comparison with SR."""

from __future__ import annotations

import numpy as np

from distvmc.optimizers.sr import SR


class Adam(SR):
    """Adam; reuses SR's distributed moments and keeps (m, v, t) as state."""

    def __init__(self, wavefunction, cfg, comm, chunk_size: int = 16384):
        super().__init__(wavefunction, cfg, comm, chunk_size)
        p = wavefunction.n_parameters
        self.m = np.zeros(p)
        self.v = np.zeros(p)
        self.t = 0

    def state(self) -> dict:
        return {"m": self.m.copy(), "v": self.v.copy(), "t": np.array(self.t)}

    def set_state(self, state: dict) -> None:
        self.m = np.array(state["m"], dtype=np.float64)
        self.v = np.array(state["v"], dtype=np.float64)
        self.t = int(state["t"])

    def direction(self, x, e):
        mo = self.moments(x, e)
        (f_sum,) = self.comm.allreduce_many([mo["oc"].T @ mo["ec"]])
        g = 2.0 * f_sum / mo["n"]
        c = self.cfg
        self.t += 1
        self.m = c.beta1 * self.m + (1 - c.beta1) * g
        self.v = c.beta2 * self.v + (1 - c.beta2) * g * g
        mhat = self.m / (1 - c.beta1 ** self.t)
        vhat = self.v / (1 - c.beta2 ** self.t)
        return mhat / (np.sqrt(vhat) + c.epsilon), {"solver": "adam", "solve": ""}
