"""Per-sample log-derivatives O_k(x) = d log|psi(x)| / d theta_k.

Two ways to the same (S, P) matrix, whose columns are the flattened
``wavefunction.parameters`` in order:

``vmap``
    ``tf.vectorized_map`` over samples of a per-sample gradient. General (any
    factor), but it materializes O in TensorFlow through pfor's per-sample graph:
    0.2 s for helium's 4096 x 4.7k.

``outer``
    One batched backward pass and per-layer outer products. Every network layer
    goes through :func:`distvmc.wavefunctions.capture.linear` (``y = x W + b``);
    while O is traced it records each call's input x and has the tape watch its
    output y. The gradient G = d sum_s log|psi(x_s)| / d y of the batch is per
    sample (walkers are independent), so

        dW[s] = sum_r x[s, r]^T G[s, r],   db[s] = sum_r G[s, r]

    (r: the particle, pair or permutation axes between the sample axis and the
    features; all calls of a layer summed). TensorFlow returns only x and G; the
    outer products are written straight into the NumPy result (``np.matmul`` into
    a view of O's columns), so O is written once. Parameters outside such layers
    (envelope exponents, Jastrow, kappa, projection coefficients, ...) get their
    columns from ``vectorized_map`` restricted to them, which only differentiates
    the part of psi they enter (graph pruning).

``auto`` (default) is ``outer`` after a self-check: on its first call it
compares the ``outer`` rows of the first few samples with plain per-sample
gradients (batches of one) and falls back to ``vmap`` for good, saying so in
one log line, when they differ by more than ``TOLERANCE`` relative to the
largest |O| (a layer called on a non-sample-major layout, a layer's weights
read outside ``linear``, samples coupled by the batch, ...) or when the
``outer`` route fails to run.

``tensor(x)`` is the device-resident twin of ``__call__(x)``, for GPUs: the same O
(same route, self-check and fallback; bitwise for ``vmap``, equal to rounding for
``outer``) as a float64 ``tf.Tensor`` on the device TensorFlow places it, nothing of
size S x P copied to the host. Its ``outer`` assembly is a second compiled function
(``_Outer.fn_tensor``): per layer a batched matmul x^T G, reshaped to the columns
``fill`` writes, and one ``tf.concat`` in column order. The SR path
``optimizer.linear_algebra: device`` uses it; ``__call__`` stays the host path for
the NumPy linear algebra, since there the tensor would have to be copied out. On a
CPU that copy costs what the TensorFlow assembly saves: helium's MLP 6-64-64-1 tanh
on the coordinates times the exponential envelope (4673 parameters), 4096 samples,
2-core CPU, TF 2.21, best of 10, ``auto`` (= ``outer``): ``__call__`` 42 ms,
``tensor()`` 20 ms, ``tensor().numpy()`` 41 ms (``vmap``: 41, 20 ms). TensorFlow's
float64 outer products are thus not slower than NumPy's there; ``__call__`` is
bound by writing a freshly allocated 150 MB array.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from distvmc.wavefunctions.capture import Recording


def wavefunction_shape(wavefunction) -> tuple[int, int]:
    """(N, D) of the configurations a wavefunction takes."""
    return wavefunction.config_shape


CHUNK_NUMBERS = 1 << 25  # at most 32M numbers (256 MB in float64) of O per compiled call
METHODS = ("auto", "outer", "vmap")


def _flat_gradient(wavefunction, variables):
    """xi (N, D) -> d log|psi(xi)| / d variables, flattened and concatenated (P_v,)."""
    def one(xi):
        with tf.GradientTape() as tape:
            u = wavefunction.log_abs(xi[None])[0]
        g = tape.gradient(u, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.concat([tf.reshape(gk, [-1]) for gk in g], axis=0)

    return one


class _Outer:
    """The ``outer`` route: a traced function returning the per-layer factors, and the
    NumPy assembly of O from them (see the module docstring).

    The plan (which variables are captured, and the column ranges) is fixed when the
    function is traced, on the first call. ``fn_tensor`` is the second compiled
    function: ``_parts`` plus the assembly of O in TensorFlow (:meth:`_tensor`), for
    :meth:`LogDerivatives.tensor`; its trace sets the same plan.
    """

    def __init__(self, wavefunction, params, spec):
        self.wf, self.params = wavefunction, params
        self.columns = {}
        k = 0
        for v in params:
            n = int(np.prod(v.shape))
            self.columns[id(v)] = (k, k + n)
            k += n
        self.plan = None  # [("w", var) | ("block", var) | ("rest", [vars])], set at trace time
        self.captured: list = []
        self.rest: list = []
        self.fn = tf.function(self._parts, input_signature=[spec], autograph=False)
        self.fn_tensor = tf.function(self._tensor, input_signature=[spec], autograph=False)

    def _parts(self, x):
        s = tf.shape(x)[0]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            with Recording(tape, self.params) as rec:
                total = tf.reduce_sum(self.wf.log_abs(x))
        roles: dict[int, set] = {}
        for c in rec.calls:
            roles.setdefault(id(c.w), set()).add("w" if c.x is not None else "read")
            if c.b is not None:
                roles.setdefault(id(c.b), set()).add("b")
        captured = [v for v in self.params
                    if len(roles.get(id(v), ())) == 1 and id(v) not in rec.other]
        ids = {id(v) for v in captured}
        rest = [v for v in self.params if id(v) not in ids]
        calls = [c for c in rec.calls if id(c.w) in ids or (c.b is not None and id(c.b) in ids)]
        grads = tape.gradient(total, [c.y for c in calls],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        factors: dict[int, list] = {}
        for c, g in zip(calls, grads):
            if c.x is None:  # a per_sample read: g is (S, 1, ..., *shape)
                factors.setdefault(id(c.w), []).append(tf.reshape(g, [s, -1]))
                continue
            g = tf.reshape(g, [s, -1, g.shape[-1]])  # (S, R, n_out), sample-major
            if id(c.w) in ids:
                factors.setdefault(id(c.w), []).append((tf.reshape(c.x, [s, -1, c.x.shape[-1]]), g))
            if c.b is not None and id(c.b) in ids:
                factors.setdefault(id(c.b), []).append(tf.reduce_sum(g, axis=1))
        outputs, plan = [], []
        for v in captured:
            f = factors[id(v)]
            if roles[id(v)] == {"w"}:
                outputs += [tf.concat([a for a, _ in f], axis=1) if len(f) > 1 else f[0][0],
                            tf.concat([b for _, b in f], axis=1) if len(f) > 1 else f[0][1]]
                plan.append(("w", v))
            else:  # a bias or per_sample reads: the (S, size) block itself
                outputs.append(tf.add_n(f))
                plan.append(("block", v))
        if rest:
            outputs.append(tf.vectorized_map(_flat_gradient(self.wf, rest), x))
            plan.append(("rest", rest))
        self.plan, self.captured, self.rest = plan, captured, rest
        return outputs

    def _tensor(self, x):
        """O (S, P) of the samples x assembled in TensorFlow (the body of ``fn_tensor``):
        the same columns as :meth:`fill` writes, without leaving the device."""
        parts = self._parts(x)
        plan = self.plan  # set by the _parts call just made: this trace's plan
        s = tf.shape(x)[0]
        pieces = []  # (first column, (S, n) block)
        i = 0
        for kind, v in plan:
            if kind == "w":
                xs, gs = parts[i], parts[i + 1]  # (S, R, in), (S, R, out)
                i += 2
                # sum_r x[s, r]^T G[s, r]: (S, in, out), row-major as fill writes it. (Also
                # for R = 1: TensorFlow's batched matmul beats its broadcast product there.)
                block = tf.matmul(xs, gs, adjoint_a=True)
                pieces.append((self.columns[id(v)][0], tf.reshape(block, [s, -1])))
            elif kind == "block":
                pieces.append((self.columns[id(v)][0], parts[i]))
                i += 1
            else:
                block = parts[i]
                i += 1
                k = 0
                for w in v:
                    a, b = self.columns[id(w)]
                    pieces.append((a, block[:, k:k + b - a]))
                    k += b - a
        pieces.sort(key=lambda p: p[0])  # plan order is not column order ("rest" interleaves)
        blocks = [b for _, b in pieces]
        return tf.concat(blocks, axis=1) if len(blocks) > 1 else tf.identity(blocks[0])

    def trace(self):
        """Trace the function (fixing the plan) without running it."""
        self.fn.get_concrete_function()

    def fill(self, out: np.ndarray, x) -> None:
        """Write O of the samples x (S, N, D) into out (S, P) (a view is fine)."""
        parts = self.fn(x)
        s = out.shape[0]
        i = 0
        for kind, v in self.plan:
            if kind == "w":
                xs, gs = np.asarray(parts[i]), np.asarray(parts[i + 1])  # (S, R, in), (S, R, out)
                i += 2
                a, b = self.columns[id(v)]
                view = out[:, a:b].reshape(s, *v.shape)
                if xs.shape[1] == 1:
                    np.multiply(xs[:, 0, :, None], gs[:, 0, None, :], out=view)
                else:
                    np.matmul(xs.transpose(0, 2, 1), gs, out=view)
            elif kind == "block":
                a, b = self.columns[id(v)]
                out[:, a:b] = np.asarray(parts[i])
                i += 1
            else:
                block = np.asarray(parts[i])
                i += 1
                k = 0
                for w in v:
                    a, b = self.columns[id(w)]
                    out[:, a:b] = block[:, k:k + b - a]
                    k += b - a


class LogDerivatives:
    """Compiled, chunked O matrix of a wavefunction.

    ``__call__(x)`` with x of shape (S, N, D) returns O of shape (S, P) as a
    float64 NumPy array, computing at most ``chunk_size`` rows (and at most
    2^25 numbers) at a time; ``tensor(x)`` returns the same O as a float64
    ``tf.Tensor`` that stays on the device. Each route's function is traced once,
    not per iteration.

    Args:
      wavefunction: the :class:`~distvmc.wavefunctions.Wavefunction` (or any object
        with ``parameters``, ``n_parameters``, ``config_shape`` and ``log_abs``).
      chunk_size: most rows per compiled call.
      method: ``auto`` (``outer`` after the self-check, else ``vmap``), ``outer``
        (no self-check) or ``vmap``; see the module docstring.
      log: where the one-line fallback note goes (``None``: nowhere).

    Attributes:
      method: the route in use: ``outer`` or ``vmap`` (``None`` until the first call
        of ``auto`` decides).
      fallback: why ``auto`` fell back to ``vmap`` (``None`` if it did not).
    """

    TOLERANCE = {tf.float64: 1e-10, tf.float32: 1e-4}  # self-check, relative to max |O|
    CHECK_ROWS = 8

    def __init__(self, wavefunction, chunk_size: int = 16384, method: str = "auto", log=print):
        if method not in METHODS:
            raise ValueError(f"LogDerivatives method {method!r}: one of {', '.join(METHODS)}")
        self.wf = wavefunction
        self.chunk_size = chunk_size
        self.log = log
        params = wavefunction.parameters
        self.params = params
        self.n_parameters = wavefunction.n_parameters
        self.dtype = params[0].dtype
        shape = list(wavefunction_shape(wavefunction))
        self._spec = tf.TensorSpec([None] + shape, self.dtype)
        self.requested = method
        self.method = "vmap" if method == "vmap" else ("outer" if method == "outer" else None)
        self.fallback: str | None = None

        # vectorized_map over samples of a per-sample gradient: the batched backward
        # pass costs O(S P). (tape.jacobian of the batched log|psi| costs O(S^2 P),
        # because each row's backward pass runs over the whole batch.)
        self._jac = tf.function(lambda x: tf.vectorized_map(_flat_gradient(wavefunction, params), x),
                                input_signature=[self._spec])
        self._outer = _Outer(wavefunction, params, self._spec) if method != "vmap" else None

    # -- routes ----------------------------------------------------------------
    def _fill(self, out: np.ndarray, x) -> None:
        if self.method == "outer":
            self._outer.fill(out, x)
        else:
            out[...] = np.asarray(self._jac(x))

    def _reference(self, x) -> np.ndarray:
        """O by plain per-sample gradients (batches of one sample), (S, P)."""
        if not hasattr(self, "_one"):
            one = _flat_gradient(self.wf, self.params)
            self._one = tf.function(one, input_signature=[tf.TensorSpec(self._spec.shape[1:],
                                                                        self.dtype)])
        return np.stack([np.asarray(self._one(x[i])) for i in range(int(x.shape[0]))])

    def _fall_back(self, reason: str) -> None:
        self.method, self.fallback = "vmap", reason
        if self.log is not None:
            self.log(f"note: log-derivatives: outer-product route off ({reason}); "
                     f"using vectorized_map")

    def _decide(self, x) -> None:
        """``auto``: check ``outer`` against per-sample gradients on the first rows of x."""
        try:
            self._outer.trace()
        except Exception as e:  # noqa: BLE001  (any failure: the general route still works)
            self._fall_back(f"tracing failed: {type(e).__name__}: {e}".splitlines()[0][:200])
            return
        if not self._outer.captured:
            self.method = "vmap"  # no linear layers: outer would be vectorized_map anyway
            return
        rows = x[:self.CHECK_ROWS]
        fast = np.empty((int(rows.shape[0]), self.n_parameters))
        try:
            self._outer.fill(fast, rows)
        except Exception as e:  # noqa: BLE001
            self._fall_back(f"failed: {type(e).__name__}: {e}".splitlines()[0][:200])
            return
        ref = self._reference(rows)
        same = np.isfinite(ref) == np.isfinite(fast)
        ok = np.isfinite(ref)
        scale = float(np.max(np.abs(ref[ok]))) if ok.any() else 0.0
        err = float(np.max(np.abs(fast[ok] - ref[ok]))) if ok.any() else 0.0
        tol = self.TOLERANCE.get(self.dtype, 1e-10) * max(scale, np.finfo(np.float64).tiny)
        if not same.all() or err > tol:
            index = {id(v): i for i, v in enumerate(self.params)}
            bad = [f"parameter {index[id(v)]} ({v.name.split(':')[0]}, shape {tuple(v.shape)})"
                   for v in self._outer.captured
                   if not np.allclose(*(o[:, slice(*self._outer.columns[id(v)])]
                                        for o in (fast, ref)), rtol=0.0, atol=tol)]
            self._fall_back(f"self-check on {rows.shape[0]} samples: max |difference| "
                            f"{err:.1e} against max |O| {scale:.1e}"
                            + (f"; differing: {', '.join(bad[:4])}" if bad else ""))
            return
        self.method = "outer"

    def __call__(self, x) -> np.ndarray:
        """O (S, P) as a float64 NumPy array that this call owns (writeable, C order).

        Rows are computed ``chunk_size`` at a time straight into the result, so the
        peak memory is O itself plus one chunk's intermediates."""
        x = tf.convert_to_tensor(x)
        s = int(x.shape[0])
        out = np.empty((s, self.n_parameters), dtype=np.float64)
        rows = self._rows()
        if self.method is None and s > 0:
            self._decide(x)
        for i in range(0, s, rows):
            if self.method == "outer" and self.requested == "auto":
                try:
                    self._fill(out[i:i + rows], x[i:i + rows])
                    continue
                except tf.errors.InvalidArgumentError as e:  # e.g. a layout that stops reshaping
                    self._fall_back(f"failed: {type(e).__name__}: {e}".splitlines()[0][:200])
            self._fill(out[i:i + rows], x[i:i + rows])
        return out

    def _rows(self) -> int:
        """Most rows of O per compiled call."""
        return max(1, min(self.chunk_size, CHUNK_NUMBERS // max(self.n_parameters, 1)))

    def _tensor_chunk(self, x) -> tf.Tensor:
        if self.method == "outer":
            o = self._outer.fn_tensor(x)
        else:
            o = self._jac(x)
        return tf.cast(o, tf.float64)  # the identity for a float64 wavefunction

    def tensor(self, x) -> tf.Tensor:
        """O (S, P) as a float64 ``tf.Tensor`` on the device TensorFlow places it (a
        float32 wavefunction's O cast there, as ``__call__`` returns float64).

        The device-resident twin of :meth:`__call__`: same route (``auto`` decides on
        the first call either way, with the same self-check), same fallback, same
        values (bitwise for ``vmap``; for ``outer`` the per-layer outer products are
        summed by TensorFlow instead of NumPy, equal to rounding). Nothing of size
        S x P is copied to the host. At most ``chunk_size`` rows (and 2^25 numbers)
        are computed per compiled call; when S exceeds that, the chunks are joined by
        ``tf.concat``, which holds two copies of O for a moment (a single call, no
        extra copy, when S fits in one chunk)."""
        x = tf.convert_to_tensor(x)
        s = int(x.shape[0])
        rows = self._rows()
        if self.method is None and s > 0:
            self._decide(x)
        chunks = []
        for i in range(0, s, rows):
            xi = x if s <= rows else x[i:i + rows]
            if self.method == "outer" and self.requested == "auto":
                try:
                    chunks.append(self._tensor_chunk(xi))
                    continue
                except tf.errors.InvalidArgumentError as e:  # as in __call__
                    self._fall_back(f"failed: {type(e).__name__}: {e}".splitlines()[0][:200])
            chunks.append(self._tensor_chunk(xi))
        if not chunks:
            return tf.zeros([0, self.n_parameters], tf.float64)
        return chunks[0] if len(chunks) == 1 else tf.concat(chunks, axis=0)


class JacobianProducts:
    """O v and O^T u without O: one forward-mode (jvp) or reverse-mode (vjp) pass of
    log|psi| through the network per product (``optimizer.o_matrix: recompute``).

    For P parameters and S samples the stored O costs 8 S P bytes (3.3 GB for 4096
    samples at P = 100k); these products need only a pass's intermediates, O(S x
    width), at the price of re-running the network for every CG step. Both are
    compiled once, ``chunk_size`` samples per call.

    ``jvp(x, v)`` is (S,): row s is O_s . v; ``vjp(x, u)`` is (P,): sum_s u_s O_s,
    in the parameter order of ``wavefunction.parameters`` (as O's columns).
    """

    def __init__(self, wavefunction, chunk_size: int = 16384):
        self.wf = wavefunction
        self.params = wavefunction.parameters
        self.n_parameters = wavefunction.n_parameters
        self.chunk_size = chunk_size
        dtype = self.params[0].dtype
        self.dtype = dtype
        spec_x = tf.TensorSpec([None] + list(wavefunction_shape(wavefunction)), dtype)
        self._jvp = tf.function(self._jvp_fn, input_signature=[
            spec_x, tf.TensorSpec([self.n_parameters], tf.float64)], autograph=False)
        self._vjp = tf.function(self._vjp_fn, input_signature=[
            spec_x, tf.TensorSpec([None], tf.float64)], autograph=False)

    def _jvp_fn(self, x, v):
        v = tf.cast(v, self.dtype)
        tangents, k = [], 0
        for p in self.params:
            n = int(np.prod(p.shape))
            tangents.append(tf.reshape(v[k:k + n], p.shape))
            k += n
        with tf.autodiff.ForwardAccumulator(self.params, tangents) as acc:
            y = self.wf.log_abs(x)
        return tf.cast(acc.jvp(y, unconnected_gradients=tf.UnconnectedGradients.ZERO),
                       tf.float64)

    def _vjp_fn(self, x, u):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self.params)
            y = self.wf.log_abs(x)
        g = tape.gradient(y, self.params, output_gradients=tf.cast(u, y.dtype),
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.cast(tf.concat([tf.reshape(gi, [-1]) for gi in g], axis=0), tf.float64)

    def jvp(self, x, v) -> tf.Tensor:
        s = int(x.shape[0])
        c = self.chunk_size
        if s <= c:
            return self._jvp(x, v)
        return tf.concat([self._jvp(x[i:i + c], v) for i in range(0, s, c)], axis=0)

    def vjp(self, x, u) -> tf.Tensor:
        s = int(x.shape[0])
        c = self.chunk_size
        if s <= c:
            return self._vjp(x, u)
        out = None
        for i in range(0, s, c):
            part = self._vjp(x[i:i + c], u[i:i + c])
            out = part if out is None else out + part
        return out


class ImplicitO:
    """This rank's centred O_c = O - 1 <O>^T as an operator (never formed).

    ``matvec(v)`` = O_c v (S,) and ``rmatvec(u)`` = O_c^T u (P,), each one network
    pass (:class:`JacobianProducts`); ``mean`` is the global <O> (P,). O_c^T u is
    O^T u - <O> sum_s u_s, written so for any u (the solvers' u are centred, where
    the second term is zero up to rounding).
    """

    def __init__(self, products: JacobianProducts, x, mean):
        self.products, self.x = products, x
        self.mean = tf.convert_to_tensor(mean, tf.float64)
        self.shape = (int(x.shape[0]), products.n_parameters)

    def matvec(self, v):
        v = tf.convert_to_tensor(v, tf.float64)
        return self.products.jvp(self.x, v) - tf.tensordot(self.mean, v, 1)

    def rmatvec(self, u):
        u = tf.convert_to_tensor(u, tf.float64)
        return self.products.vjp(self.x, u) - self.mean * tf.reduce_sum(u)
