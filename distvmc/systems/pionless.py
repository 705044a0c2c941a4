"""Light nuclei (A <= 4) at leading order in pionless EFT, Gaussian regulator (MeV, fm).

    V = sum_{i<j} (C1 + alpha C2) exp(-Lambda^2 r_ij^2 / 4)
      + D0 sum_{i<j<k} sum_cyc exp(-Lambda^2 (r_ij^2 + r_ik^2) / 4)

The cyclic sum runs over the three choices of the apex nucleon of the triplet:
g_ij g_ik + g_ji g_jk + g_ki g_kj with g_ij = exp(-Lambda^2 r_ij^2 / 4).
alpha is the value of sigma_i . sigma_j in the spin channel a spin-free
(spatially symmetric) ansatz describes: +1 for the deuteron (S = 1), -1 for
the spin-isospin-saturated s-shell of A = 3, 4 (null: chosen from A; the
resolved config shows the value used). ``cutoff`` (Lambda in fm^-1) selects
the published constants (../shared/REFERENCE.md section 2); explicit C1, C2,
D0 override them. No Coulomb at this order. Translation invariant: the
sampler re-centres the walkers (``sampler.recentre``).

Use with ``system.units: nuclear`` (hbar = 197.327 MeV fm, nucleon mass
938.95 MeV): energies are then in MeV, lengths in fm.
"""

from __future__ import annotations

import itertools

import numpy as np

from distvmc.lazytf import tf
from distvmc.schema import Choice, ConfigError, Float
from distvmc.systems.base import Potential, register_potential
from distvmc.systems.pairs import pair_indices

# Lambda (fm^-1) -> (C1, C2, D0) in MeV.
CONSTANTS = {
    2: (-133.3431, -9.0212, 68.4883),
    4: (-487.6128, -17.5515, 677.7989),
    6: (-1064.5010, -26.0830, 2652.651),
}

FIELDS = {
    "cutoff": Choice(4, "regulator Lambda in fm^-1; selects the published C1, C2, D0 "
                     "(2, 4 or 6)", [2, 4, 6]),
    "C1": Float(None, "spin-independent two-body constant, MeV (null: from cutoff)", optional=True),
    "C2": Float(None, "spin-spin two-body constant, MeV (null: from cutoff)", optional=True),
    "D0": Float(None, "three-body constant, MeV (null: from cutoff)", optional=True),
    "alpha": Float(None, "spin channel value of sigma_i.sigma_j (null: +1 for A = 2, -1 for "
                   "A = 3, 4; the resolved config shows it)", optional=True),
}


def default_alpha(a: int) -> float:
    """sigma_i . sigma_j for a spin-free ansatz: +1 for A = 2 (S = 1), -1 for A = 3, 4."""
    return 1.0 if a == 2 else -1.0


def constants(p) -> tuple[float, float, float, float, float]:
    """(Lambda, C1, C2, D0, alpha) of a validated section (dict-like with the FIELDS)."""
    c1, c2, d0 = CONSTANTS[int(p["cutoff"])]
    c1 = c1 if p["C1"] is None else p["C1"]
    c2 = c2 if p["C2"] is None else p["C2"]
    d0 = d0 if p["D0"] is None else p["D0"]
    return float(p["cutoff"]), c1, c2, d0, p["alpha"]


def triplet_pairs(n: int) -> np.ndarray:
    """For every triplet i < j < k, the indices of its pairs (ij, ik, jk) into the
    np.triu_indices pair order; shape (n(n-1)(n-2)/6, 3)."""
    i, j = pair_indices(n)
    index = {(a, b): p for p, (a, b) in enumerate(zip(i.tolist(), j.tolist()))}
    return np.array([[index[(a, b)], index[(a, c)], index[(b, c)]]
                     for a, b, c in itertools.combinations(range(n), 3)], dtype=np.int64).reshape(-1, 3)


def potential(n: int, lam: float, c1: float, c2: float, d0: float, alpha: float):
    """V(x) for x of shape (walkers, A, 3) in fm; returns (walkers,) in MeV.

    Pair and triplet index arrays are built once here; the returned function has
    no Python loop over pairs or triplets.
    """
    i, j = pair_indices(n)
    trip = triplet_pairs(n)
    a2 = lam * lam / 4.0

    def v(x):
        diff = tf.gather(x, i, axis=1) - tf.gather(x, j, axis=1)  # (W, P, 3)
        g = tf.exp(-a2 * tf.reduce_sum(diff * diff, axis=-1))  # (W, P)
        e = (c1 + alpha * c2) * tf.reduce_sum(g, axis=1)
        if len(trip):
            gij, gik, gjk = (tf.gather(g, trip[:, k], axis=1) for k in range(3))  # (W, T)
            e = e + d0 * tf.reduce_sum(gij * gik + gij * gjk + gik * gjk, axis=1)
        return e

    return v


def check(p: dict, c: dict, key: str) -> None:
    """Needs 3D and at least two nucleons; fills in alpha from A when null."""
    s = c["system"]
    if s["dim"] != 3:
        raise ConfigError(f"{key}.type = 'pionless': nuclei are three-dimensional "
                          f"(system.dim = {s['dim']}); set system.dim: 3")
    if s["particles"] < 2:
        raise ConfigError(f"{key}.type = 'pionless': needs at least two nucleons "
                          f"(system.particles = {s['particles']})")
    if p["alpha"] is None:
        p["alpha"] = default_alpha(s["particles"])


def build(p, system, dtype, config_dir=None) -> Potential:
    lam, c1, c2, d0, alpha = constants(p)
    alpha = default_alpha(system.particles) if alpha is None else alpha
    return Potential(potential(system.particles, lam, c1, c2, d0, alpha),
                     centres=np.zeros((1, system.dim)))


register_potential("pionless", FIELDS, build, check=check, translation_invariant=True,
                   doc="LO pionless EFT for light nuclei (MeV, fm)")
