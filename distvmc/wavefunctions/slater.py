"""Slater determinants: the antisymmetric factor ``slater`` (fermions).

psi_det(x) = sum_d w_d prod_g det[phi^d_{g,k}(x_i)]_{i in g, k < n_g}

One determinant block per species group g (particles ``start .. start + n_g - 1``):
a fermion group of n_g particles gives an n_g x n_g block, a group of one particle
(any statistics) a 1 x 1 block (the orbital value), so H2, He and Li work with one
factor. A boson group of two or more particles is refused (determinants are for
fermions). Exchanging two particles of one group swaps two rows of its block:
psi changes sign. The orbitals are

``orbitals: ferminet`` (default)
    FermiNet's permutation-equivariant network (:mod:`.ferminet`) times envelopes.
``orbitals: envelope``
    Linear combinations of fixed-form basis functions with trainable exponents
    and coefficients (Slater-Jastrow baseline with a ``jastrow`` factor).
    Exponential basis, per centre R_I and exponent z: {1, |r - R_I|, and the D
    components of r - R_I} * exp(-z |r - R_I|) (default exponents [Z_I, Z_I/2]).
    Gaussian basis: cartesian monomials of r - c of degree <= ``degree`` times
    exp(-a |r - c|^2) (default exponent m omega / (2 hbar), omega = 1 when the
    system does not say). Orbital k of every group starts as basis function k in
    aufbau order (1s, 2s, 2p, ...; gaussians: 1, x, y, z, x^2, ...); determinants
    after the first start from it plus 1e-2 Gaussian noise in the coefficients.

The value is returned as (sign, log|psi|): per determinant a sign and log|det|,
combined over determinants with a signed log-sum-exp (weights w_d trainable,
starting at 1; with one determinant there is no weight, since it would only be a
constant factor whose log-derivative is a zero column of O).

Determinant numerics (:func:`slogdet`)
--------------------------------------
XLA on CPU in TF 2.21 compiles neither LogMatrixDeterminant, MatrixDeterminant nor
Lu (only MatrixInverse), and the local energy runs under XLA. So the forward pass
is our own LU decomposition with partial pivoting written in plain TensorFlow ops,
unrolled over the (static, small) block size: sign and log|det| = sum_k log|U_kk|
(stable: no product of pivots is formed). It compiles under XLA, vectorizes under
``tf.vectorized_map`` / pfor (the O matrix and the Hessian) and runs in graphs.

Its reverse-mode derivative is a ``tf.custom_gradient``: d log|det| / dA = A^{-T},
with A^{-1} from tf.linalg.inv (XLA compiles it), whose registered gradient
(-A^{-T} G A^{-T}, matmuls only) then gives the exact second derivatives of the
``hessian`` Laplacian (a gradient of a gradient). Forward-mode accumulators
(``fwd_over_rev``'s outer derivative, ``fwd_over_fwd``) differentiate the LU ops
themselves, exact away from singular matrices since the pivot order is locally
constant. The inverse is guarded: an exactly singular block (a zero pivot,
log|det| = -inf: e.g. two same-spin electrons at one point) is inverted as the
identity and its gradient masked to 0, and so is any block whose inverse
overflows. tf.linalg.slogdet's own gradient instead calls matrix_inverse, which
raises InvalidArgumentError ("not invertible") on CPU for such a block and would
stop a run; with the guard, parameter gradients and O stay finite everywhere.
(The guard trusts that Eigen's pivoted LU inside the CPU MatrixInverse kernel
finds an exactly zero pivot only when ours does, as for repeated or zero rows;
under XLA the inverse never raises.) Near (not at) a node the gradient is the
exact, large-but-finite 1/distance; such a walker has |psi|^2 ~ 0 and is rarely
sampled. The 1 x 1 block is handled directly (sign(a), log|a|), exactly
differentiable to all orders.

The forward Laplacian (:meth:`Slater.forward_laplacian`, hamiltonian.laplacian:
forward) takes log|det| from the same LU and the gradient tr(A^{-1} J_k) and
Laplacian tr(A^{-1} L_A) - sum_k tr(A^{-1} J_k A^{-1} J_k) from the same guarded
inverse (:func:`distvmc.forward_laplacian.log_abs_det`). Near a node both methods
lose accuracy alike: the orbital matrix's rounding errors are amplified by its
condition number (two same-spin electrons a distance d apart: ~1e-16 / d relative).

Closed-form determinants for n <= 3 were not used: one general path serves every
block size, and the LU path was checked against tf.linalg.slogdet to second order
(tests/test_fermions.py).
"""

from __future__ import annotations

import numpy as np

from distvmc.lazytf import tf
from distvmc.schema import Choice, ConfigError, Int, IntList, OptionalFloatList
from distvmc.wavefunctions.base import Factor, Module, register_factor
from distvmc.wavefunctions.capture import per_sample
from distvmc.wavefunctions.ferminet import FermiNetOrbitals, safe_norm
from distvmc.wavefunctions.mlp import ACTIVATIONS

FIELDS = {
    "orbitals": Choice("ferminet", "orbital form: ferminet (FermiNet's permutation-equivariant "
                       "network times envelopes) or envelope (the Slater-Jastrow baseline, use it "
                       "with a jastrow factor: each orbital a linear combination, trainable "
                       "coefficients, of basis functions with trainable exponents: "
                       "exponential envelope {1, r, x, y, z} exp(-z r) per nucleus and exponent, "
                       "r and x, y, z measured from the nucleus; gaussian envelope cartesian "
                       "monomials up to degree times exp(-a r^2) about the centre)",
                       ["ferminet", "envelope"]),
    "determinants": Int(1, "number of determinants d in psi = sum_d w_d prod_groups det_d, with "
                        "trainable weights w_d starting at 1 (FermiNet uses 16; 1-4 on a few "
                        "CPU cores)", min=1),
    "hidden": IntList([32, 32], "ferminet: widths of the one-electron stream, one per layer"),
    "pair_hidden": IntList([8, 8], "ferminet: widths of the two-electron stream after each "
                           "layer; the last layer updates only the one-electron stream, so "
                           "only the first len(hidden) - 1 entries are used (give len(hidden) "
                           "or len(hidden) - 1 entries)"),
    "activation": Choice("tanh", "ferminet: nonlinearity of both streams", ACTIVATIONS),
    "envelope": Choice("auto", "decay of the orbitals: exponential, exp(-sigma r) in the "
                       "distance r to each nucleus; gaussian, exp(-sigma r^2) about the "
                       "centres (trap centre); auto: exponential with nuclei (coulomb), else "
                       "gaussian", ["auto", "exponential", "gaussian"]),
    "exponents": OptionalFloatList(None, "envelope orbitals: basis exponents (trainable), the "
                                   "same list for every centre; null: [Z, Z/2] per nucleus of "
                                   "charge Z (exponential), [m omega / (2 hbar)] with omega = 1 "
                                   "(gaussian)", positive=True),
    "degree": Int(1, "envelope orbitals, gaussian envelope: highest total degree of the "
                  "cartesian monomials multiplying the gaussians", min=0),
}


def _check(item: dict, c: dict, key: str) -> None:
    from distvmc.systems import species as species_mod

    groups = c["system"]["species"]
    for k, g in enumerate(groups):
        if g["statistics"] == "boson" and g["count"] >= 2:
            raise ConfigError(f"{key}.type = 'slater': {species_mod.label(groups, k)} holds "
                              f"{g['count']} identical bosons; determinants are for fermions "
                              f"(use a symmetric factor such as deepsets for bosons)")
    if item["orbitals"] == "envelope":
        n_b, what = _basis_size(item, c)
        big = max(g["count"] for g in groups)
        if big > n_b:
            raise ConfigError(f"{key}: envelope orbitals have {n_b} basis functions ({what}) "
                              f"but a group holds {big} particles; give more exponents"
                              + (" or a higher degree" if "degree" in what else ""))
    n_h, n_p = len(item["hidden"]), len(item["pair_hidden"])
    if item["orbitals"] == "ferminet" and n_p not in (n_h, n_h - 1):
        raise ConfigError(f"{key}.pair_hidden has {n_p} entries: give len(hidden) = {n_h} or "
                          f"len(hidden) - 1 = {n_h - 1}")


def _basis_size(item: dict, c: dict) -> tuple[int, str]:
    """Number of envelope basis functions the config gives, and how it follows."""
    from math import comb

    d = c["system"]["dim"]
    coulomb = c["potential"]["type"] == "coulomb"
    k = len(c["potential"]["nuclei"]) if coulomb else 1
    kind = item["envelope"] if item["envelope"] != "auto" else (
        "exponential" if coulomb else "gaussian")
    if kind == "exponential":
        e = 2 if item["exponents"] is None else len(item["exponents"])
        return k * e * (d + 2), f"{k} centre(s) x {e} exponent(s) x {d + 2} functions"
    e = 1 if item["exponents"] is None else len(item["exponents"])
    m = comb(item["degree"] + d, d)
    return k * e * m, (f"{k} centre(s) x {e} exponent(s) x {m} monomials of degree <= "
                       f"{item['degree']}")


# ---------------------------------------------------------------------------
# slogdet: pivoted LU forward, guarded-inverse custom gradient
# ---------------------------------------------------------------------------


def _lu_slogdet(a):
    """(sign, log|det|) of a (..., n, n) with static n by LU with partial pivoting.

    Plain TensorFlow ops unrolled over n (XLA, pfor and graphs); a zero pivot gives
    sign 0 and log|det| = -inf. Reverse mode uses the custom gradient of
    :func:`slogdet`; forward-mode accumulators (the fwd_over_rev and fwd_over_fwd
    Laplacians) differentiate these ops themselves, which is exact away from
    singular matrices (the pivot order is locally constant). No tangent reaches a
    comparison, argmax or sign (stop_gradient): nested accumulators break on them.
    """
    n = a.shape[-1]
    one = 0.0 * a[..., 0, 0] + 1.0  # (...,), no tf.shape (nested accumulators)
    sign, logdet = one, 0.0 * one
    s = a
    for k in range(n):
        m = n - k
        if m > 1:
            p = tf.argmax(tf.abs(tf.stop_gradient(s[..., :, 0])), axis=-1,
                          output_type=tf.int32)  # (...,)
            ep = tf.one_hot(p, m, dtype=a.dtype)  # (..., m)
            e0 = tf.one_hot(0, m, dtype=a.dtype)  # (m,)
            row_p = tf.reduce_sum(ep[..., :, None] * s, axis=-2)  # (..., m): row p
            row_0 = s[..., 0, :]
            # swap rows 0 and p: s + e0 (row_p - row_0) + ep (row_0 - row_p)
            diff = row_p - row_0
            s = s + e0[:, None] * diff[..., None, :] - ep[..., :, None] * diff[..., None, :]
            sign = sign * tf.where(tf.equal(p, 0), one, -one)
        piv = s[..., 0, 0]
        sign = sign * tf.sign(tf.stop_gradient(piv))
        logdet = logdet + tf.math.log(tf.abs(piv))
        if m > 1:
            safe = tf.where(tf.equal(tf.stop_gradient(piv), 0.0), one, piv)
            s = s[..., 1:, 1:] - (s[..., 1:, 0] / safe[..., None])[..., :, None] * s[..., 0:1, 1:]
    return sign, logdet


def _guarded_inverse(a, logdet):
    """A^{-1}, with 0 where A is singular (log|det| = -inf) or the inverse overflows."""
    n = a.shape[-1]
    ok = tf.math.is_finite(logdet)[..., None, None]
    eye = tf.eye(n, dtype=a.dtype)
    inv = tf.linalg.inv(tf.where(ok, a, eye + 0.0 * a))
    ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(inv), axis=[-2, -1], keepdims=True))
    return tf.where(ok, inv, 0.0 * a)


def _slogdet_lu_guarded(a):
    """(sign, log|det|) by LU; gradient d log|det| / dA = A^{-T} from a guarded inverse."""
    sign, logdet = _lu_slogdet(a)

    def grad(dsign, dlogdet):
        inv = _guarded_inverse(a, logdet)
        return dlogdet[..., None, None] * tf.linalg.matrix_transpose(inv)

    return (sign, logdet), grad


_CUSTOM = {}


def _slogdet_general(a):
    # tf.custom_gradient is applied on first use: decorating at import time would
    # import TensorFlow when the config imports this module for its schema.
    if "f" not in _CUSTOM:
        _CUSTOM["f"] = tf.custom_gradient(_slogdet_lu_guarded)
    return _CUSTOM["f"](a)


def slogdet(a):
    """(sign, log|det a|) of a (..., n, n), each of shape (...,).

    Compiles under XLA, vectorizes, and has exact first and second derivatives away
    from singular matrices; at an exactly singular matrix log|det| = -inf, sign = 0
    and the gradient is 0 (finite), never an error. The sign carries no gradient.
    """
    n = a.shape[-1]
    if n == 1:
        v = a[..., 0, 0]
        return tf.sign(tf.stop_gradient(v)), tf.math.log(tf.abs(v))
    sign, logdet = _slogdet_general(a)
    return tf.stop_gradient(sign), logdet


def signed_logsumexp(sign, logs, weights=None):
    """(sign, log|sum_d w_d sign_d exp(logs_d)|) over the last axis, stably."""
    m = tf.stop_gradient(tf.reduce_max(logs, axis=-1, keepdims=True))
    m = tf.where(tf.math.is_finite(m), m, tf.constant(0.0, logs.dtype))  # all dets 0
    terms = sign * tf.exp(logs - m)
    if weights is not None:
        terms = terms * weights
    total = tf.reduce_sum(terms, axis=-1)
    return tf.sign(tf.stop_gradient(total)), m[..., 0] + tf.math.log(tf.abs(total))


# ---------------------------------------------------------------------------
# Envelope (basis-function) orbitals
# ---------------------------------------------------------------------------


def envelope_kind(system, cfg) -> str:
    """'exponential' or 'gaussian' for the factor's ``envelope`` setting."""
    if cfg.envelope != "auto":
        return cfg.envelope
    return "exponential" if system.charges is not None else "gaussian"


def gaussian_exponent(system) -> float:
    """m omega / (2 hbar) for particle 0 (omega = system.omega when present, else 1)."""
    omega = getattr(system, "omega", None)
    omega = 1.0 if omega is None else float(np.mean(omega))
    return float(system.masses[0]) * omega / (2.0 * system.hbar)


class EnvelopeOrbitals(Module):
    """phi^d_{g,k}(r) = sum_b C^{d,g}_{b,k} chi_b(r), chi_b fixed-form basis functions."""

    def __init__(self, system, blocks, cfg, rng, dtype, kind, n_det):
        self.kind = kind
        self.centres = np.asarray(system.centres, np.float64)
        k_c, d = self.centres.shape
        charges = (np.ones(k_c) if system.charges is None
                   else np.asarray(system.charges, np.float64))
        if cfg.exponents is not None:
            z = np.tile(np.asarray(cfg.exponents, np.float64)[None], (k_c, 1))
        elif kind == "exponential":
            z = np.stack([charges, charges / 2.0], axis=1)
        else:
            z = np.full((k_c, 1), gaussian_exponent(system))
        n_exp = z.shape[1]
        self.log_exponents = tf.Variable(np.log(z), dtype=dtype, name="log_exponents")  # (K, E)
        # basis: list of (centre, exponent index, kind, monomial powers); sort key = aufbau
        basis = []
        if kind == "exponential":
            for i in range(k_c):
                for e in range(n_exp):
                    basis.append(((e, 0, i, 0), (i, e, "1", None)))
                    for c in range(d):
                        basis.append((((e if e > 0 else n_exp), 1, i, c), (i, e, "p", c)))
                    basis.append(((n_exp + 1, 2, i, e), (i, e, "r", None)))
            self.degree = None
        else:
            import itertools

            self.degree = cfg.degree
            monos = sorted((p for p in itertools.product(range(cfg.degree + 1), repeat=d)
                            if sum(p) <= cfg.degree), key=lambda p: (sum(p), tuple(-q for q in p)))
            for i in range(k_c):
                for e in range(n_exp):
                    for j, p in enumerate(monos):
                        basis.append(((sum(p), e, i, j), (i, e, "m", p)))
        basis.sort(key=lambda b: b[0])
        self.basis = [b[1] for b in basis]
        self.basis_labels = [self._label(b) for b in self.basis]
        n_b = len(self.basis)
        self.coefficients = []
        for (start, count) in blocks:
            if count > n_b:
                raise ValueError(f"slater: envelope orbitals have {n_b} basis functions but a "
                                 f"group holds {count} particles; add exponents or raise degree")
            c0 = np.zeros((n_det, n_b, count))
            c0[:, np.arange(count), np.arange(count)] = 1.0
            c0[1:] += 1e-2 * rng.standard_normal(c0[1:].shape)
            self.coefficients.append(tf.Variable(c0, dtype=dtype, name=f"coefficients_{start}"))

    def _label(self, b):
        i, e, t, c = b
        if t == "1":
            return f"c{i} z{e} 1"
        if t == "r":
            return f"c{i} z{e} r"
        if t == "p":
            return f"c{i} z{e} {'xyzw'[c] if c < 4 else c}"
        mono = "".join(f"{'xyzw'[k] if k < 4 else k}{q if q > 1 else ''}"
                       for k, q in enumerate(c) if q)
        return f"c{i} z{e} {mono or '1'}"

    def basis_values(self, x):
        """chi_b(x_i): x (W, N, D) -> (W, N, B).

        No tf.gather: under the Hessian's pfor, XLA constant-folds gathers of the
        one-hot tangent seeds (slow compiles at large chunks).
        """
        r_c = tf.constant(self.centres, dtype=x.dtype)
        diff = x[:, :, None, :] - r_c  # (W, N, K, D)
        z = tf.exp(per_sample(self.log_exponents, x, 1))  # (K, E), or (W, 1, K, E) for O
        if self.kind == "exponential":
            r = safe_norm(diff)  # (W, N, K)
        else:
            r = tf.reduce_sum(diff * diff, axis=-1)  # r^2, (W, N, K)
        env = {}
        out = []
        for i, e, t, c in self.basis:
            if (i, e) not in env:
                env[i, e] = tf.exp(-z[..., i, e] * r[..., i])  # (W, N)
            if t == "1":
                poly = None
            elif t == "r":
                poly = r[..., i]
            elif t == "p":
                poly = diff[..., i, c]
            else:
                poly = None
                for k, q in enumerate(c):
                    for _ in range(q):
                        poly = diff[..., i, k] if poly is None else poly * diff[..., i, k]
            out.append(env[i, e] if poly is None else poly * env[i, e])
        return tf.stack(out, axis=-1)

    def forward_laplacian(self, x, blocks, n_det):
        """The orbital matrices as FwdLaps (:mod:`distvmc.forward_laplacian`), the same
        function as ``__call__``: one per group, value (W, n_det, c, c). The basis
        functions of electron i depend on x_i only (:func:`~distvmc.forward_laplacian.per_item`)."""
        from distvmc import forward_laplacian as fl

        r_c = tf.constant(self.centres, dtype=x.value.dtype)
        z = tf.exp(self.log_exponents)  # (K, E)
        k_c = self.centres.shape[0]

        def basis(y):  # (W, N, D) -> (W, N, B), as basis_values
            diff = fl.shift(fl.linear(y, lambda a: tf.repeat(a[..., None, :], k_c, axis=-2)),
                            -r_c)  # (W, N, K, D)
            r = (fl.safe_norm(diff) if self.kind == "exponential"
                 else fl.reduce_sum(fl.square(diff), axis=-1))  # (W, N, K)

            def pick(t, *idx):
                return fl.linear(t, lambda a: a[(..., *idx)])

            env, out = {}, []
            for i, e, t, c in self.basis:
                if (i, e) not in env:
                    env[i, e] = fl.exp(fl.scale(pick(r, i), -z[i, e]))
                if t == "1":
                    poly = None
                elif t == "r":
                    poly = pick(r, i)
                elif t == "p":
                    poly = pick(diff, i, c)
                else:
                    poly = None
                    for k, q in enumerate(c):
                        for _ in range(q):
                            poly = (pick(diff, i, k) if poly is None
                                    else fl.multiply(poly, pick(diff, i, k)))
                out.append(env[i, e] if poly is None else fl.multiply(poly, env[i, e]))
            return fl.stack(out, axis=-1)

        n = x.value.shape[1]
        chi = fl.per_item(x, np.eye(n), basis)  # (W, N, B), dense jac
        return [fl.linear(chi, lambda a, s=s, cnt=cnt, c=c: tf.einsum(
                    "...ib,dbk->...dik", a[..., s:s + cnt, :], c))
                for (s, cnt), c in zip(blocks, self.coefficients)]

    def __call__(self, x, blocks, n_det):
        chi = self.basis_values(x)
        out = []
        for (start, count), c in zip(blocks, self.coefficients):
            c = per_sample(c, x)  # (n_det, B, count), or (W, n_det, B, count) for O
            eq = "wib,dbk->wdik" if c.shape.rank == 3 else "wib,wdbk->wdik"
            phi = tf.einsum(eq, chi[:, start:start + count], c)
            out.append(phi)
        return out


# ---------------------------------------------------------------------------
# The factor
# ---------------------------------------------------------------------------


@register_factor("slater", FIELDS, antisymmetric=True, check=_check)
class Slater(Factor):
    """Sum of products of per-group determinants of orbitals; see the module docstring.

    Attributes:
      blocks: (start, count) of every species group, in order.
      n_det: number of determinants.
    """

    def __init__(self, system, cfg, rng, dtype, name="slater"):
        self.name = name
        self.blocks = [(int(s.start), int(s.count)) for s in system.species]
        for k, s in enumerate(system.species):
            if s.statistics == "boson" and s.count >= 2:
                raise ValueError(f"slater: species group {k} holds {s.count} identical bosons; "
                                 f"determinants are for fermions")
        self.n_det = int(cfg.determinants)
        self.kind = envelope_kind(system, cfg)
        self.orbitals_type = cfg.orbitals
        if cfg.orbitals == "ferminet":
            self.orbitals = FermiNetOrbitals(system, self.blocks, cfg, rng, dtype, self.kind,
                                             self.n_det)
        else:
            self.orbitals = EnvelopeOrbitals(system, self.blocks, cfg, rng, dtype, self.kind,
                                             self.n_det)
        if self.n_det > 1:
            self.weights = tf.Variable(np.ones(self.n_det), dtype=dtype, name="det_weights")
        else:
            self.weights = None

    def orbital_matrices(self, x):
        """One tensor per group, shape (W, n_det, n_g, n_g): [w, d, i, k] = phi^d_k(x_i)."""
        return self.orbitals(x, self.blocks, self.n_det)

    def signed_log(self, x):
        """x: (W, N, D) -> (sign (W,), log|psi_det| (W,))."""
        sign, logdet = None, None
        for m in self.orbital_matrices(x):
            s, u = slogdet(m)  # (W, n_det)
            sign = s if sign is None else sign * s
            logdet = u if logdet is None else logdet + u
        if self.n_det == 1:
            return sign[:, 0], logdet[:, 0]
        return signed_logsumexp(sign, logdet, per_sample(self.weights, x))

    def forward_laplacian(self, x):
        """log|psi_det| as a FwdLap (:mod:`distvmc.forward_laplacian`): the seeded
        coordinates (W, N, D) -> (W,); the same function as ``signed_log``.

        Per group, the orbital matrix A (the orbitals' own forward rules) enters
        :func:`~distvmc.forward_laplacian.log_abs_det`: gradient tr(A^{-1} J_k),
        Laplacian tr(A^{-1} L_A) - sum_k tr(A^{-1} J_k A^{-1} J_k), with log|det A| from
        the pivoted LU of :func:`slogdet` and A^{-1} from the same guarded
        tf.linalg.inv as its gradient (0 where A is singular: gradient and Laplacian
        0, as the hessian method gives). A 1 x 1 block is log|a| (J/a, L/a - (J/a)^2).
        Groups add; several determinants combine by
        :func:`~distvmc.forward_laplacian.signed_logsumexp` with the weights w_d.
        """
        from distvmc import forward_laplacian as fl

        sign, total = None, None
        for m in self.orbitals.forward_laplacian(x, self.blocks, self.n_det):
            if m.value.shape[-1] == 1:
                a = fl.linear(m, lambda t: t[..., 0, 0])  # (W, n_det)
                s, u = tf.sign(tf.stop_gradient(a.value)), fl.log_abs(a)
            else:
                s, logdet = slogdet(m.value)  # (W, n_det)
                u = fl.log_abs_det(m, logdet, _guarded_inverse(m.value, logdet))
            sign = s if sign is None else sign * s
            total = u if total is None else fl.add(total, u)
        if self.n_det == 1:
            return fl.linear(total, lambda t: t[..., 0])
        return fl.signed_logsumexp(sign, total, self.weights)


__all__ = ["EnvelopeOrbitals", "FIELDS", "Slater", "signed_logsumexp", "slogdet"]
