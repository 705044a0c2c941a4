"""Pair geometry shared by potentials and wavefunctions."""

from __future__ import annotations

import numpy as np
from distvmc.lazytf import tf


def pair_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j) of all pairs i < j, each of shape (n(n-1)/2,)."""
    i, j = np.triu_indices(n, k=1)
    return i, j


def pair_distances(x: tf.Tensor) -> tf.Tensor:
    """|x_i - x_j| for all pairs i < j. x: (walkers, N, D) -> (walkers, N(N-1)/2)."""
    i, j = pair_indices(x.shape[1])
    diff = tf.gather(x, i, axis=1) - tf.gather(x, j, axis=1)
    return tf.norm(diff, axis=-1)


def centre_distances(x: tf.Tensor, centres: np.ndarray) -> tf.Tensor:
    """|x_i - R_K| for every particle and centre. x: (walkers, N, D) -> (walkers, N, K)."""
    r = tf.constant(centres, dtype=x.dtype)  # (K, D)
    return tf.norm(x[:, :, None, :] - r[None, None], axis=-1)
