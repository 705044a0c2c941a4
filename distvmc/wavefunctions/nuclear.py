"""Translation-invariant factors for light nuclei (positions in fm).

Each depends on the nucleons only through x_i - x_cm (x_cm the mean position)
or through pair distances r_ij, so psi is unchanged by a common shift of all
nucleons, and the full Laplacian of log psi is the internal kinetic energy
(the centre-of-mass part vanishes; tests/test_nuclei.py). All are symmetric
under exchange of nucleons (a spatially symmetric ansatz: at leading order in
pionless EFT and for A <= 4 the spin-isospin part carries the antisymmetry).

``deepsets_cm``: log psi = rho(sum_i phi(x_i - x_cm)), phi 3 -> 16 -> 16 and
    rho 16 -> 16 -> 16 -> 1 with tanh by default, as in the original multi-GPU
    code (MLQM).
``pair_net``: log psi = sum_{i<j} [f(r_ij^2, s_ij, g_ij) - kappa s_ij - gamma log s_ij]
    with s_ij = sqrt(r_ij^2 + c^2), g_ij = exp(-r_ij^2 / b^2) (b: the regulator's
    range), f a tanh MLP (bounded) and kappa > 0 a trainable
    decay (psi stays normalizable whatever the optimizer does) and gamma a
    trainable power: smooth at r_ij = 0 (no cusp: the potential is smooth) and
    able to take the deuteron's tail exp(-kappa r) / r (kappa = 0.23 fm^-1).
``cm_gaussian``: log psi = -beta sum_i |x_i - x_cm|^2 (beta > 0, trainable).
``gaussian_sum``: log |sum_k c_k S exp(-1/2 sum_{i<j} a^k_ij r_ij^2)|, the permutation-
    symmetrized correlated Gaussians of a file written by ``python -m distvmc.ecg
    --save FILE`` (:mod:`distvmc.ecg`), with the coefficients c_k trainable: a
    near-exact start for A <= 4 that network factors multiply.

Registered with ``translation_invariant=True``: with the ``pionless`` potential
the sampler re-centres walkers by default (``sampler.recentre``).
"""

from __future__ import annotations

import os

import numpy as np

from distvmc.lazytf import tf
from distvmc.schema import Bool, Choice, ConfigError, Float, IntList, Str
from distvmc.systems.pairs import pair_indices
from distvmc.wavefunctions.base import FACTORS, Factor
from distvmc.wavefunctions.capture import per_sample
from distvmc.wavefunctions.mlp import ACTIVATIONS, INITS, DeepSets, Stack


def relative(x):
    """x_i - x_cm for x of shape (W, N, D); same shape."""
    return x - tf.reduce_mean(x, axis=1, keepdims=True)


def pair_r2(x):
    """r_ij^2 for all pairs i < j: (W, N, D) -> (W, N(N-1)/2). Smooth everywhere
    (no square root), so second derivatives exist at coalescence."""
    i, j = pair_indices(x.shape[1])
    d = tf.gather(x, i, axis=1) - tf.gather(x, j, axis=1)
    return tf.reduce_sum(d * d, axis=-1)


def relative_forward(x):
    """:func:`relative` on a FwdLap of the coordinates (a linear map)."""
    from distvmc import forward_laplacian as fl

    return fl.linear(x, lambda a: a - tf.reduce_mean(a, axis=-2, keepdims=True))


DEEPSETS_CM_FIELDS = {
    "phi": IntList([16, 16], "per-nucleon network widths on x_i - x_cm (last: latent size)"),
    "rho": IntList([16, 16], "hidden widths of the network on the summed latent vector"),
    "activation": Choice("tanh", "nonlinearity", ACTIVATIONS),
    "output_scale": Float(0.1, "scale of the last layer's initial weights", min=0.0),
    "init": Choice("glorot", "weight initialisation", INITS),
}

PAIR_FIELDS = {
    "hidden": IntList([16, 16], "hidden widths of the pair network f(r^2, s, exp(-r^2/b^2))"),
    "activation": Choice("tanh", "nonlinearity", ACTIVATIONS),
    "output_scale": Float(0.1, "scale of the last layer's initial weights", min=0.0),
    "init": Choice("glorot", "weight initialisation", INITS),
    "range": Float(0.5, "length b of the input feature exp(-r^2 / b^2) (the regulator's "
                   "range 2 / Lambda: 0.5 fm at Lambda = 4 fm^-1)", min=0.0, open_min=True),
    "smoothing": Float(1.0, "length c in s = sqrt(r^2 + c^2), same units as positions (fm)",
                       min=0.0, open_min=True),
    "decay": Float(0.2, "initial kappa of the exponential tail -kappa s per pair (1/length); "
                   "kept positive (stored as its logarithm), so psi stays normalizable",
                   min=0.0, open_min=True),
    "trainable_decay": Bool(True, "optimize kappa"),
    "power": Float(0.0, "initial gamma of the tail -gamma log s per pair (trainable; the "
                   "deuteron's exp(-kappa r) / r has gamma = 1)"),
}

CM_GAUSSIAN_FIELDS = {
    "beta": Float(0.1, "initial beta in log psi = -beta sum_i |x_i - x_cm|^2 (1/length^2)",
                  min=0.0, open_min=True),
    "trainable": Bool(True, "optimize beta (kept positive: stored as its logarithm)"),
}


class DeepSetsCM(DeepSets):
    """log psi = rho(sum_i phi(x_i - x_cm)); x: (W, N, D) -> (None, (W,))."""

    def signed_log(self, x):
        return super().signed_log(relative(x))

    def forward_laplacian(self, x):
        """log psi as a FwdLap (:mod:`distvmc.forward_laplacian`): value (W, N, D) -> (W,)."""
        n = x.value.shape[1]
        return self.pooled_forward(x, np.eye(n) - 1.0 / n)  # x_i - x_cm


class PairNet(Factor):
    """log psi = sum_{i<j} [f(r^2, s, g) - kappa s - gamma log s], s = sqrt(r^2 + c^2), g = exp(-r^2/b^2)."""

    def __init__(self, system, cfg, rng, dtype, name="pair_net"):
        self.name = name
        self.c2 = float(cfg.smoothing) ** 2
        self.inv_b2 = 1.0 / float(cfg.range) ** 2
        self.net = Stack([3, *cfg.hidden, 1], cfg.activation, rng, dtype, cfg.init,
                         cfg.output_scale, name="net")
        log_kappa = np.log(cfg.decay)
        if cfg.trainable_decay:
            self.log_kappa = tf.Variable(log_kappa, dtype=dtype, name="log_kappa")
        else:
            self.log_kappa = tf.constant(log_kappa, dtype=dtype)
        self.gamma = tf.Variable(cfg.power, dtype=dtype, name="gamma")

    def signed_log(self, x):
        """x: (W, N, D) -> (None, (W,))."""
        r2 = pair_r2(x)  # (W, P)
        s = tf.sqrt(r2 + self.c2)
        p = r2.shape[1]
        feats = tf.reshape(tf.stack([r2, s, tf.exp(-self.inv_b2 * r2)], axis=-1), [-1, 3])
        f = tf.reshape(self.net(feats)[:, 0], [-1, p])
        kappa, gamma = tf.exp(per_sample(self.log_kappa, x, 1)), per_sample(self.gamma, x, 1)
        return None, tf.reduce_sum(f - kappa * s - gamma * tf.math.log(s), axis=1)

    def forward_laplacian(self, x):
        """log psi as a FwdLap (:mod:`distvmc.forward_laplacian`): value (W, N, D) -> (W,)."""
        from distvmc import forward_laplacian as fl

        def per_pair(y):  # y = x_i - x_j: (W, P, D) -> (W, P)
            r2 = fl.reduce_sum(fl.square(y), axis=-1)
            s = fl.sqrt(fl.shift(r2, self.c2))
            g = fl.exp(fl.scale(r2, -self.inv_b2))
            f = fl.linear(self.net.forward_laplacian(fl.stack([r2, s, g], axis=-1)),
                          lambda a: a[..., 0])
            return fl.sub(fl.sub(f, fl.scale(s, tf.exp(self.log_kappa))),
                          fl.scale(fl.log(s), self.gamma))

        return fl.per_item(x, fl.pair_mix(x.value.shape[1]), per_pair, pool=True)


class CMGaussian(Factor):
    """log psi = -beta sum_i |x_i - x_cm|^2; x: (W, N, D) -> (None, (W,))."""

    def __init__(self, system, cfg, rng=None, dtype=None, name="cm_gaussian"):
        dtype = dtype or tf.float64
        self.name = name
        if cfg.trainable:
            self.log_beta = tf.Variable(np.log(cfg.beta), dtype=dtype, name="log_beta")
        else:
            self.log_beta = tf.constant(np.log(cfg.beta), dtype=dtype)

    def signed_log(self, x):
        d = relative(x)
        return None, -tf.exp(per_sample(self.log_beta, x)) * tf.reduce_sum(d * d, axis=[1, 2])

    def forward_laplacian(self, x):
        """log psi as a FwdLap (:mod:`distvmc.forward_laplacian`): value (W, N, D) -> (W,)."""
        from distvmc import forward_laplacian as fl

        d2 = fl.square(relative_forward(x))
        return fl.scale(fl.reduce_sum(fl.reduce_sum(d2, axis=-1), axis=-1), -tf.exp(self.log_beta))


FACTORS.register("deepsets_cm", DEEPSETS_CM_FIELDS, DeepSetsCM, translation_invariant=True,
                 doc="DeepSets on x_i - x_cm (nuclei)")
FACTORS.register("pair_net", PAIR_FIELDS, PairNet, translation_invariant=True,
                 doc="a network of r_ij summed over pairs (nuclei)")
FACTORS.register("cm_gaussian", CM_GAUSSIAN_FIELDS, CMGaussian, translation_invariant=True,
                 doc="Gaussian confinement about the centre of mass")


GAUSSIAN_SUM_FIELDS = {
    "file": Str(None, "correlated Gaussians written by python -m distvmc.ecg --save FILE "
                "(.npz; relative: to the working directory; the resolved config records it "
                "absolute)", required=True),
    "trainable": Bool(True, "optimize the coefficients c_k"),
}


def _read_gaussians(path: str, key: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{key}.file = {path!r}: no such file (write one with python -m "
                          f"distvmc.ecg --save FILE)")
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in ("matrices", "coefficients", "nucleons")}
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one line
        raise ConfigError(f"{key}.file = {path!r}: not a distvmc.ecg basis ({e})") from None
    k, n = data["coefficients"].shape[0], int(data["nucleons"]) - 1
    if data["matrices"].shape != (k, n, n):
        raise ConfigError(f"{key}.file = {path!r}: matrices of shape "
                          f"{data['matrices'].shape}, expected ({k}, {n}, {n})")
    return data


def _check_gaussian_sum(item: dict, config: dict, key: str) -> None:
    item["file"] = os.path.abspath(os.path.expanduser(item["file"]))
    data = _read_gaussians(item["file"], key)
    a = config["system"]["particles"]
    if int(data["nucleons"]) != a or config["system"]["dim"] != 3:
        raise ConfigError(f"{key}.file = {item['file']!r} holds Gaussians for "
                          f"{int(data['nucleons'])} nucleons in 3D, but the system has {a} "
                          f"particles in {config['system']['dim']}D")


class GaussianSum(Factor):
    """log |sum_t w_t exp(-1/2 sum_c y_c^T B_t y_c)| over Gaussians k and permutations q
    (t = (k, q), B_t = Q_q^T A_k Q_q, w_t = c_k det(2 A_k)^(3/4)), y = U x the internal
    coordinates; x: (W, N, 3) -> (None, (W,))."""

    def __init__(self, system, cfg, rng=None, dtype=None, name="gaussian_sum"):
        from distvmc.ecg import PionlessECG, internal_basis

        dtype = dtype or tf.float64
        self.name = name
        data = _read_gaussians(cfg.file, "gaussian_sum")
        a = int(data["nucleons"])
        mats = PionlessECG(a).permuted(data["matrices"])  # (K, q, n, n)
        self._u = tf.constant(internal_basis(a), dtype=dtype)
        self._b = tf.constant(mats.reshape((-1,) + mats.shape[2:]), dtype=dtype)  # (K q, n, n)
        self._q = mats.shape[1]
        norm = np.linalg.det(2 * data["matrices"]) ** 0.75
        coef = data["coefficients"] * norm
        scale = float(np.max(np.abs(coef)))  # c_k are trained relative to the largest
        if cfg.trainable:
            self.coefficients = tf.Variable(coef / scale, dtype=dtype, name="coefficients")
        else:
            self.coefficients = tf.constant(coef / scale, dtype=dtype)

    def signed_log(self, x):
        y = tf.einsum("ia,wac->wic", self._u, x)  # (W, n, 3)
        quad = tf.einsum("wic,tij,wjc->wt", y, self._b, y)  # (W, K q)
        low = tf.stop_gradient(tf.reduce_min(quad, axis=1, keepdims=True))
        w = tf.repeat(self.coefficients, self._q)  # (K q,)
        psi = tf.reduce_sum(w * tf.exp(-0.5 * (quad - low)), axis=1)
        return None, tf.math.log(tf.abs(psi)) - 0.5 * low[:, 0]

    def forward_laplacian(self, x):
        """log psi as a FwdLap (:mod:`distvmc.forward_laplacian`). Each exponent
        h_t = -1/2 sum_c y_c^T B_t y_c is quadratic in the seeded coordinates (y = U x,
        J_k y constant): J_k h_t = -(B_t y) . J_k y, |J h_t|^2 = (B_t y)^T M (B_t y) with
        M = sum_k J_k y (J_k y)^T, L h_t = -sum_k (J_k y)^T B_t (J_k y). With the signed
        weights p_t = w_t e^{h_t} / psi (the signed log-sum-exp rule):
        J_k log|psi| = -(sum_t p_t B_t y) . J_k y and
        L log|psi| = sum_t p_t (L h_t + |J h_t|^2) - |J log|psi||^2.
        Memory per walker: Gaussians x n x 3 numbers, no tangent axis."""
        from distvmc import forward_laplacian as fl

        if x.lap is not None or x.jac.shape[0] != 1:  # not the seeded coordinates
            return fl.hessian_fallback(lambda z: self.signed_log(z)[1], x)
        y = tf.einsum("ia,wac->wic", self._u, x.value)  # (W, n, 3)
        jy = tf.einsum("ia,kac->kic", self._u, x.jac[0])  # (K, n, 3)
        by = tf.einsum("tij,wjc->wtic", self._b, y)  # (W, T, n, 3)
        h = -0.5 * tf.einsum("wic,wtic->wt", y, by)
        lap_h = -tf.einsum("kic,tij,kjc->t", jy, self._b, jy)  # (T,)
        grad2_h = tf.einsum("wtic,icjd,wtjd->wt", by, tf.einsum("kic,kjd->icjd", jy, jy), by)
        w = tf.repeat(self.coefficients, self._q)
        m = tf.stop_gradient(tf.reduce_max(h, axis=1, keepdims=True))
        terms = w * tf.exp(h - m)
        total = tf.reduce_sum(terms, axis=1)
        nonzero = tf.not_equal(total, 0.0)[:, None]
        p = tf.where(nonzero, terms / tf.where(nonzero, total[:, None], tf.ones_like(terms)),
                     tf.zeros_like(terms))
        jac = -tf.einsum("wic,kic->wk", tf.einsum("wt,wtic->wic", p, by), jy)
        lap = tf.reduce_sum(p * (lap_h + grad2_h), axis=1) - tf.reduce_sum(jac * jac, axis=1)
        return fl.FwdLap(m[:, 0] + tf.math.log(tf.abs(total)), jac, lap)


FACTORS.register("gaussian_sum", GAUSSIAN_SUM_FIELDS, GaussianSum, translation_invariant=True,
                 check=_check_gaussian_sum,
                 doc="symmetrized correlated Gaussians from python -m distvmc.ecg (nuclei)")
