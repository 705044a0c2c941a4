"""Coulomb systems (atoms and molecules, clamped nuclei), in Hartree atomic units.

V = sum_{i,K} q_i Z_K / |r_i - R_K| + sum_{i<j} q_i q_j / |r_i - r_j| + sum_{K<L} Z_K Z_L / |R_K - R_L|

with particle charges q_i from ``system.species`` (-1 for electrons, giving the
familiar -Z_K / r_iK and +1 / r_ij).
"""

from __future__ import annotations

import numpy as np

from distvmc.lazytf import tf
from distvmc.schema import Bool, ConfigError, FloatList, Matrix
from distvmc.systems.base import Potential, register_potential
from distvmc.systems.pairs import centre_distances, pair_distances, pair_indices

FIELDS = {
    "nuclei": Matrix([[0.0, 0.0, 0.0]], "clamped nuclear positions, one [D] list each"),
    "charges": FloatList([1.0], "nuclear charges Z, one per nucleus", positive=True, min_len=1),
    "electron_electron": Bool(True, "include the q_i q_j / r_ij interaction between particles"),
}


def nuclear_repulsion(nuclei: np.ndarray, charges: np.ndarray) -> float:
    """Constant nucleus-nucleus energy (Hartree) of clamped nuclei."""
    e = 0.0
    for k in range(len(charges)):
        for l in range(k + 1, len(charges)):
            e += charges[k] * charges[l] / np.linalg.norm(nuclei[k] - nuclei[l])
    return float(e)


def potential(nuclei: np.ndarray, charges: np.ndarray, electron_electron: bool, dtype,
              particle_charges: np.ndarray | None = None):
    """V(x) for particles x of shape (walkers, N, D); returns (walkers,) in Hartree.

    particle_charges: q_i, shape (N,); None means electrons (q_i = -1).
    """
    e_nn = nuclear_repulsion(nuclei, charges)
    zq = None if particle_charges is None else np.outer(particle_charges, charges)  # (N, K)

    def v(x):
        r_en = centre_distances(x, nuclei)  # (W, N, K)
        if zq is None:
            e = -tf.reduce_sum(tf.constant(charges, dtype=x.dtype) / r_en, axis=[1, 2])
        else:
            e = tf.reduce_sum(tf.constant(zq, dtype=x.dtype) / r_en, axis=[1, 2])
        n = x.shape[1]
        if electron_electron and n > 1:
            if particle_charges is None:
                e = e + tf.reduce_sum(1.0 / pair_distances(x), axis=1)
            else:
                i, j = pair_indices(n)
                qq = tf.constant(particle_charges[i] * particle_charges[j], dtype=x.dtype)
                e = e + tf.reduce_sum(qq / pair_distances(x), axis=1)
        return e + e_nn

    return v


def check(p: dict, c: dict, key: str) -> None:
    if len(p["nuclei"]) != len(p["charges"]):
        raise ConfigError(f"{key}.charges has {len(p['charges'])} entries but "
                          f"{key}.nuclei has {len(p['nuclei'])}: need one charge per nucleus")
    if len(p["nuclei"][0]) != c["system"]["dim"]:
        raise ConfigError(f"{key}.nuclei: positions have {len(p['nuclei'][0])} "
                          f"coordinates but system.dim = {c['system']['dim']}")


def build(p, system, dtype, config_dir=None) -> Potential:
    nuclei = np.asarray(p.nuclei, dtype=np.float64)
    charges = np.asarray(p.charges, dtype=np.float64)
    q = np.asarray(system.particle_charges, dtype=np.float64)
    i, j = pair_indices(system.particles)
    return Potential(potential(nuclei, charges, p.electron_electron, dtype, q),
                     centres=nuclei, nuclear_charges=charges,
                     pair_coupling=q[i] * q[j] if p.electron_electron else None)


register_potential("coulomb", FIELDS, build, electrons=True, check=check)
