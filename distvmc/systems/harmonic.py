"""Harmonic traps, optionally with a Coulomb pair interaction (quantum dots, Hooke's atom).

V = sum_i (1/2) m_i sum_d omega_d^2 x_{i,d}^2 + coupling * sum_{i<j} 1/|x_i - x_j|
"""

from __future__ import annotations

import numpy as np

from distvmc.lazytf import tf
from distvmc.schema import Choice, ConfigError, Float, FloatList
from distvmc.systems.base import Potential, register_potential
from distvmc.systems.pairs import pair_distances

FIELDS = {
    "omega": FloatList(1.0, "trap frequency (one value, or one per dimension)",
                       positive=True, scalar_ok=True),
    "interaction": Choice("none", "pair interaction: none, or coulomb "
                          "(coupling/r_ij; quantum dots, Hooke's atom)", ["none", "coulomb"]),
    "coupling": Float(1.0, "strength of the pair interaction", min=0.0),
}


def potential(mass: np.ndarray, omega: np.ndarray, interaction: str, coupling: float, dtype):
    """V(x) for x of shape (walkers, N, D); returns (walkers,)."""
    m = tf.constant(mass[:, None], dtype=dtype)  # (N, 1)
    w2 = tf.constant(omega ** 2, dtype=dtype)  # (D,)

    def v(x):
        e = 0.5 * tf.reduce_sum(m * w2 * x * x, axis=[1, 2])
        if interaction == "coulomb" and coupling > 0 and x.shape[1] > 1:
            e = e + coupling * tf.reduce_sum(1.0 / pair_distances(x), axis=1)
        return e

    return v


def check(p: dict, c: dict, key: str) -> None:
    d = c["system"]["dim"]
    if isinstance(p["omega"], list) and len(p["omega"]) != d:
        raise ConfigError(f"{key}.omega has {len(p['omega'])} entries: must be one "
                          f"number or one per dimension ({d})")


def build(p, system, dtype, config_dir=None) -> Potential:
    d, n = system.dim, system.particles
    omega = np.broadcast_to(np.asarray(p.omega, dtype=np.float64), (d,)).copy()
    pairs = p.interaction == "coulomb" and p.coupling > 0
    return Potential(potential(system.masses, omega, p.interaction, p.coupling, dtype),
                     centres=np.zeros((1, d)),
                     pair_coupling=np.full(n * (n - 1) // 2, p.coupling) if pairs else None,
                     trap_omega=omega)


register_potential("harmonic", FIELDS, build, check=check)
