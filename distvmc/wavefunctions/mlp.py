"""Neural-network factors: an MLP on coordinates or distances, and DeepSets.

Both return a scalar log-amplitude per walker (positive factors; ``mlp`` with
``signed: true`` is :class:`~distvmc.wavefunctions.signed.SignedMLP`). Weights
are explicit ``tf.Variable``s initialised from a NumPy generator (identical on
every rank). Neither is antisymmetric: fermion groups need a determinant.
"""

from __future__ import annotations

import itertools

import numpy as np

from distvmc.lazytf import tf
from distvmc.schema import Bool, Choice, ConfigError, Float, IntList
from distvmc.systems.pairs import centre_distances, pair_distances
from distvmc.wavefunctions.base import Factor, Module, register_factor
from distvmc.wavefunctions.capture import linear

ACTIVATIONS = ["tanh", "softplus", "sigmoid", "silu", "gelu", "cos"]
INITS = ["glorot", "he", "normal"]

MLP_FIELDS = {
    "hidden": IntList([16, 24], "hidden layer widths"),
    "activation": Choice("tanh", "hidden-layer nonlinearity", ACTIVATIONS),
    "inputs": Choice("coords", "coords: raw coordinates (N*D inputs); distances: "
                     "particle-centre distances and pair distances (rotation invariant)",
                     ["coords", "distances"]),
    "symmetrize": Bool(False, "sum the network over all particle permutations "
                       "(bosonic symmetry; at most 4 particles, use deepsets beyond)"),
    "output_scale": Float(0.1, "scale of the last layer's initial weights", min=0.0),
    "init": Choice("glorot", "weight initialisation", INITS),
    "signed": Bool(False, "the network output f is the amplitude itself: log|f| and "
                   "sign(f), so psi can have nodes (excited states)"),
}

DEEPSETS_FIELDS = {
    "phi": IntList([32, 32], "per-particle network widths (last one is the latent size)"),
    "rho": IntList([32], "hidden widths of the network on the pooled latent vector"),
    "activation": Choice("tanh", "nonlinearity", ACTIVATIONS),
    "output_scale": Float(0.1, "scale of the last layer's initial weights", min=0.0),
    "init": Choice("glorot", "weight initialisation", INITS),
}


def activation(name: str):
    """The TensorFlow function of an activation name (one of ACTIVATIONS)."""
    return {"tanh": tf.tanh, "softplus": tf.nn.softplus, "sigmoid": tf.sigmoid,
            "silu": tf.nn.silu, "gelu": tf.nn.gelu, "cos": tf.cos}[name]


def _init(rng, n_in, n_out, scheme):
    std = {"glorot": np.sqrt(2.0 / (n_in + n_out)),
           "he": np.sqrt(2.0 / n_in),
           "normal": 1.0 / np.sqrt(n_in)}[scheme]
    return rng.standard_normal((n_in, n_out)) * std


class Dense(Module):
    """y = x W + b with W of shape (n_in, n_out), through :func:`~distvmc.wavefunctions.capture.linear`
    (per-sample weight gradients for the O matrix)."""

    def __init__(self, n_in, n_out, rng, dtype, scheme="glorot", scale=1.0, name=None):
        self.name = name
        self.w = tf.Variable(_init(rng, n_in, n_out, scheme) * scale, dtype=dtype, name="w")
        self.b = tf.Variable(np.zeros(n_out), dtype=dtype, name="b")

    def __call__(self, x):
        return linear(x, self.w, self.b)

    def forward_laplacian(self, h):
        """The layer on a :class:`~distvmc.forward_laplacian.FwdLap` (last axis n_in -> n_out)."""
        from distvmc import forward_laplacian as fl

        return fl.dense(h, self.w, self.b)


class Stack(Module):
    """Dense layers with a nonlinearity between them (none after the last)."""

    def __init__(self, sizes, act, rng, dtype, scheme, output_scale, name=None):
        self.name = name
        n = len(sizes) - 1
        self.layers = [Dense(sizes[k], sizes[k + 1], rng, dtype, scheme,
                             output_scale if k == n - 1 else 1.0, name=f"dense{k}")
                       for k in range(n)]
        self.act = activation(act)
        self.act_name = act

    def __call__(self, h):
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        return self.layers[-1](h)

    def forward_laplacian(self, h):
        """The stack on a :class:`~distvmc.forward_laplacian.FwdLap`, value (W, ..., sizes[0])."""
        from distvmc import forward_laplacian as fl

        for layer in self.layers[:-1]:
            h = fl.activation(layer.forward_laplacian(h), self.act_name)
        return self.layers[-1].forward_laplacian(h)


def _check_mlp(item: dict, c: dict, key: str) -> None:
    n = c["system"]["particles"]
    if item["symmetrize"] and n > 4:
        raise ConfigError(f"{key}.symmetrize: {n} particles means "
                          f"{n}! permutations; use a deepsets factor beyond 4 particles")


def build_mlp(system, cfg, rng, dtype, name="mlp"):
    """An :class:`MLP`, or a :class:`~distvmc.wavefunctions.signed.SignedMLP` with ``signed``."""
    from distvmc.wavefunctions.signed import SignedMLP

    return (SignedMLP if cfg.signed else MLP)(system, cfg, rng, dtype, name=name)


class MLP(Factor):
    """log psi = MLP(features(x)); optionally summed over particle permutations.

    features: ``coords`` flattens x (N*D inputs); ``distances`` uses |r_i - R_K|
    for every particle and centre plus |r_i - r_j| for every pair.
    """

    def __init__(self, system, cfg, rng, dtype, name="mlp"):
        self.name = name
        self.inputs = cfg.inputs
        self.centres = np.asarray(system.centres, dtype=np.float64)
        n, d = system.particles, system.dim
        n_in = n * d if cfg.inputs == "coords" else n * len(self.centres) + n * (n - 1) // 2
        self.perms = (list(itertools.permutations(range(n))) if cfg.symmetrize
                      else [tuple(range(n))])
        self.net = Stack([n_in, *cfg.hidden, 1], cfg.activation, rng, dtype, cfg.init,
                         cfg.output_scale, name="net")
        self._columns = np.array([self._feature_columns(p, n, d) for p in self.perms])

    def _feature_columns(self, perm, n, d) -> np.ndarray:
        """Column c of features(x permuted by perm) is column out[c] of features(x).

        tf.gather(x, perm, axis=1) puts particle perm[i] at i: its coordinates,
        centre distances and pair distances are those of x, reordered."""
        if self.inputs == "coords":
            return np.array([perm[i] * d + e for i in range(n) for e in range(d)])
        k = len(self.centres)
        cols = [perm[i] * k + c for i in range(n) for c in range(k)]
        pair = {ij: n * k + q for q, ij in enumerate(zip(*np.triu_indices(n, k=1)))}
        cols += [pair[tuple(sorted((perm[i], perm[j])))] for i, j in zip(*np.triu_indices(n, k=1))]
        return np.array(cols)

    def _features(self, x):
        n, d = x.shape[1], x.shape[2]
        if self.inputs == "coords":
            return tf.reshape(x, [-1, n * d])
        parts = [tf.reshape(centre_distances(x, self.centres), [-1, n * len(self.centres)])]
        if x.shape[1] > 1:
            parts.append(pair_distances(x))
        return tf.concat(parts, axis=1)

    def network(self, x):
        """The network output, summed over the permutations; x: (W, N, D) -> (W,)."""
        if len(self.perms) == 1:
            return self.net(self._features(x))[:, 0]
        # All permutations in one batch, sample-major (walker w's permutations are rows
        # w * n_perm ... w * n_perm + n_perm - 1), as LogDerivatives' per-sample capture needs.
        n, d = x.shape[1], x.shape[2]
        xp = tf.reshape(tf.stack([tf.gather(x, list(p), axis=1) for p in self.perms], axis=1),
                        [-1, n, d])  # (W * n_perm, N, D)
        out = self.net(self._features(xp))[:, 0]
        return tf.reduce_sum(tf.reshape(out, [-1, len(self.perms)]), axis=1)

    def signed_log(self, x):
        """x: (W, N, D) -> (None, log psi (W,))."""
        return None, self.network(x)

    def _features_forward(self, x):
        from distvmc import forward_laplacian as fl

        n, d = x.value.shape[1], x.value.shape[2]
        if self.inputs == "coords":
            return fl.reshape(x, [n * d])
        parts = [fl.reshape(fl.centre_distances(x, self.centres), [n * len(self.centres)])]
        if n > 1:
            parts.append(fl.pair_distances(x))
        return fl.concat(parts, axis=-1)

    def network_forward(self, x):
        """:meth:`network` on a FwdLap of the coordinates: value (W, N, D) -> (W,).

        The permutations permute the features' columns (:meth:`_feature_columns`), so
        the features and their derivatives are computed once."""
        from distvmc import forward_laplacian as fl

        h = self._features_forward(x)  # (W, F)
        if len(self.perms) == 1:
            return fl.linear(self.net.forward_laplacian(h), lambda a: a[..., 0])
        h = fl.linear(h, lambda a: tf.gather(a, self._columns, axis=-1))  # (W, n_perm, F)
        out = fl.linear(self.net.forward_laplacian(h), lambda a: a[..., 0])  # (W, n_perm)
        return fl.reduce_sum(out, axis=-1)

    def forward_laplacian(self, x):
        """log psi as a FwdLap (:mod:`distvmc.forward_laplacian`): value (W, N, D) -> (W,)."""
        return self.network_forward(x)


class DeepSets(Factor):
    """Permutation-invariant log psi = rho(sum_i phi(x_i)) for identical bosons."""

    def __init__(self, system, cfg, rng, dtype, name="deepsets"):
        self.name = name
        d = system.dim
        self.phi = Stack([d, *cfg.phi], cfg.activation, rng, dtype, cfg.init, 1.0, name="phi")
        self.rho = Stack([cfg.phi[-1], *cfg.rho, 1], cfg.activation, rng, dtype, cfg.init,
                         cfg.output_scale, name="rho")
        self.act = activation(cfg.activation)
        self.act_name = cfg.activation

    def signed_log(self, x):
        """x: (W, N, D) -> (None, log psi (W,))."""
        n, d = x.shape[1], x.shape[2]
        h = self.act(self.phi(tf.reshape(x, [-1, d])))
        pooled = tf.reduce_sum(tf.reshape(h, [-1, n, h.shape[-1]]), axis=1)
        return None, self.rho(pooled)[:, 0]

    def forward_laplacian(self, x):
        """log psi as a FwdLap (:mod:`distvmc.forward_laplacian`): value (W, N, D) -> (W,)."""
        return self.pooled_forward(x, np.eye(x.value.shape[1]))

    def pooled_forward(self, x, mix):
        """rho(sum_i phi(y_i)) with y_i = sum_n mix[n, i] x_n, as a FwdLap (W,).

        phi runs per particle with D tangents (forward_laplacian.per_item), acting on
        the last axis of (W, N, D), the same as on the (W N, D) rows."""
        from distvmc import forward_laplacian as fl

        def phi(y):  # (W, N, D) -> (W, N, latent)
            return fl.activation(self.phi.forward_laplacian(y), self.act_name)

        out = self.rho.forward_laplacian(fl.per_item(x, mix, phi, pool=True))  # (W, 1)
        return fl.linear(out, lambda a: a[..., 0])


register_factor("mlp", MLP_FIELDS, build_mlp, check=_check_mlp,
                changes_sign=lambda item: item["signed"])
register_factor("deepsets", DEEPSETS_FIELDS, DeepSets)
