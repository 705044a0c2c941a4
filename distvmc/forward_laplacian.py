"""The forward Laplacian: value, Jacobian and Laplacian in one forward pass.

The ``forward`` Laplacian method of :mod:`distvmc.hamiltonian` (the "forward
Laplacian" of LapNet, Li et al. 2023, and of the ``folx`` library for JAX,
derived here for our TensorFlow factors). Every intermediate tensor h of a
factor is carried as a :class:`FwdLap` triple

    value  h                          shape (W, *S)
    jac    J_k = sum_i a_ki dh/dx_i   shape (W, K, *S)   (the tangent axis K second)
    lap    L = sum_i c_i d2h/dx_i^2   shape (W, *S)

where x are the walker's N*D coordinates. The coordinates are seeded with
J = diag(a), a_i = sqrt(c_i), c_i = hbar^2 / (2 m_i) (:func:`coordinates`), so
K = N*D and the propagated "Laplacian" is already the mass-weighted one: for
u = log|psi| the kinetic energy is -(L_u + sum_k J_uk^2). ``jac`` and ``lap`` may
have a leading dimension of 1 (the same for every walker, as for the
coordinates themselves) and ``lap`` may be None (zero: h is affine in x).

The rules (sum_k over the K tangents; f', f'' derivatives of a scalar f):

    affine map  h A + b, sums, means, gathers, reshapes, concatenations (linear M):
                M h + b,        M J,             M L
    elementwise f(h):
                f(h),           f'(h) J,         f'(h) L + f''(h) sum_k J_k^2
    product     g h:
                g h,            g J_h + h J_g,   g L_h + h L_g + 2 sum_k J_gk J_hk
    log-sum-exp l = log sum_j exp(h_j), p = softmax(h):
                l,              sum_j p_j J_j,   sum_j p_j (L_j + sum_k J_jk^2) - sum_k J_lk^2

with, for the functions the factors use,

    exp: f' = f'' = e^h             log|h|: f' = 1/h, f'' = -1/h^2
    sqrt: f' = 1/(2 sqrt h), f'' = -1/(4 h^{3/2})      h^2: f' = 2h, f'' = 2
    tanh t: f' = 1 - t^2, f'' = -2 t (1 - t^2)
    sigmoid s: f' = s (1 - s), f'' = s (1 - s)(1 - 2 s)
    softplus: f' = s, f'' = s (1 - s)
    silu h s: f' = s (1 + h (1 - s)), f'' = s (1 - s)(2 + h (1 - 2 s))
    gelu h Phi(h): f' = Phi + h phi, f'' = phi (2 - h^2)     (phi the normal density)
    cos: f' = -sin, f'' = -cos

A distance |d| (pair distances, particle-centre distances) is sqrt of the sum
of d^2 over the last axis: the square, sum and sqrt rules in turn.

The cost of a dense layer is about K + 2 times its forward pass, and the memory
per walker O(K * width) instead of the Hessian's O(K^2): no (ND)^2 tensor is
formed. A network of one particle or one pair (DeepSets' phi, pair_net, the
Jastrow) depends on D coordinates only: :func:`per_item` runs it with D tangents
and expands its Jacobian to the N*D directions once, after the network.

Factors opt in with ``forward_laplacian(x: FwdLap) -> FwdLap`` (x the seeded
coordinates (W, N, D), the result log|factor| of shape (W,)); :func:`log_abs_of`
sums the factors of a wavefunction and differentiates a factor without rules by
the reverse-mode Hessian (:func:`hessian_fallback`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf


class FwdLap(NamedTuple):
    """(value (W, *S), jac (W or 1, K, *S), lap (W or 1, *S) or None for zero)."""

    value: tf.Tensor
    jac: tf.Tensor
    lap: tf.Tensor | None


def _tangent_axis(t: tf.Tensor) -> tf.Tensor:
    """Insert the tangent axis K (axis 1) into a value-shaped tensor."""
    return t[:, None]


def _sum_sq(jac: tf.Tensor) -> tf.Tensor:
    """sum_k J_k^2: (W, K, *S) -> (W, *S)."""
    return tf.reduce_sum(jac * jac, axis=1)


def _add_lap(a, b):
    if a is None:
        return b
    return a if b is None else a + b


# -- the coordinates -----------------------------------------------------------------

def coordinates(x: tf.Tensor, weights) -> FwdLap:
    """The seed: x (W, N, D) with J = diag(weights), shape (1, N*D, N, D), lap zero.

    ``weights`` (N*D,) are a_i = sqrt(hbar^2 / (2 m_i)) per coordinate (ones for the
    plain Laplacian)."""
    n, d = x.shape[1], x.shape[2]
    a = tf.cast(tf.convert_to_tensor(weights), x.dtype)
    return FwdLap(x, tf.reshape(tf.linalg.diag(a), [1, n * d, n, d]), None)


# -- linear and affine maps ------------------------------------------------------------

def linear(t: FwdLap, fn) -> FwdLap:
    """A linear map ``fn`` acting on the trailing (non-walker) axes only.

    fn must accept any number of leading axes (use negative axes): it is applied to
    value, jac and lap alike, e.g. ``lambda a: tf.gather(a, idx, axis=-2)``.
    """
    return FwdLap(fn(t.value), fn(t.jac), None if t.lap is None else fn(t.lap))


def shift(t: FwdLap, b) -> FwdLap:
    """h + b for b constant in x (a bias, a parameter)."""
    return FwdLap(t.value + b, t.jac, t.lap)


def scale(t: FwdLap, s) -> FwdLap:
    """s h for s constant in x (a scalar or a tensor broadcasting over value's shape)."""
    s = tf.convert_to_tensor(s, dtype=t.value.dtype)
    js = _tangent_axis(s) if s.shape.rank == t.value.shape.rank else s
    return FwdLap(s * t.value, js * t.jac, None if t.lap is None else s * t.lap)


def dense(t: FwdLap, w, b=None) -> FwdLap:
    """h W + b on the last axis: W (n_in, n_out)."""
    out = linear(t, lambda a: tf.tensordot(a, w, axes=1))
    return out if b is None else shift(out, b)


def reduce_sum(t: FwdLap, axis: int = -1, keepdims: bool = False) -> FwdLap:
    """Sum over a trailing axis of value (negative ``axis``)."""
    assert axis < 0, "axis must count from the end (the walker axis is never reduced)"
    return linear(t, lambda a: tf.reduce_sum(a, axis=axis, keepdims=keepdims))


def reduce_mean(t: FwdLap, axis: int = -1, keepdims: bool = False) -> FwdLap:
    """Mean over a trailing axis of value (negative ``axis``)."""
    assert axis < 0, "axis must count from the end (the walker axis is never reduced)"
    return linear(t, lambda a: tf.reduce_mean(a, axis=axis, keepdims=keepdims))


def reshape(t: FwdLap, shape: list[int]) -> FwdLap:
    """Reshape the trailing axes (value (W, *S) -> (W, *shape))."""
    k = t.jac.shape[1]
    return FwdLap(tf.reshape(t.value, [-1, *shape]), tf.reshape(t.jac, [-1, k, *shape]),
                  None if t.lap is None else tf.reshape(t.lap, [-1, *shape]))


def _walkers(a: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """a with its leading dimension broadcast to like's (W)."""
    if a.shape[0] == like.shape[0] and a.shape[0] is not None:
        return a
    return tf.broadcast_to(a, tf.concat([tf.shape(like)[:1], tf.shape(a)[1:]], axis=0))


def concat(ts: list[FwdLap], axis: int = -1) -> FwdLap:
    """Concatenate along a trailing axis (negative ``axis``)."""
    assert axis < 0
    value = tf.concat([t.value for t in ts], axis=axis)
    jac = tf.concat([_walkers(t.jac, t.value) for t in ts], axis=axis)
    if all(t.lap is None for t in ts):
        return FwdLap(value, jac, None)
    laps = [tf.zeros_like(t.value) if t.lap is None else _walkers(t.lap, t.value) for t in ts]
    return FwdLap(value, jac, tf.concat(laps, axis=axis))


def stack(ts: list[FwdLap], axis: int = -1) -> FwdLap:
    """Stack along a new trailing axis (negative ``axis``)."""
    assert axis < 0
    return concat([linear(t, lambda a: tf.expand_dims(a, axis)) for t in ts], axis=axis)


def add(a: FwdLap, b: FwdLap) -> FwdLap:
    return FwdLap(a.value + b.value, a.jac + b.jac, _add_lap(a.lap, b.lap))


def sub(a: FwdLap, b: FwdLap) -> FwdLap:
    return add(a, scale(b, -1.0))


# -- nonlinear rules --------------------------------------------------------------------

def elementwise(t: FwdLap, f, df, d2f) -> FwdLap:
    """f(h) from the values f(h), f'(h), f''(h) (tensors of value's shape)."""
    jac = _tangent_axis(df) * t.jac
    lap = d2f * _sum_sq(t.jac)
    if t.lap is not None:
        lap = lap + df * t.lap
    return FwdLap(f, jac, lap)


def multiply(a: FwdLap, b: FwdLap) -> FwdLap:
    """The product a b (the product rule: L = a L_b + b L_a + 2 sum_k J_a J_b)."""
    lap = 2.0 * tf.reduce_sum(a.jac * b.jac, axis=1)
    if a.lap is not None:
        lap = lap + b.value * a.lap
    if b.lap is not None:
        lap = lap + a.value * b.lap
    return FwdLap(a.value * b.value,
                  _tangent_axis(a.value) * b.jac + _tangent_axis(b.value) * a.jac, lap)


def square(t: FwdLap) -> FwdLap:
    return elementwise(t, t.value * t.value, 2.0 * t.value, 2.0)


def exp(t: FwdLap) -> FwdLap:
    e = tf.exp(t.value)
    return elementwise(t, e, e, e)


def log(t: FwdLap) -> FwdLap:
    inv = 1.0 / t.value
    return elementwise(t, tf.math.log(t.value), inv, -inv * inv)


def log_abs(t: FwdLap) -> FwdLap:
    """log|h| (a signed amplitude's log: grad J/h, Laplacian L/h - sum_k (J_k/h)^2)."""
    inv = 1.0 / t.value
    return elementwise(t, tf.math.log(tf.abs(t.value)), inv, -inv * inv)


def reciprocal(t: FwdLap) -> FwdLap:
    inv = 1.0 / t.value
    return elementwise(t, inv, -inv * inv, 2.0 * inv * inv * inv)


def sqrt(t: FwdLap) -> FwdLap:
    s = tf.sqrt(t.value)
    ds = 0.5 / s
    return elementwise(t, s, ds, -ds / (2.0 * t.value))


def norm(t: FwdLap) -> FwdLap:
    """|h| over the last axis (a distance): sqrt(sum h^2)."""
    return sqrt(reduce_sum(square(t), axis=-1))


def logsumexp(t: FwdLap, axis: int = -1) -> FwdLap:
    """log sum_j exp(h_j) over a trailing axis."""
    assert axis < 0
    value = tf.reduce_logsumexp(t.value, axis=axis)
    p = tf.exp(t.value - tf.expand_dims(value, axis))  # softmax, value's shape
    jac = tf.reduce_sum(_tangent_axis(p) * t.jac, axis=axis)
    inner = _sum_sq(t.jac) if t.lap is None else t.lap + _sum_sq(t.jac)
    lap = tf.reduce_sum(p * inner, axis=axis) - _sum_sq(jac)
    return FwdLap(value, jac, lap)


def safe_norm(t: FwdLap, keepdims: bool = False) -> FwdLap:
    """|h| over the last axis, as distvmc.wavefunctions.ferminet.safe_norm: where h = 0
    the value, Jacobian and Laplacian are 0 (not NaN), the derivatives TensorFlow gives
    that function there."""
    s = reduce_sum(square(t), axis=-1, keepdims=keepdims)
    pos = s.value > 0.0
    zero = 0.0 * s.value
    safe = tf.where(pos, s.value, zero + 1.0)
    r = tf.sqrt(safe)
    ds = 0.5 / r
    return elementwise(s, tf.where(pos, r, zero), tf.where(pos, ds, zero),
                       tf.where(pos, -ds / (2.0 * safe), zero))


def signed_logsumexp(sign: tf.Tensor, t: FwdLap, weights=None) -> FwdLap:
    """log|sum_d w_d s_d exp(h_d)| over the last axis (as slater.signed_logsumexp), the
    signs s_d (value's shape) and weights w_d (last axis) constant in x.

    With psi = sum_d c_d e^{h_d}, c_d = w_d s_d, and the signed weights
    p_d = c_d e^{h_d} / psi (they sum to 1 but may be negative or exceed 1):
    grad log|psi| = sum_d p_d grad h_d, and from Delta e^{h} = e^{h} (Delta h + |grad h|^2),
    Delta log|psi| = Delta psi / psi - |grad log|psi||^2
                   = sum_d p_d (L_d + sum_k J_dk^2) - sum_k J_k^2:
    the log-sum-exp rule with p in place of the softmax. Where psi = 0 (log|psi| = -inf)
    p is set to 0 instead of 0/0."""
    m = tf.stop_gradient(tf.reduce_max(t.value, axis=-1, keepdims=True))
    m = tf.where(tf.math.is_finite(m), m, tf.zeros_like(m))
    terms = sign * tf.exp(t.value - m)
    if weights is not None:
        terms = terms * weights
    total = tf.reduce_sum(terms, axis=-1)
    value = m[..., 0] + tf.math.log(tf.abs(total))
    nonzero = tf.not_equal(total, 0.0)[..., None]
    p = tf.where(nonzero, terms / tf.where(nonzero, total[..., None], tf.ones_like(terms)),
                 tf.zeros_like(terms))
    jac = tf.reduce_sum(_tangent_axis(p) * t.jac, axis=-1)
    inner = _sum_sq(t.jac) if t.lap is None else t.lap + _sum_sq(t.jac)
    lap = tf.reduce_sum(p * inner, axis=-1) - _sum_sq(jac)
    return FwdLap(value, jac, lap)


def log_abs_det(a: FwdLap, logdet: tf.Tensor, inverse: tf.Tensor) -> FwdLap:
    """log|det A| of square matrices on the last two axes: value (W, *B, n, n) -> (W, *B).

    ``logdet`` (W, *B) is log|det A| and ``inverse`` (W, *B, n, n) is A^{-1}, both
    computed by the caller (slater's LU and guarded inverse). With J_k and L the
    Jacobian and Laplacian of A (matrices of A's shape), Jacobi's formula
    d log|det A| = tr(A^{-1} dA) and d(A^{-1}) = -A^{-1} dA A^{-1} give, per
    direction, d2 log|det A| = tr(A^{-1} d2A) - tr(A^{-1} dA A^{-1} dA), so

        J = tr(A^{-1} J_k),    L = tr(A^{-1} L_A) - sum_k tr(B_k B_k),  B_k = A^{-1} J_k,

    with tr(X Y) = sum_ab X_ab Y_ba. Cost per walker K n^3 (the products B_k);
    memory O(K n^2). Where A is singular the caller passes A^{-1} = 0: J = L = 0,
    as slater's guarded gradient gives."""
    b = tf.matmul(inverse[:, None], a.jac)  # (W, K, *B, n, n)
    jac = tf.linalg.trace(b)
    lap = -tf.reduce_sum(b * tf.linalg.matrix_transpose(b), axis=[-2, -1])  # (W, K, *B)
    lap = tf.reduce_sum(lap, axis=1)
    if a.lap is not None:
        lap = lap + tf.reduce_sum(inverse * tf.linalg.matrix_transpose(a.lap), axis=[-2, -1])
    return FwdLap(logdet, jac, lap)


def _normal_pdf(h):
    return tf.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)


def _activation_derivatives(name: str, h: tf.Tensor):
    """(f(h), f'(h), f''(h)) of a named activation (distvmc.wavefunctions.mlp.ACTIVATIONS).

    f(h) is computed by the same TensorFlow function the factors use."""
    if name == "tanh":
        t = tf.tanh(h)
        d = 1.0 - t * t
        return t, d, -2.0 * t * d
    if name == "sigmoid":
        s = tf.sigmoid(h)
        d = s * (1.0 - s)
        return s, d, d * (1.0 - 2.0 * s)
    if name == "softplus":
        s = tf.sigmoid(h)
        return tf.nn.softplus(h), s, s * (1.0 - s)
    if name == "silu":
        s = tf.sigmoid(h)
        return tf.nn.silu(h), s * (1.0 + h * (1.0 - s)), s * (1.0 - s) * (2.0 + h * (1.0 - 2.0 * s))
    if name == "gelu":  # exact gelu h Phi(h), tf.nn.gelu's default
        # Phi as tf.nn.gelu computes it (erfc, not 1 + erf: TensorFlow's float64 erf and
        # erfc differ by ~1e-9, and derivatives of the factor's own function are wanted)
        phi = _normal_pdf(h)
        cdf = 0.5 * tf.math.erfc(-h / math.sqrt(2.0))
        return tf.nn.gelu(h), cdf + h * phi, phi * (2.0 - h * h)
    if name == "cos":
        c = tf.cos(h)
        return c, -tf.sin(h), -c
    raise ValueError(f"no forward-Laplacian rule for activation {name!r}")


def activation(t: FwdLap, name: str) -> FwdLap:
    """A named activation applied elementwise (see the module docstring for f', f'')."""
    return elementwise(t, *_activation_derivatives(name, t.value))


# -- geometry -------------------------------------------------------------------------------

def pair_differences(x: FwdLap) -> FwdLap:
    """x_i - x_j for all pairs i < j: value (W, N, D) -> (W, N(N-1)/2, D)."""
    from distvmc.systems.pairs import pair_indices

    i, j = pair_indices(x.value.shape[1])
    return linear(x, lambda a: tf.gather(a, i, axis=-2) - tf.gather(a, j, axis=-2))


def pair_distances(x: FwdLap) -> FwdLap:
    """|x_i - x_j| for all pairs i < j (as distvmc.systems.pairs.pair_distances):
    value (W, N, D) -> (W, N(N-1)/2)."""
    return norm(pair_differences(x))


def centre_distances(x: FwdLap, centres: np.ndarray) -> FwdLap:
    """|x_i - R_K| for every particle and centre (as distvmc.systems.pairs.centre_distances):
    value (W, N, D) -> (W, N, K); centres (K, D)."""
    r = tf.constant(centres, dtype=x.value.dtype)  # (K, D)
    k = r.shape[0]
    return norm(shift(linear(x, lambda a: tf.repeat(tf.expand_dims(a, -2), k, axis=-2)), -r))


# -- sub-networks of one particle or one pair -------------------------------------------------

def per_item(x: FwdLap, mix: np.ndarray, fn, pool: bool = False) -> FwdLap:
    """``fn`` applied item by item to y_i = sum_n mix[n, i] x_n, each item's derivatives
    carried in its own D directions (the sparsity of per-particle and per-pair networks).

    A function F of y_i alone (a particle's DeepSets phi, a pair's network of x_i - x_j)
    has the global derivatives dF/dx_ne = mix[n, i] dF/dy_e and
    d2F/dx_ne^2 = mix[n, i]^2 d2F/dy_e^2, so fn runs with D tangents instead of N*D,
    seeded with sqrt(w_ie), w_ie = sum_n a_ne^2 mix[n, i]^2 (a the seed's weights): its
    Laplacian is then already the global one, and its Jacobian is expanded to the N*D
    directions once, at the end (summed over items with ``pool``). This is the
    N-fold saving of LapNet's sparse Jacobians.

    Args:
      x: the seeded coordinates (:func:`coordinates`), value (W, N, D).
      mix: (N, I), e.g. the identity (particles), e_i - e_j per pair, or the centring
        matrix delta_ni - 1/N (x_i - x_cm).
      fn: FwdLap value (W, I, D) -> FwdLap value (W, I, *S), acting on each item (axis 1)
        separately.
      pool: return the sum over items.

    Returns:
      value (W, I, *S), or (W, *S) with ``pool``.
    """
    n, d = x.value.shape[1], x.value.shape[2]
    dtype = x.value.dtype
    a = _seed_weights(x)  # (N, D)
    m = tf.constant(mix, dtype)  # (N, I)
    items = m.shape[1]
    sw = tf.sqrt(tf.einsum("nd,ni->id", a * a, m * m))  # (I, D)
    seed = tf.einsum("ie,ed->eid", sw, tf.eye(d, dtype=dtype))[None]  # (1, D, I, D)
    out = fn(FwdLap(tf.einsum("wnd,ni->wid", x.value, m), seed, None))
    shape = out.value.shape[2:]
    f = int(np.prod(shape)) if shape else 1
    safe = tf.where(sw > 0, sw, tf.ones_like(sw))
    coef = tf.where(sw > 0, 1.0 / safe, tf.zeros_like(sw))  # (I, D)
    coef = a[:, :, None] * m[:, None, :] * tf.transpose(coef)[None]  # (N, D, I)
    jac = tf.reshape(out.jac, [-1, d, items, f])
    if pool:
        jac = tf.einsum("nei,weif->wnef", coef, jac)
        lap = None if out.lap is None else tf.reduce_sum(out.lap, axis=1)
        return FwdLap(tf.reduce_sum(out.value, axis=1), tf.reshape(jac, [-1, n * d, *shape]), lap)
    jac = tf.einsum("nei,weif->wneif", coef, jac)
    return FwdLap(out.value, tf.reshape(jac, [-1, n * d, items, *shape]), out.lap)


def pair_mix(n: int) -> np.ndarray:
    """(N, N(N-1)/2): column p is e_i - e_j for pair p = (i, j), i < j."""
    from distvmc.systems.pairs import pair_indices

    i, j = pair_indices(n)
    m = np.zeros((n, len(i)))
    m[i, np.arange(len(i))] = 1.0
    m[j, np.arange(len(i))] = -1.0
    return m


def _seed_weights(x: FwdLap) -> tf.Tensor:
    """The seed's a_ne (N, D) of the coordinates x (:func:`coordinates`)."""
    assert x.lap is None and x.jac.shape[0] == 1, "needs the seeded coordinates"
    n, d = x.value.shape[1], x.value.shape[2]
    return tf.reshape(tf.linalg.diag_part(tf.reshape(x.jac, [n * d, n * d])), [n, d])


def _pair_seed_widths(a: tf.Tensor) -> tf.Tensor:
    """sqrt(w_ije) = sqrt(a_ie^2 + a_je^2) for every ordered pair, 0 on the diagonal
    (y_ii = 0 identically): (N, D) -> (N, N, D)."""
    n = a.shape[0]
    off = tf.constant(1.0 - np.eye(n), a.dtype)[..., None]
    return tf.sqrt(a[:, None, :] ** 2 + a[None, :, :] ** 2) * off


def ordered_pairs(x: FwdLap) -> FwdLap:
    """y_ij = x_i - x_j for every ordered pair, the diagonal included, in pair-local form.

    value (W, N, N, D); jac (1, D, N, N, D): each pair's derivatives in its own D
    directions, seeded like :func:`per_item` with sqrt(w_ije), w_ije = a_ie^2 + a_je^2
    (0 on the diagonal, where y_ii = 0 identically). Functions of one pair applied to
    it (FermiNet's two-electron stream) keep this form at D / (N D) of the dense
    cost; :func:`mean_over_partners` expands it to the N*D directions.
    """
    d = x.value.shape[2]
    sw = _pair_seed_widths(_seed_weights(x))  # (N, N, D)
    seed = tf.einsum("ije,ed->eijd", sw, tf.eye(d, dtype=x.value.dtype))[None]
    return FwdLap(x.value[:, :, None, :] - x.value[:, None, :, :], seed, None)


def mean_over_partners(g: FwdLap, x: FwdLap, start: int, count: int) -> FwdLap:
    """m_i = mean_{start <= j < start + count} g_ij of a pair-local g (:func:`ordered_pairs`
    form, value (W, N, N, F), jac (W, D, N, N, F)): value (W, N, F), jac (W, N*D, N, F).

    g_ij = G(y_ij), y_ij = x_i - x_j, has dg_ij/dx_me = (delta_mi - delta_mj) dG/dy_e;
    its carried jac is Jc_eij = sqrt(w_ije) dG/dy_e, so the weighted global Jacobian is
    a_me (delta_mi - delta_mj) Jc_eij / sqrt(w_ije): a term on the diagonal m = i
    (summed over partners j) and one at m = j. The Laplacian is already the global
    one (w_ije = a_ie^2 + a_je^2) and is averaged as it is. Work O(N^2 D F).
    """
    n, d = x.value.shape[1], x.value.shape[2]
    dtype = x.value.dtype
    a = _seed_weights(x)
    sw = _pair_seed_widths(a)
    pos = sw > 0
    safe = tf.where(pos, sw, tf.ones_like(sw))
    c_i = tf.where(pos, a[:, None, :] / safe, tf.zeros_like(sw))[:, start:start + count] / count
    c_j = tf.where(pos, a[None, :, :] / safe, tf.zeros_like(sw))[:, start:start + count] / count
    jc = g.jac[:, :, :, start:start + count]  # (W, D, N, c, F)
    diag = tf.einsum("ije,weijf->weif", c_i, jc)  # (W, D, N, F), at m = i
    part = -tf.einsum("ije,weijf->wjeif", c_j, jc)  # (W, c, D, N, F), at m = j
    jac = tf.einsum("weif,mi->wmeif", diag, tf.eye(n, dtype=dtype))
    jac = jac + tf.pad(part, [[0, 0], [start, n - start - count], [0, 0], [0, 0], [0, 0]])
    f = g.value.shape[-1]
    value = tf.reduce_mean(g.value[:, :, start:start + count], axis=2)
    lap = None if g.lap is None else tf.reduce_mean(g.lap[:, :, start:start + count], axis=2)
    return FwdLap(value, tf.reshape(jac, [-1, n * d, n, f]), lap)


# -- wavefunctions ------------------------------------------------------------------------

def has_rules(obj) -> bool:
    """Whether a factor (or wavefunction) implements ``forward_laplacian``."""
    return callable(getattr(obj, "forward_laplacian", None))


def hessian_fallback(log_abs_fn, x: FwdLap) -> FwdLap:
    """The triple of a scalar function of the seeded coordinates by the reverse-mode Hessian.

    ``log_abs_fn``: (W, N, D) -> (W,). Needs x as :func:`coordinates` makes it (jac
    walker-independent with orthogonal columns, lap zero), so that the weighted
    Laplacian is sum_i (sum_k J_ki^2) d2u/dx_i^2: only the Hessian's diagonal.
    """
    from distvmc.hamiltonian import grad_and_diag_hessian

    assert x.lap is None and x.jac.shape[0] == 1, "the fallback differentiates the coordinates"
    k = x.jac.shape[1]
    a = tf.reshape(x.jac, [k, -1])  # (K, N*D)
    g, h = grad_and_diag_hessian(log_abs_fn, x.value, "hessian")  # (W, N*D) each
    u = log_abs_fn(x.value)
    return FwdLap(u, tf.matmul(g, a, transpose_b=True),
                  tf.reduce_sum(h * tf.reduce_sum(a * a, axis=0), axis=1))


def is_factor_sum(wf) -> bool:
    """Whether log|psi| of ``wf`` is the sum of its factors' logs (a plain Wavefunction)."""
    from distvmc.wavefunctions.wavefunction import Wavefunction

    return isinstance(wf, Wavefunction) and type(wf).log_abs is Wavefunction.log_abs


def factor_log_abs(factor, x: FwdLap) -> FwdLap:
    """log|factor| (W,) by its own rules, or by :func:`hessian_fallback` without them."""
    from distvmc.wavefunctions.wavefunction import factor_log_abs as plain

    if has_rules(factor):
        return factor.forward_laplacian(x)
    return hessian_fallback(lambda y: plain(factor, y), x)


def log_abs_of(wf, x: FwdLap) -> FwdLap:
    """log|psi| (W,) of a wavefunction: its own ``forward_laplacian`` if it has one, else
    the sum over its factors (gradients and Laplacians add), else the Hessian fallback
    for the whole of ``wf.log_abs``."""
    if has_rules(wf):
        return wf.forward_laplacian(x)
    if is_factor_sum(wf):
        out = None
        for f in wf.factors:
            t = factor_log_abs(f, x)
            out = t if out is None else add(out, t)
        return out
    return hessian_fallback(getattr(wf, "log_abs", wf), x)


def without_rules(wf) -> list[str]:
    """Names of the parts of ``wf`` that :func:`log_abs_of` differentiates by the Hessian."""
    if has_rules(wf):
        return [n for part in getattr(wf, "forward_parts", lambda: [])() for n in without_rules(part)]
    if is_factor_sum(wf):
        return [getattr(f, "name", type(f).__name__) for f in wf.factors if not has_rules(f)]
    return [getattr(wf, "name", type(wf).__name__)]


def kinetic(wf, x: tf.Tensor, kinetic_prefactor) -> tf.Tensor:
    """Local kinetic energy -sum_i c_i (d2u/dx_i^2 + (du/dx_i)^2), u = log|psi|: shape (W,).

    x: (W, N, D); kinetic_prefactor: c = hbar^2/(2 m) per particle, shape (N,)."""
    d = x.shape[2]
    a = np.sqrt(np.repeat(np.asarray(kinetic_prefactor, dtype=np.float64), d))
    u = log_abs_of(wf, coordinates(x, a))
    return -(u.lap + _sum_sq(u.jac))
