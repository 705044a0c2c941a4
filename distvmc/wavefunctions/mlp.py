"""Neural-network factors: an MLP on coordinates or distances, and DeepSets.

Both return a scalar log-amplitude per walker. Weights are explicit
``tf.Variable``s initialised from a NumPy generator (identical on every rank).
"""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from distvmc.systems.pairs import centre_distances, pair_distances

_ACT = {
    "tanh": tf.tanh,
    "softplus": tf.nn.softplus,
    "sigmoid": tf.sigmoid,
    "silu": tf.nn.silu,
    "gelu": tf.nn.gelu,
    "cos": tf.cos,
}


def _init(rng, n_in, n_out, scheme):
    std = {"glorot": np.sqrt(2.0 / (n_in + n_out)),
           "he": np.sqrt(2.0 / n_in),
           "normal": 1.0 / np.sqrt(n_in)}[scheme]
    return rng.standard_normal((n_in, n_out)) * std


class Dense(tf.Module):
    """y = x W + b with W of shape (n_in, n_out)."""

    def __init__(self, n_in, n_out, rng, dtype, scheme="glorot", scale=1.0, name=None):
        super().__init__(name=name)
        self.w = tf.Variable(_init(rng, n_in, n_out, scheme) * scale, dtype=dtype, name="w")
        self.b = tf.Variable(np.zeros(n_out), dtype=dtype, name="b")

    def __call__(self, x):
        return tf.matmul(x, self.w) + self.b


class Stack(tf.Module):
    """Dense layers with a nonlinearity between them (none after the last)."""

    def __init__(self, sizes, activation, rng, dtype, scheme, output_scale, name=None):
        super().__init__(name=name)
        n = len(sizes) - 1
        self.layers = [Dense(sizes[k], sizes[k + 1], rng, dtype, scheme,
                             output_scale if k == n - 1 else 1.0, name=f"dense{k}")
                       for k in range(n)]
        self.act = _ACT[activation]

    def __call__(self, h):
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        return self.layers[-1](h)


class MLP(tf.Module):
    """log psi = MLP(features(x)); optionally summed over particle permutations.

    features: ``coords`` flattens x (N*D inputs); ``distances`` uses |r_i - R_K|
    for every particle and centre plus |r_i - r_j| for every pair.
    """

    def __init__(self, system, cfg, rng, dtype, name="mlp"):
        super().__init__(name=name)
        self.inputs = cfg.inputs
        self.centres = np.asarray(system.centres, dtype=np.float64)
        n, d = system.particles, system.dim
        n_in = n * d if cfg.inputs == "coords" else n * len(self.centres) + n * (n - 1) // 2
        self.perms = (list(itertools.permutations(range(n))) if cfg.symmetrize
                      else [tuple(range(n))])
        self.net = Stack([n_in, *cfg.hidden, 1], cfg.activation, rng, dtype, cfg.init,
                         cfg.output_scale, name="net")

    def _features(self, x):
        n, d = x.shape[1], x.shape[2]
        if self.inputs == "coords":
            return tf.reshape(x, [-1, n * d])
        parts = [tf.reshape(centre_distances(x, self.centres), [-1, n * len(self.centres)])]
        if x.shape[1] > 1:
            parts.append(pair_distances(x))
        return tf.concat(parts, axis=1)

    def log_abs(self, x):
        """x: (W, N, D) -> (W,)."""
        if len(self.perms) == 1:
            return self.net(self._features(x))[:, 0]
        # All permutations in one batch: (n_perm * W, N, D).
        xp = tf.concat([tf.gather(x, list(p), axis=1) for p in self.perms], axis=0)
        out = self.net(self._features(xp))[:, 0]
        return tf.reduce_sum(tf.reshape(out, [len(self.perms), -1]), axis=0)


class DeepSets(tf.Module):
    """Permutation-invariant log psi = rho(sum_i phi(x_i)) for identical bosons."""

    def __init__(self, system, cfg, rng, dtype, name="deepsets"):
        super().__init__(name=name)
        d = system.dim
        self.phi = Stack([d, *cfg.phi], cfg.activation, rng, dtype, cfg.init, 1.0, name="phi")
        self.rho = Stack([cfg.phi[-1], *cfg.rho, 1], cfg.activation, rng, dtype, cfg.init,
                         cfg.output_scale, name="rho")
        self.act = _ACT[cfg.activation]

    def log_abs(self, x):
        """x: (W, N, D) -> (W,)."""
        n, d = x.shape[1], x.shape[2]
        h = self.act(self.phi(tf.reshape(x, [-1, d])))
        pooled = tf.reduce_sum(tf.reshape(h, [-1, n, h.shape[-1]]), axis=1)
        return self.rho(pooled)[:, 0]
