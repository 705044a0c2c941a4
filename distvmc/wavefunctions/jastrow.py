"""Pade pair Jastrow: log J = sum_{i<j} a_ij r_ij / (1 + b r_ij).

With a_ij the Kato cusp of the pair (1/2 for electrons in 3D) the Jastrow
cancels the 1/r_ij divergence of the local energy at coalescence. b > 0 is
trainable (stored as its logarithm). Without a Coulomb pair interaction the
amplitude a is a trainable scalar starting at 0.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from distvmc.systems.pairs import pair_distances


class PadeJastrow(tf.Module):
    def __init__(self, system, cfg, dtype, name="jastrow"):
        super().__init__(name=name)
        if system.particles < 2:
            raise ValueError("a jastrow factor needs at least two particles")
        self.log_b = tf.Variable(np.log(cfg.b), dtype=dtype, name="log_b")
        if cfg.cusp is not None:
            self.a = tf.constant(cfg.cusp, dtype=dtype)
        elif system.pair_cusp is not None:
            self.a = tf.constant(system.pair_cusp, dtype=dtype)
        else:
            self.a = tf.Variable(0.0, dtype=dtype, name="a")

    def log_abs(self, x):
        """x: (W, N, D) -> (W,)."""
        r = pair_distances(x)  # (W, P)
        return tf.reduce_sum(self.a * r / (1.0 + tf.exp(self.log_b) * r), axis=1)
