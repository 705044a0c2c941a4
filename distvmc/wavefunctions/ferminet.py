"""FermiNet orbitals: a permutation-equivariant network times envelopes.

For the ``slater`` factor with ``orbitals: ferminet`` (Pfau et al., Phys. Rev.
Research 2, 033429 (2020)). Inputs: one-electron features r_i - R_I and |r_i - R_I|
for every centre I (nuclei, or the trap centre), two-electron features r_i - r_j
and |r_i - r_j|. Distances use a norm whose derivative at 0 is 0 instead of NaN
(this covers FermiNet's diagonal trick |r_ii + 1| (1 - delta_ij), and also an
electron on a nucleus or two electrons at one point). Layer l:

    h_i <- act(W [h_i, mean_{j in g} h_j for every group g,
                  mean_{j in g} g_ij for every group g] + b)   (+ h_i if widths match)
    g_ij <- act(V g_ij + c)                                    (+ g_ij if widths match)

(the last layer updates only h). Pooling per species group makes h_i equivariant
under permutations within each group, so a determinant over a group's rows is
antisymmetric. Orbitals, per group g, determinant d and orbital k:

    phi^d_{g,k}(x_i) = (w^d_{g,k} . h_i + b^d_{g,k}) * env^d_{g,k}(r_i)

with env = sum_I pi_kI exp(-sigma_kI |r_i - R_I|) (exponential; pi starts at 1 and
sigma at Z_I / n for orbital k in shell n = 1, 2, 2, 2, 2, 3, ... of aufbau order)
or sum_I pi_kI exp(-sigma_kI |r_i - R_I|^2) (gaussian; sigma starts at
m omega / (2 hbar)). sigma is stored as its logarithm (kept positive). Weights are
drawn from the shared NumPy generator (std 1/sqrt(fan-in)); biases start at 0.
"""

from __future__ import annotations

import numpy as np

from distvmc.lazytf import tf
from distvmc.wavefunctions.base import Module
from distvmc.wavefunctions.capture import linear, per_sample
from distvmc.wavefunctions.mlp import activation


def safe_norm(v, keepdims=False):
    """|v| over the last axis with derivative 0 (not NaN) at v = 0."""
    s = tf.reduce_sum(v * v, axis=-1, keepdims=keepdims)
    pos = tf.stop_gradient(s) > 0.0  # no tangent into a comparison (nested accumulators)
    # 0 * s + 1, not ones_like: ones_like and zeros_like break nested forward accumulators
    return tf.where(pos, tf.sqrt(tf.where(pos, s, 0.0 * s + 1.0)), 0.0 * s)


def _shell(k: int) -> int:
    """Principal quantum number of the k-th spin orbital of one spin in aufbau order."""
    n, filled = 1, 0
    while True:
        size = 1 if n == 1 else 4 if n == 2 else 9 if n == 3 else n * n
        if k < filled + size:
            return n
        filled += size
        n += 1


class FermiNetOrbitals(Module):
    """The orbital matrices of a FermiNet; ``__call__(x, blocks, n_det)`` -> list per group."""

    def __init__(self, system, blocks, cfg, rng, dtype, kind, n_det):
        from distvmc.wavefunctions.slater import gaussian_exponent

        self.kind = kind
        self.centres = np.asarray(system.centres, np.float64)  # (K, D)
        k_c, d = self.centres.shape
        n_g = len(blocks)
        hidden = list(cfg.hidden)
        n_l = len(hidden)
        pair = list(cfg.pair_hidden)[:max(n_l - 1, 0)]
        self.act_name = cfg.activation

        def w(n_in, n_out):
            return rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)

        f, g = k_c * (d + 1), d + 1
        self.w_one, self.w_mean, self.b_one = [], [], []
        self.w_two, self.b_two = [], []
        for l, width in enumerate(hidden):
            fan = f * (1 + n_g) + g * n_g
            wl = w(fan, width)
            self.w_one.append(tf.Variable(np.concatenate([wl[:f], wl[f * (1 + n_g):]]),
                                          dtype=dtype, name=f"w_one{l}"))
            self.w_mean.append(tf.Variable(wl[f:f * (1 + n_g)], dtype=dtype, name=f"w_mean{l}"))
            self.b_one.append(tf.Variable(np.zeros(width), dtype=dtype, name=f"b_one{l}"))
            if l < n_l - 1:
                self.w_two.append(tf.Variable(w(g, pair[l]), dtype=dtype, name=f"w_two{l}"))
                self.b_two.append(tf.Variable(np.zeros(pair[l]), dtype=dtype, name=f"b_two{l}"))
                g = pair[l]
            f = width
        charges = (np.ones(k_c) if system.charges is None
                   else np.asarray(system.charges, np.float64))
        self.w_orb, self.b_orb, self.pi, self.log_sigma = [], [], [], []
        for gi, (start, count) in enumerate(blocks):
            m = n_det * count
            self.w_orb.append(tf.Variable(w(f, m), dtype=dtype, name=f"w_orb{gi}"))
            self.b_orb.append(tf.Variable(np.zeros(m), dtype=dtype, name=f"b_orb{gi}"))
            self.pi.append(tf.Variable(np.ones((k_c, m)), dtype=dtype, name=f"pi{gi}"))
            if kind == "exponential":
                shells = np.array([_shell(k) for k in range(count)] * n_det, np.float64)
                sigma = charges[:, None] / shells[None, :]
            else:
                sigma = np.full((k_c, m), gaussian_exponent(system))
            self.log_sigma.append(tf.Variable(np.log(sigma), dtype=dtype, name=f"log_sigma{gi}"))

    def __call__(self, x, blocks, n_det):
        act = activation(self.act_name)
        n = x.shape[1]
        k_c, d = self.centres.shape
        r_c = tf.constant(self.centres, dtype=x.dtype)
        ae = x[:, :, None, :] - r_c  # (W, N, K, D)
        r_ae = safe_norm(ae)  # (W, N, K)
        h = tf.concat([tf.reshape(ae, [-1, n, k_c * d]), r_ae], axis=-1)
        ee = x[:, :, None, :] - x[:, None, :, :]  # (W, N, N, D)
        g = tf.concat([ee, safe_norm(ee, keepdims=True)], axis=-1)  # (W, N, N, D + 1)
        n_l = len(self.w_one)
        for l in range(n_l):
            means = tf.concat([tf.reduce_mean(h[:, s:s + c], axis=1, keepdims=True)
                               for s, c in blocks], axis=-1)  # (W, 1, n_g F)
            pair = tf.concat([tf.reduce_mean(g[:, :, s:s + c], axis=2)
                              for s, c in blocks], axis=-1)  # (W, N, n_g G)
            new = act(linear(tf.concat([h, pair], axis=-1), self.w_one[l])
                      + linear(means, self.w_mean[l], self.b_one[l]))
            h = new + h if new.shape[-1] == h.shape[-1] else new
            if l < n_l - 1:
                new_g = act(linear(g, self.w_two[l], self.b_two[l]))
                g = new_g + g if new_g.shape[-1] == g.shape[-1] else new_g
        out = []
        for gi, (s, c) in enumerate(blocks):
            lin = linear(h[:, s:s + c], self.w_orb[gi], self.b_orb[gi])  # (W, c, n_det c)
            r = r_ae[:, s:s + c, :, None]  # (W, c, K, 1)
            if self.kind == "gaussian":
                r = r * r
            pi, sigma = per_sample(self.pi[gi], x, 1), tf.exp(per_sample(self.log_sigma[gi], x, 1))
            env = tf.reduce_sum(pi * tf.exp(-sigma * r), axis=2)  # (W, c, n_det c)
            phi = tf.reshape(lin * env, [-1, c, n_det, c])
            out.append(tf.transpose(phi, [0, 2, 1, 3]))  # (W, n_det, c, c)
        return out

    def forward_laplacian(self, x, blocks, n_det):
        """The orbital matrices as FwdLaps (:mod:`distvmc.forward_laplacian`): x the seeded
        coordinates (W, N, D) -> one per group, value (W, n_det, c, c), jac (W, N*D, ...).

        The same function as ``__call__``. The one-electron features and the envelopes
        depend on one electron each (:func:`~distvmc.forward_laplacian.per_item`); the
        two-electron stream on one pair each, so it runs in pair-local form with D
        tangents (:func:`~distvmc.forward_laplacian.ordered_pairs`) and only its
        per-group means enter the dense N*D directions
        (:func:`~distvmc.forward_laplacian.mean_over_partners`). The one-electron stream
        is dense (N*D tangents) from the first mean pooling on.
        """
        from distvmc import forward_laplacian as fl

        n = x.value.shape[1]
        k_c, d = self.centres.shape
        r_c = tf.constant(self.centres, dtype=x.value.dtype)

        def electron_nucleus(y):  # (W, I, D) -> r_i - R_K (W, I, K, D)
            return fl.shift(fl.linear(y, lambda a: tf.repeat(a[..., None, :], k_c, axis=-2)),
                            -r_c)

        def one_electron(y):  # (W, N, D) -> (W, N, K D + K)
            ae = electron_nucleus(y)
            return fl.concat([fl.reshape(ae, [n, k_c * d]), fl.safe_norm(ae)], axis=-1)

        h = fl.per_item(x, np.eye(n), one_electron)  # (W, N, F0), dense jac
        ee = fl.ordered_pairs(x)  # (W, N, N, D), pair-local
        g = fl.concat([ee, fl.safe_norm(ee, keepdims=True)], axis=-1)
        n_l = len(self.w_one)
        for l in range(n_l):
            means = fl.concat([fl.reduce_mean(fl.linear(h, lambda a, s=s, c=c: a[..., s:s + c, :]),
                                              axis=-2, keepdims=True)
                               for s, c in blocks], axis=-1)  # (W, 1, n_g F)
            pair = fl.concat([fl.mean_over_partners(g, x, s, c) for s, c in blocks],
                             axis=-1)  # (W, N, n_g G)
            new = fl.activation(fl.add(fl.dense(fl.concat([h, pair], axis=-1), self.w_one[l]),
                                       fl.dense(means, self.w_mean[l], self.b_one[l])),
                                self.act_name)
            h = fl.add(new, h) if new.value.shape[-1] == h.value.shape[-1] else new
            if l < n_l - 1:
                new_g = fl.activation(fl.dense(g, self.w_two[l], self.b_two[l]), self.act_name)
                g = fl.add(new_g, g) if new_g.value.shape[-1] == g.value.shape[-1] else new_g
        out = []
        for gi, (s, c) in enumerate(blocks):
            lin = fl.dense(fl.linear(h, lambda a, s=s, c=c: a[..., s:s + c, :]), self.w_orb[gi],
                           self.b_orb[gi])  # (W, c, n_det c)
            sigma, pi = tf.exp(self.log_sigma[gi]), self.pi[gi]  # (K, n_det c)

            def envelope(y, sigma=sigma, pi=pi):  # (W, c, D) -> (W, c, n_det c)
                r = fl.safe_norm(electron_nucleus(y))  # (W, c, K)
                if self.kind == "gaussian":
                    r = fl.square(r)
                e = fl.exp(fl.scale(fl.linear(r, lambda a: a[..., None]), -sigma))
                return fl.reduce_sum(fl.scale(e, pi), axis=-2)

            env = fl.per_item(x, np.eye(n)[:, s:s + c], envelope)
            phi = fl.reshape(fl.multiply(lin, env), [c, n_det, c])
            out.append(fl.linear(phi, lambda a: tf.einsum("...idk->...dik", a)))
        return out


__all__ = ["FermiNetOrbitals", "safe_norm"]
