"""Coulomb systems (atoms and molecules, clamped nuclei), in Hartree atomic units.

V = -sum_{i,K} Z_K / |r_i - R_K| + sum_{i<j} 1/|r_i - r_j| + sum_{K<L} Z_K Z_L / |R_K - R_L|
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from distvmc.systems.pairs import centre_distances, pair_distances


def nuclear_repulsion(nuclei: np.ndarray, charges: np.ndarray) -> float:
    """Constant nucleus-nucleus energy (Hartree) of clamped nuclei."""
    e = 0.0
    for k in range(len(charges)):
        for l in range(k + 1, len(charges)):
            e += charges[k] * charges[l] / np.linalg.norm(nuclei[k] - nuclei[l])
    return float(e)


def potential(nuclei: np.ndarray, charges: np.ndarray, electron_electron: bool, dtype):
    """V(x) for electrons x of shape (walkers, N, D); returns (walkers,) in Hartree."""
    z = tf.constant(charges, dtype=dtype)
    e_nn = nuclear_repulsion(nuclei, charges)

    def v(x):
        r_en = centre_distances(x, nuclei)  # (W, N, K)
        e = -tf.reduce_sum(z / r_en, axis=[1, 2])
        if electron_electron and x.shape[1] > 1:
            e = e + tf.reduce_sum(1.0 / pair_distances(x), axis=1)
        return e + e_nn

    return v
