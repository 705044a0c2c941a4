"""Local energy with the exact Laplacian.

With u = log|psi| the local energy of a configuration x (shape (N, D)) is

    E_L(x) = -sum_i hbar^2/(2 m_i) sum_d (d^2u/dx_id^2 + (du/dx_id)^2) + V(x).

The Laplacian needs the *diagonal* of the Hessian of u with respect to each
walker's own coordinates. (An outer GradientTape over an inner gradient of a
batch gives row sums of the Hessian instead: REFERENCE.md section 3.) Three
methods compute the diagonal exactly and are cross-checked in the tests:

``hessian`` (default)
    The full per-walker Hessian by ``batch_jacobian`` of the gradient, then
    its diagonal. XLA-compiled; the fastest of these three (benchmarks/helium_sr.py)
    for the small N*D of atoms and traps; memory O(walkers (N D)^2).
``fwd_over_rev``
    For each k, a forward-mode derivative (tangent e_k) of the reverse-mode
    gradient: the k-th Hessian column, of which entry k is kept.
``fwd_over_fwd``
    Nested forward-mode: for each coordinate k, push the tangent e_k through
    twice, giving du/dx_k and d^2u/dx_k^2 without any tape. Runs as a plain
    graph (see below) and about 3x slower. Its *values* are exact, but in
    TF 2.21 an outer GradientTape over it returns wrong parameter gradients,
    so never differentiate a local energy computed this way.

Two more choices compute the Laplacian itself rather than the Hessian diagonal:

``forward``
    The forward Laplacian (:mod:`distvmc.forward_laplacian`): one forward pass
    carries each intermediate's value, Jacobian and mass-weighted Laplacian.
    log|psi| is a sum of factors, so their gradients and Laplacians add; a
    factor without forward rules (a user plug-in) is differentiated by
    ``hessian`` on its own, which is logged once. Every bundled factor has
    rules, determinants included. XLA-compiled; memory O(walkers N D width).
    Parameter gradients through it are exact. 2.6-5x the local energies per
    second of ``hessian`` (helium MLP, alpha, Li, 2D dots with 6 and 12
    electrons: benchmarks/laplacian.py).
``auto``
    Times ``hessian`` and ``forward`` on the first batch of walkers (after
    compiling both) and keeps the faster (rank 0's choice, when ``agree`` is
    given); the choice and the timings are logged. fwd_over_rev and fwd_over_fwd are not candidates: they run
    uncompiled, several times slower.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from distvmc import forward_laplacian

METHODS = ("fwd_over_fwd", "fwd_over_rev", "hessian")  # Hessian-diagonal methods
EXACT_METHODS = METHODS + ("forward",)  # what local_energy accepts
CHOICES = EXACT_METHODS + ("auto",)  # what LocalEnergy (hamiltonian.laplacian) accepts
AUTO_CANDIDATES = ("hessian", "forward")
JIT_METHODS = ("hessian", "forward")  # the methods XLA compiles (see LocalEnergy)


def exact_shape_jvps() -> None:
    """Keep TensorFlow's eager forward mode on exact-shape JVPs (idempotent, cheap).

    Eager ``tf.autodiff.ForwardAccumulator`` traces each op's JVP function for the exact
    shapes it sees, but after 32 traces of one op type (``forwardprop._TRACE_COUNT_LIMIT``)
    it switches to relaxed-shape traces, which TensorFlow's own comment there calls
    "underspecialized" for gradients that use static shapes. They are wrong: with the
    limit at 0, the fwd_over_fwd and fwd_over_rev local energies of a FermiNet-style Li
    wavefunction differed from the reverse-mode Hessian by up to 25 Ha, and in a long test
    process the forward methods went wrong once enough ops had been traced. Exact-shape
    traces only cost a trace per new shape. Called by every forward-mode Laplacian, so a
    limit lowered after import is raised again before it can matter.
    """
    from tensorflow.python.eager import forwardprop

    if hasattr(forwardprop, "_TRACE_COUNT_LIMIT"):  # a private knob: absent, nothing to do
        forwardprop._TRACE_COUNT_LIMIT = 2 ** 62


def grad_and_diag_hessian(log_abs, x: tf.Tensor, method: str = "hessian"):
    """Gradient and Hessian diagonal of ``log_abs`` per walker.

    Args:
      log_abs: function (W, N, D) -> (W,).
      x: positions, shape (W, N, D).
      method: one of :data:`METHODS`.

    Returns:
      (grad, diag), each of shape (W, N*D): du/dx_k and d^2u/dx_k^2.
    """
    n, d = x.shape[1], x.shape[2]
    nd = n * d
    xf = tf.reshape(x, [-1, nd])
    # Avoid tf.shape() here: it breaks under nested forward accumulators in graphs.
    zeros = tf.zeros_like(xf)

    def f(flat):
        return log_abs(tf.reshape(flat, [-1, n, d]))

    def tangent(k):
        return zeros + tf.one_hot(k, nd, dtype=x.dtype)

    if method == "hessian":
        with tf.GradientTape() as outer:
            outer.watch(xf)
            with tf.GradientTape() as inner:
                inner.watch(xf)
                u = f(xf)
            g = inner.gradient(u, xf)
        h = outer.batch_jacobian(g, xf, experimental_use_pfor=True)  # (W, ND, ND)
        return g, tf.linalg.diag_part(h)

    exact_shape_jvps()  # forward-mode methods below: see its docstring

    if method == "fwd_over_rev":
        cols = []
        g = None
        for k in range(nd):
            with tf.autodiff.ForwardAccumulator(xf, tangent(k)) as acc:
                with tf.GradientTape() as tape:
                    tape.watch(xf)
                    u = f(xf)
                gk = tape.gradient(u, xf)
            cols.append(acc.jvp(gk)[:, k])
            g = gk if g is None else g
        return g, tf.stack(cols, axis=1)

    if method == "fwd_over_fwd":
        grads, diags = [], []
        for k in range(nd):
            t = tangent(k)
            with tf.autodiff.ForwardAccumulator(xf, t) as outer:
                with tf.autodiff.ForwardAccumulator(xf, t) as inner:
                    u = f(xf)
                du = inner.jvp(u)
            grads.append(du)
            diags.append(outer.jvp(du))
        return tf.stack(grads, axis=1), tf.stack(diags, axis=1)

    raise ValueError(f"unknown Laplacian method {method!r}; choose one of {METHODS}")


def local_energy(log_abs, potential, kinetic_prefactor: np.ndarray, x: tf.Tensor,
                 method: str = "hessian"):
    """Local energies, shape (W,), and their kinetic and potential parts.

    Args:
      log_abs: (W, N, D) -> (W,) log|psi|; for ``forward`` the wavefunction itself (or
        a factor), whose factors' forward rules are used (a plain function falls back
        to the Hessian).
      potential: (W, N, D) -> (W,) potential energy.
      kinetic_prefactor: hbar^2/(2 m_i), shape (N,).
      x: (W, N, D).
      method: one of :data:`EXACT_METHODS`.

    Returns:
      (e_loc, kinetic, potential), each of shape (W,).
    """
    if method == "forward":
        kin = forward_laplacian.kinetic(log_abs, x, kinetic_prefactor)
        pot = potential(x)
        return kin + pot, kin, pot
    d = x.shape[2]
    c = tf.constant(np.repeat(np.asarray(kinetic_prefactor, dtype=np.float64), d),
                    dtype=x.dtype)  # (N*D,)
    g, h = grad_and_diag_hessian(log_abs, x, method)
    kin = -tf.reduce_sum(c * (h + g * g), axis=1)
    pot = potential(x)
    return kin + pot, kin, pot


class LocalEnergy:
    """Compiled, chunked local-energy evaluation for one wavefunction and system.

    ``__call__(x)`` with x of shape (W, N, D) (NumPy or tensor) returns E_L of
    shape (W,) as a NumPy array, evaluating at most ``chunk_size`` walkers at a
    time so that memory stays bounded. The compiled function is traced once
    (the batch dimension is dynamic). ``method`` is one of :data:`CHOICES`; with
    ``auto`` the first call times the candidates and keeps the fastest
    (``self.method`` then names it). ``log`` receives one-line notes: the
    factors that ``forward`` differentiates by the Hessian, the ``auto`` choice.
    ``agree`` (e.g. a communicator's ``bcast_object``) maps this process's ``auto``
    choice to the one every rank uses; it is called once, collectively, at the first
    call. Timings vary between runs, and the two methods differ in the last digits,
    so a run with ``auto`` is not bitwise reproducible (nor is its resume): name the
    method for that.
    """

    def __init__(self, wavefunction, system, method="hessian", chunk_size=16384,
                 dtype=tf.float64, log=print, agree=None):
        if method not in CHOICES:
            raise ValueError(f"unknown Laplacian method {method!r}; choose one of {CHOICES}")
        self.chunk_size = chunk_size
        self.method = method
        self.log = log
        self.agree = agree
        self._wavefunction, self._system = wavefunction, system
        self._spec = tf.TensorSpec([None, system.particles, system.dim], dtype)
        if method in ("forward", "auto"):
            for name in forward_laplacian.without_rules(wavefunction):
                log(f"laplacian forward: factor {name!r} has no forward rules, "
                    f"using hessian for it")
        if method == "auto":
            self._candidates = {m: self._compile(m) for m in AUTO_CANDIDATES}
            self._eloc = None
        else:
            self._eloc = self._compile(method)

    def _compile(self, method):
        """The tf.function of E_L (W,) for one exact method."""
        wf, system = self._wavefunction, self._system
        target = wf if method == "forward" else wf.log_abs

        # XLA speeds up the local energy several times, but only the hessian and
        # forward methods compile reliably with TF 2.21: with nested forward
        # accumulators XLA recompiles for every new input, and fwd_over_rev fails
        # to compile through tf.concat (no gradient for XlaDynamicUpdateSlice).
        # Those two run as plain graphs.
        @tf.function(input_signature=[self._spec], jit_compile=method in JIT_METHODS)
        def _eloc(x):
            return local_energy(target, system.potential, system.kinetic_prefactor, x, method)[0]

        return _eloc

    def _choose(self, x, repeat: int = 2) -> None:
        """``auto``: time each candidate on x after compiling it; keep the fastest."""
        times = {}
        for m, f in self._candidates.items():
            f(x).numpy()  # trace and compile
            ts = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                f(x).numpy()
                ts.append(time.perf_counter() - t0)
            times[m] = min(ts)
        self.method = min(times, key=times.get)
        if self.agree is not None:  # every rank takes rank 0's choice
            self.method = self.agree(self.method)
        self._eloc = self._candidates[self.method]
        self._candidates = None
        self.log(f"laplacian auto: {self.method} (" + ", ".join(
            f"{m} {t * 1e3:.1f} ms" for m, t in times.items()) + f" per {int(x.shape[0])} walkers)")

    def __call__(self, x) -> np.ndarray:
        """Local energies of the walkers x (W, N, D) as a NumPy array (W,)."""
        return self.tensor(x).numpy()

    def tensor(self, x):
        """Local energies as a ``tf.Tensor`` (W,) on the device TensorFlow placed them."""
        x = tf.convert_to_tensor(x)
        if self._eloc is None:
            self._choose(x[:self.chunk_size])
        w = int(x.shape[0])
        if w <= self.chunk_size:
            return self._eloc(x)
        return tf.concat([self._eloc(x[i:i + self.chunk_size])
                          for i in range(0, w, self.chunk_size)], axis=0)
