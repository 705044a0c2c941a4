"""Harmonic traps, optionally with a Coulomb pair interaction (quantum dots, Hooke's atom).

V = sum_i (1/2) m_i sum_d omega_d^2 x_{i,d}^2 + coupling * sum_{i<j} 1/|x_i - x_j|
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from distvmc.systems.pairs import pair_distances


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
