"""Envelopes: the long-range decay of psi.

GaussianEnvelope: log psi = -alpha sum_i |x_i - c|^2 (confinement in traps).
ExpEnvelope: log psi = sum_i log sum_K exp(-a_K |r_i - R_K|) (atoms and molecules;
with a_K = Z_K the nuclear cusp is exact for electrons in atomic units).
Both are positive and symmetric under particle exchange.
"""

from __future__ import annotations

import numpy as np

from distvmc.lazytf import tf
from distvmc.schema import Bool, ConfigError, Float
from distvmc.systems.pairs import centre_distances
from distvmc.wavefunctions.base import Factor, register_factor
from distvmc.wavefunctions.capture import per_sample

GAUSSIAN_FIELDS = {
    "alpha": Float(0.5, "initial width parameter: log psi = -alpha * sum |x|^2", min=0.0, open_min=True),
    "trainable": Bool(True, "optimize alpha"),
}

EXP_FIELDS = {
    "decay": Float(None, "initial decay a in exp(-a r) per nucleus; null: the nuclear "
                   "charge (nuclear cusp)", optional=True, min=0.0, open_min=True),
    "trainable": Bool(True, "optimize the decay (false keeps the exact nuclear cusp)"),
}


def _check_exp(item: dict, c: dict, key: str) -> None:
    if c["potential"]["type"] != "coulomb" and item["decay"] is None:
        raise ConfigError(f"{key}.decay: required unless the potential "
                          "is coulomb (where it defaults to the nuclear charge)")


@register_factor("gaussian_envelope", GAUSSIAN_FIELDS)
class GaussianEnvelope(Factor):
    def __init__(self, system, cfg, rng=None, dtype=None, name="gaussian_envelope"):
        dtype = dtype or tf.float64
        self.name = name
        self.centre = tf.constant(system.centres[0], dtype=dtype)
        log_alpha = np.log(cfg.alpha)
        if cfg.trainable:
            self.log_alpha = tf.Variable(log_alpha, dtype=dtype, name="log_alpha")
        else:
            self.log_alpha = tf.constant(log_alpha, dtype=dtype)

    def signed_log(self, x):
        """x: (W, N, D) -> (None, (W,))."""
        d = x - self.centre
        return None, -tf.exp(per_sample(self.log_alpha, x)) * tf.reduce_sum(d * d, axis=[1, 2])

    def forward_laplacian(self, x):
        """log psi as a FwdLap (:mod:`distvmc.forward_laplacian`): value (W, N, D) -> (W,)."""
        from distvmc import forward_laplacian as fl

        d2 = fl.square(fl.shift(x, -self.centre))
        return fl.scale(fl.reduce_sum(fl.reduce_sum(d2, axis=-1), axis=-1), -tf.exp(self.log_alpha))


@register_factor("exp_envelope", EXP_FIELDS, check=_check_exp)
class ExpEnvelope(Factor):
    def __init__(self, system, cfg, rng=None, dtype=None, name="exp_envelope"):
        dtype = dtype or tf.float64
        self.name = name
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

    def signed_log(self, x):
        """x: (W, N, D) -> (None, (W,))."""
        r = centre_distances(x, self.centres)  # (W, N, K)
        a = tf.exp(per_sample(self.log_decay, x, 1))  # (K,), or (W, 1, K) for O
        if len(self.centres) == 1:
            return None, -tf.reduce_sum(a[..., 0] * r[..., 0], axis=1)
        return None, tf.reduce_sum(tf.reduce_logsumexp(-a * r, axis=-1), axis=1)

    def forward_laplacian(self, x):
        """log psi as a FwdLap (:mod:`distvmc.forward_laplacian`): value (W, N, D) -> (W,)."""
        from distvmc import forward_laplacian as fl

        r = fl.centre_distances(x, self.centres)  # (W, N, K)
        a = tf.exp(self.log_decay)
        if len(self.centres) == 1:
            return fl.scale(fl.reduce_sum(fl.linear(r, lambda t: t[..., 0]), axis=-1), -a[0])
        return fl.reduce_sum(fl.logsumexp(fl.scale(r, -a), axis=-1), axis=-1)
