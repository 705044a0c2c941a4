"""Envelopes: the long-range decay of psi.

GaussianEnvelope: log psi = -alpha sum_i |x_i - c|^2 (confinement in traps).
ExpEnvelope: log psi = sum_i log sum_K exp(-a_K |r_i - R_K|) (atoms and molecules;
with a_K = Z_K the nuclear cusp is exact for electrons in atomic units).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from distvmc.systems.pairs import centre_distances


class GaussianEnvelope(tf.Module):
    def __init__(self, system, cfg, dtype, name="gaussian_envelope"):
        super().__init__(name=name)
        self.centre = tf.constant(system.centres[0], dtype=dtype)
        log_alpha = np.log(cfg.alpha)
        if cfg.trainable:
            self.log_alpha = tf.Variable(log_alpha, dtype=dtype, name="log_alpha")
        else:
            self.log_alpha = tf.constant(log_alpha, dtype=dtype)

    def log_abs(self, x):
        """x: (W, N, D) -> (W,)."""
        d = x - self.centre
        return -tf.exp(self.log_alpha) * tf.reduce_sum(d * d, axis=[1, 2])


class ExpEnvelope(tf.Module):
    def __init__(self, system, cfg, dtype, name="exp_envelope"):
        super().__init__(name=name)
        self.centres = np.asarray(system.centres, dtype=np.float64)
        k = len(self.centres)
        if cfg.decay is not None:
            a = np.full(k, cfg.decay)
        else:  # nuclear cusp 2 m Z / ((D - 1) hbar^2) for particle 0's mass
            m = 1.0 / (2.0 * system.kinetic_prefactor[0])  # m / hbar^2
            a = 2.0 * m * system.charges / max(system.dim - 1, 1)
        if cfg.trainable:
            self.log_decay = tf.Variable(np.log(a), dtype=dtype, name="log_decay")
        else:
            self.log_decay = tf.constant(np.log(a), dtype=dtype)

    def log_abs(self, x):
        """x: (W, N, D) -> (W,)."""
        r = centre_distances(x, self.centres)  # (W, N, K)
        a = tf.exp(self.log_decay)
        if len(self.centres) == 1:
            return -tf.reduce_sum(a[0] * r[..., 0], axis=1)
        return tf.reduce_sum(tf.reduce_logsumexp(-a * r, axis=-1), axis=1)
