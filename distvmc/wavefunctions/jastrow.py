"""Pade pair Jastrow: log J = sum_{i<j} a_ij r_ij / (1 + b r_ij).

With a_ij the Kato cusp of the pair (system.pair_cusp: for electrons in 3D 1/2
for opposite spins, 1/4 for equal spins) the Jastrow cancels the 1/r_ij
divergence of the local energy at coalescence. b > 0 is trainable (stored as
its logarithm). Without a 1/r pair interaction the amplitude a is a trainable
scalar starting at 0. Positive and symmetric under exchange within a group.
"""

from __future__ import annotations

import numpy as np

from distvmc.lazytf import tf
from distvmc.schema import ConfigError, Float
from distvmc.systems.pairs import pair_distances
from distvmc.wavefunctions.base import Factor, register_factor
from distvmc.wavefunctions.capture import per_sample

FIELDS = {
    "cusp": Float(None, "pair cusp a in u(r) = a r / (1 + b r); null: each pair's Kato cusp "
                  "from its charges, masses and spins (3D electrons: 1/2 opposite, 1/4 equal "
                  "spins) under a 1/r pair interaction, else trainable from 0", optional=True),
    "b": Float(1.0, "initial Pade parameter b (trainable, kept positive)", min=0.0, open_min=True),
}


def _check(item: dict, c: dict, key: str) -> None:
    if c["system"]["particles"] < 2:
        raise ConfigError(f"{key}.type = 'jastrow': a pair Jastrow needs at least two "
                          f"particles (system.particles = {c['system']['particles']})")


@register_factor("jastrow", FIELDS, check=_check)
class PadeJastrow(Factor):
    def __init__(self, system, cfg, rng=None, dtype=None, name="jastrow"):
        dtype = dtype or tf.float64
        self.name = name
        if system.particles < 2:
            raise ValueError("a jastrow factor needs at least two particles")
        self.log_b = tf.Variable(np.log(cfg.b), dtype=dtype, name="log_b")
        if cfg.cusp is not None:
            self.a = tf.constant(cfg.cusp, dtype=dtype)
        elif system.pair_cusp is not None:
            self.a = tf.constant(system.pair_cusp, dtype=dtype)
        else:
            self.a = tf.Variable(0.0, dtype=dtype, name="a")

    def signed_log(self, x):
        """x: (W, N, D) -> (None, (W,))."""
        r = pair_distances(x)  # (W, P)
        a, b = per_sample(self.a, x, 1), tf.exp(per_sample(self.log_b, x, 1))
        return None, tf.reduce_sum(a * r / (1.0 + b * r), axis=1)

    def forward_laplacian(self, x):
        """log J as a FwdLap (:mod:`distvmc.forward_laplacian`): value (W, N, D) -> (W,).

        u(r) = a r / (1 + b r): u' = a q^2, u'' = -2 a b q^3 with q = 1 / (1 + b r)."""
        from distvmc import forward_laplacian as fl

        b = tf.exp(self.log_b)

        def per_pair(y):  # y = x_i - x_j: (W, P, D) -> (W, P)
            r = fl.norm(y)
            q = 1.0 / (1.0 + b * r.value)
            return fl.elementwise(r, self.a * r.value / (1.0 + b * r.value), self.a * q * q,
                                  -2.0 * self.a * b * q * q * q)

        return fl.per_item(x, fl.pair_mix(x.value.shape[1]), per_pair, pool=True)
