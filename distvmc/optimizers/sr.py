"""Stochastic reconfiguration (natural-gradient descent), the one SR of distvmc.

An objective hands the preconditioner a :class:`Gradient`: either per-sample
log-derivatives O (this rank's samples x P parameters) centred by their
global mean, with the centred local energies E, or (grid mode) an explicit
force and metric. Then

    S = <O O^T>,  F = <O E> + extra,  (S + eps 1) delta = F,  theta <- theta - lr delta,

where ``extra`` is an objective's additional force (the overlap penalty of
excited states). An explicit metric (grid quadrature) replaces <O O^T>.

Every solver ends with delta identical, bit for bit, on every rank (rank 0's
result is broadcast, or the pieces are gathered). n is the global number of
samples, S_r this rank's, R the number of ranks; "sent" is float64 numbers
this rank sends per iteration.

Solvers (``optimizer.solver``):
  dense        P x P overlap matrix summed over ranks (one allreduce of P^2 + P
               numbers), Cholesky on rank 0, broadcast. Exact; O(n P^2 + P^3)
               work, O(P^2) memory. The right choice up to a few thousand
               parameters.
  cg           matrix-free conjugate gradient on (S + eps) delta = F with
               S v = <O (O^T v)>: S is never formed. One allreduce of 2P + 1
               numbers to start (F and S x0, plus the diagonal of S for the
               Jacobi preconditioner), then one allreduce of P + 1 numbers per
               CG step (S p and a stop vote), and a broadcast of delta.
               Unpreconditioned by default (``cg_precondition: none``): on
               helium at P = 4.7k, tol 1e-4, plain CG takes 11 steps and
               Jacobi (diag(S) + eps) 50-61, because F = <O E> lies mostly in
               S's large eigenvalues, which Jacobi scales down; ``jacobi``
               stays available for ansätze whose parameter scales differ wildly.
               Warm-started from the previous delta (kept in ``state()``, so
               rewinds and checkpoints restart exactly). Stops when
               |r| <= cg_tol |F| or after cg_maxiter steps; the history's
               ``solve`` column reads ``cg(K it, res R)`` or ``cg not converged
               (K it, res R)``. Work k * O(S_r P) per rank, memory O(S_r P).
  samplespace  the same delta through the n x n kernel T = O O^T:
               delta = O^T (T + eps n 1)^-1 E when F = <O E> (push-through
               identity), or the Woodbury form
               delta = (F - A^T (eps 1 + A A^T)^-1 A F) / eps, A = O / sqrt(n),
               for any F. On several ranks O is resharded from sample-split to
               parameter-split by one all-to-all (sent: S_r P (R-1)/R), each
               rank forms its slice's n x n contribution, one allreduce of
               n^2 (+ n) numbers sums the kernel, rank 0 solves, broadcasts y
               (n), and each rank's slice O_slice^T y is gathered (P/R each).
               The local energies are gathered first (S_r). Exact; O(n^2 P/R
               + n^3) work, O(S_r P + n^2) memory.
  auto         dense when P <= 2000; otherwise samplespace on one rank when
               n <= 1024 and n < P, else cg (see :meth:`SR.choose_solver`).

Momentum (``optimizer.momentum`` = mu, SPRING): Goldshlager, Abrahamsen and
Lin, "A Kaczmarz-inspired approach to accelerate the optimization of neural
network wavefunctions" (J. Comput. Phys. 2024, arXiv:2401.10190). With
A = O / sqrt(n) and eps' = E / sqrt(n) (centred, as here), their step is

    delta_k = A^T (A A^T + eps 1)^-1 (eps' - mu A delta_(k-1)) + mu delta_(k-1),

NetKet's kernel-space (NTK) SR update with ``momentum=mu`` computes the same.
By the push-through identity it is the minimiser of
|A delta - eps'|^2 + eps |delta - mu delta_(k-1)|^2, i.e. the shift pulls delta
towards mu delta_(k-1) instead of towards 0:

    (S + eps 1) delta_k = F + eps mu delta_(k-1).

distvmc implements that one definition in every solver: samplespace in the
form above (local energies E - mu O delta_(k-1), then + mu delta_(k-1)), and
dense, cg, the Woodbury form and an explicit metric with the force
F + eps mu delta_(k-1); so all solvers give the same delta_k (tests/test_spring.py).
Only S's null space and small eigenvalues (|lambda| <~ eps) remember the old
direction: there delta_k ~ mu delta_(k-1) + new, which is what helps when
n < P (most directions are unresolved by one iteration's samples); along S's
large eigenvalues delta_k is the plain SR step. delta_(k-1) is the solver's
previous delta exactly as returned, before the learning rate and the
``max_update_norm`` clip (as SPRING's and NetKet's "previous update"), with no
normalisation: the driver steps lr_k delta_k, so a persistent direction moves up
to lr / (1 - mu) per iteration, and lr_decay and the clip act on the whole
accumulated step. delta_(k-1) is optimizer state (``state()``: rewinds, step
control and checkpoints restart bit for bit); the first iteration (or a
non-finite delta_(k-1)) uses none.

Measured on helium (configs/helium.yaml with solver samplespace: n = 2048 <
P = 4482, lr 0.05, lr_decay 0.004, shift 1e-3; 200 iterations, 2e5
evaluation samples, seeds 0 and 1): mu = 0, 0.8, 0.9 and 0.99 all end at the
exact -2.903724 within 1e-4 Ha (each within 1.1 sigma of it), so momentum did
not measurably lower the final energy; it lowered the variance of E_L 3-30x
(mu = 0: 1.2-1.8e-3; 0.8: 6.3e-4; 0.9: 3.3-3.5e-4; 0.99: 0.6-1.3e-4 Ha^2).
After 50 iterations mu = 0.99 was 5.7(2.2)e-4 and 0.8(2.2)e-4 Ha below mu = 0
(the two seeds) with 5-9x lower variance. No instability: no rewinds, and the
largest update (iteration 5) was 1.8x plain SR's at mu = 0.99. The default
stays mu = 0 (the energy gain is not established, and 0 keeps every existing
run's trajectory); 0.9-0.99 is a reasonable choice with samplespace.

Dense and samplespace fall back if Cholesky fails: the shift is raised
tenfold (twice), then an eigenvalue pseudo-inverse is used. CG that stops at
its iteration cap returns its iterate and says so; a CG breakdown (non-finite
or non-positive curvature) restarts cold with the shift raised tenfold, then
returns the preconditioned force. No solver emits a NaN.

Where it runs: where the objective left O (:mod:`distvmc.optimizers.linalg`,
``optimizer.linear_algebra``). A NumPy O (``host``, the default on CPUs, where
NumPy/OpenBLAS float64 is the faster library) keeps everything in NumPy; a
``tf.Tensor`` O (``device``, the default when a GPU is visible) keeps O, S v,
the kernels, the CG vectors and the Cholesky factor on the device, and the
host sees scalars and the final delta. Both paths run the same code and agree
to rounding (tests/test_sr.py, tests/test_multirank.py).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from distvmc.optimizers.linalg import HOST, is_operator, ops_for


@dataclass
class Gradient:
    """What an objective gives a preconditioner (one iteration, this rank).

    Attributes:
      o: (S, P) this rank's log-derivatives d log|psi| / d theta, centred by
        their global mean; None for an explicit metric.
      e: (S,) this rank's local energies centred by their global mean; F = <O E>.
      n: global number of samples (the denominator of every average).
      extra: (P,) force added to <O E> (identical on every rank), or None.
      force: (P,) explicit F (identical on every rank) when o is None.
      metric: (P, P) explicit S (identical on every rank) when o is None.
    """

    o: np.ndarray | None = None
    e: np.ndarray | None = None
    n: float = 1.0
    extra: np.ndarray | None = None
    force: np.ndarray | None = None
    metric: np.ndarray | None = None


ONE_THREAD_SOLVE_MAX = 2000  # systems up to this size are factorized on one BLAS thread
_BLAS = None  # threadpoolctl's controller, made on first use


def _blas_threads(n: int):
    """One BLAS thread for a small factorization, else no limit (a context manager).

    In a process where TensorFlow's thread pools are also alive, OpenBLAS's
    multi-threaded Cholesky of a small matrix spends its time synchronizing: on
    the lecture's hydrogen (P = 498, 2 cores) it took 0.039-0.047 s per
    iteration against 0.003-0.006 s on one thread (benchmarks/hydrogen_lecture.py,
    solve phase); at P = 4.7k one and two threads were equal (1.28 s).
    """
    global _BLAS
    if n > ONE_THREAD_SOLVE_MAX:
        return contextlib.nullcontext()
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def solve_shifted(a: np.ndarray, b: np.ndarray, shift: float) -> tuple[np.ndarray, str]:
    """Solve (a + shift 1) x = b for symmetric positive semi-definite a.

    Returns (x, how): how is "cholesky", "cholesky(shift=...)" after raising
    the shift, or "eigh-pinv" for the pseudo-inverse fallback. Systems of at
    most ``ONE_THREAD_SOLVE_MAX`` unknowns use one BLAS thread (:func:`_blas_threads`).
    """
    with _blas_threads(a.shape[0]):
        return _solve_shifted(a, b, shift)


def _solve_shifted(a: np.ndarray, b: np.ndarray, shift: float) -> tuple[np.ndarray, str]:
    n = a.shape[0]
    idx = np.diag_indices(n)
    diag = a[idx].copy()
    scale = max(float(np.max(np.abs(diag))) if n else 0.0, 1e-300)
    m = np.empty_like(a)
    for k, s in enumerate((shift, shift * 10, shift * 100)):
        np.copyto(m, a)  # the factorization overwrites m; a stays intact for retries
        m[idx] = diag + max(s, 0.0)
        try:
            c = scipy.linalg.cho_factor(m, lower=True, overwrite_a=True, check_finite=False)
            x = scipy.linalg.cho_solve(c, b, check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            continue
        if np.all(np.isfinite(x)):
            return x, "cholesky" if k == 0 else f"cholesky(shift={s:.3g})"
    np.copyto(m, a)
    m[idx] = diag + max(shift, 0.0)
    m = np.nan_to_num(m)
    w, v = scipy.linalg.eigh(m, overwrite_a=True, check_finite=False)
    keep = w > 1e-12 * max(scale, float(w.max()) if w.size else 0.0)
    x = v[:, keep] @ ((v[:, keep].T @ np.nan_to_num(b)) / w[keep])
    return x, "eigh-pinv"


DENSE_MAX_PARAMETERS = 2000  # auto: below this, dense S (P^2 <= 4M numbers) is cheap and exact
SAMPLESPACE_MAX_SAMPLES = 1024  # auto, one rank: below this the n x n kernel beats ~10 CG steps


RECOMPUTE_MIN_PARAMETERS = 10000  # o_matrix auto: recompute from here on (cg only)


def auto_solver(p: int, n_total: float, ranks: int) -> str:
    """``optimizer.solver = auto``: dense when P <= 2000, else samplespace on one rank
    when n <= 1024 and n < P, else cg (see :meth:`SR.choose_solver`)."""
    if p <= DENSE_MAX_PARAMETERS:
        return "dense"
    if ranks == 1 and n_total <= SAMPLESPACE_MAX_SAMPLES and n_total < p:
        return "samplespace"
    return "cg"


def recompute_o(opt, p: int, n_total: float, ranks: int) -> bool:
    """Whether O is recomputed (``optimizer.o_matrix``) rather than stored.

    ``auto``: recompute when SR's solver is (or resolves to) cg without Jacobi and
    P >= 10000. Measured on helium with 4096 samples (benchmarks/sr_solvers.py
    --recompute): stored / recompute 0.26 / 0.28 s per iteration at P = 4.7k,
    1.08 / 0.58 s at 20k, 3.45 / 1.35 s at 100k (peak 4.0 / 1.15 GB): a CG step
    through a stored O reads 16 S P bytes, its recomputation costs a few forward
    passes, and building O goes away.
    """
    mode = opt.o_matrix
    if mode != "auto":
        return mode == "recompute"
    solver = opt.solver if opt.solver != "auto" else auto_solver(p, n_total, ranks)
    return (opt.type == "sr" and solver == "cg" and opt.cg_precondition == "none"
            and p >= RECOMPUTE_MIN_PARAMETERS)


class SR:
    """Stochastic reconfiguration on one communicator.

    State: the previous direction delta_(k-1) (CG's warm start, and the
    momentum term when ``momentum`` > 0), part of every snapshot and
    checkpoint; empty until CG or momentum has used it.
    """

    needs_metric = True

    def __init__(self, cfg, comm, n_parameters: int, log=None):
        self.cfg = cfg
        self.comm = comm
        self.n_parameters = n_parameters
        self.log = log
        self.timings: dict[str, float] = {}  # seconds per phase of the last direction
        self.previous: np.ndarray | None = None  # last delta (P,), identical on every rank
        self.momentum = float(getattr(cfg, "momentum", 0.0) or 0.0)  # SPRING's mu
        self._logged_choice: str | None = None

    def state(self) -> dict:
        return {} if self.previous is None else {"previous_delta": self.previous.copy()}

    def set_state(self, state: dict) -> None:
        prev = state.get("previous_delta") if state else None
        self.previous = None if prev is None else np.array(prev, dtype=np.float64)

    def choose_solver(self, n_total: float, explicit_metric: bool = False,
                      implicit: bool = False) -> str:
        """The solver for this iteration (``auto`` resolved).

        auto: dense when P <= 2000 (exact, and P^2 is small to sum and factor);
        else samplespace on one rank when n <= 1024 and n < P; else cg.
        Measured on helium with 4096 samples (benchmarks/sr_solvers.py), cg
        was 3-8x faster than samplespace at P = 4.7k and 20k: ~10 CG steps,
        each a memory-bound pass over O (~1.6 n P ns here), against the
        kernel's 2 n^2 P flops (~0.02 n^2 P ns) and n^3/3 Cholesky; the two
        meet near n = 1000. On several ranks cg always: P numbers per step
        against samplespace's all-to-all of O and n^2 kernel. The rule is the
        same on a GPU (``linear_algebra: device``): the kernel's n^2 P flops and
        CG's ~10 passes over O keep their ratio, and CG's traffic stays P per step.
        """
        solver = self.cfg.solver
        if explicit_metric:
            return "dense"
        if implicit and solver not in ("cg", "auto"):  # O never formed: products only
            raise ValueError(f"solver {solver} needs the matrix O, which optimizer.o_matrix "
                             "= recompute never forms; use optimizer.solver = cg or "
                             "optimizer.o_matrix = stored")
        if solver == "auto":
            p = self.n_parameters
            solver = "cg" if implicit else auto_solver(p, n_total, self.comm.size)
            if self._logged_choice != solver and self.log is not None and self.comm.is_root:
                self.log(f"optimizer.solver = auto: {solver} (P = {p}, {int(n_total)} samples, "
                         f"{self.comm.size} rank(s))")
            self._logged_choice = solver
        return solver

    def _momentum_term(self) -> np.ndarray | None:
        """mu delta_(k-1) (P,), identical on every rank; None without momentum or a usable
        previous delta (first iteration, or a non-finite one)."""
        prev = self.previous
        if self.momentum <= 0.0 or prev is None or prev.shape != (self.n_parameters,) \
                or not np.all(np.isfinite(prev)):
            return None
        return self.momentum * prev

    def direction(self, g: Gradient, shift: float) -> tuple[np.ndarray, dict]:
        """The SR direction delta (P,), identical on every rank, and solve info.

        With momentum mu > 0 it solves (S + shift) delta = F + shift mu delta_(k-1)
        (SPRING; see the module docstring) and keeps delta as the next delta_(k-1).
        """
        t0 = time.perf_counter()
        self.timings = {}
        solver = self.choose_solver(g.n, g.o is None, is_operator(g.o))
        info: dict = {"solver": solver}
        m = self._momentum_term()
        if g.o is None:  # explicit metric and force (grid quadrature)
            if self.comm.is_root:
                f = np.asarray(g.force, dtype=np.float64)
                if m is not None:
                    f = f + shift * m
                delta, how = solve_shifted(np.array(g.metric, dtype=np.float64), f, shift)
            else:
                delta, how = np.empty(self.n_parameters), ""
            delta = self.comm.bcast(delta)
            self.timings["solve"] = time.perf_counter() - t0
        elif solver == "dense":
            delta, how = self._dense(g, shift, t0, m)
        elif solver == "cg":
            delta, how = self._cg(g, shift, info, m)
        else:
            delta, how = self._samplespace(g, shift, m)
        if self.momentum > 0.0:
            self.previous = delta.copy()
            info["momentum"] = m is not None
        info["solve"] = how
        return delta, info

    # -- dense --------------------------------------------------------------
    def _dense(self, g: Gradient, shift: float, t0: float, m=None):
        ops = ops_for(g.o)
        s_loc = ops.gram_params(g.o)
        f_loc = ops.rmatvec(g.o, g.e)
        t1 = time.perf_counter()
        s_sum, f_sum = ops.allreduce_many(self.comm, [s_loc, f_loc])
        t2 = time.perf_counter()
        if self.comm.is_root:
            if ops is HOST:
                s_sum /= g.n  # in place: S is P x P
            else:
                s_sum = s_sum / g.n
            f = f_sum / g.n
            if g.extra is not None:
                f = f + ops.array(g.extra)
            if m is not None:
                f = f + shift * ops.array(m)
            delta, how = ops.solve_shifted(s_sum, f, shift)
        else:
            delta, how = ops.zeros(self.n_parameters), ""
        delta = ops.host(ops.bcast(self.comm, delta))
        self.timings.update(overlap=t1 - t0, allreduce=t2 - t1, solve=time.perf_counter() - t2)
        return delta, how

    # -- conjugate gradient -------------------------------------------------
    def _cg(self, g: Gradient, shift: float, info: dict, m=None):
        """CG (optionally Jacobi-preconditioned) on (S + shift) x = F, matrix-free, warm-started."""
        c = self.cfg
        ops = ops_for(g.o)
        t_comm = 0.0
        t_start = time.perf_counter()
        o, p_n = g.o, self.n_parameters
        x0 = self.previous
        warm = x0 is not None and x0.shape == (p_n,) and bool(np.all(np.isfinite(x0)))
        x0 = ops.array(x0.copy()) if warm else ops.zeros(p_n)
        jacobi = getattr(c, "cg_precondition", "none") == "jacobi"
        parts = [ops.rmatvec(o, g.e)]
        if jacobi:
            parts.append(ops.column_squares(o))
        if warm:
            parts.append(ops.s_times(o, x0))
        t = time.perf_counter()
        sums = ops.allreduce_many(self.comm, parts)
        t_comm += time.perf_counter() - t
        f = sums[0] / g.n
        if g.extra is not None:
            f = f + ops.array(g.extra)
        if m is not None:
            f = f + shift * ops.array(m)  # the breakdown retry (shift x10) keeps this force
        diag = sums[1] / g.n if jacobi else None
        s_x0 = sums[-1] / g.n if warm else None
        for attempt, eps in enumerate((shift, shift * 10)):
            x, it, res, ok, t_c = self._cg_iterate(ops, o, g.n, f, diag, eps,
                                                   x0 if warm and not attempt else None,
                                                   s_x0 if warm and not attempt else None)
            t_comm += t_c
            t = time.perf_counter()
            x = ops.host(ops.bcast(self.comm, x))  # rank 0's iterate, bit for bit, everywhere
            t_comm += time.perf_counter() - t
            if ok and np.all(np.isfinite(x)):
                break
        else:  # breakdown twice: the preconditioned force, finite by construction
            scale = 1.0 / (ops.host(diag) + max(shift, 1e-12)) if jacobi else 1.0 / max(shift, 1e-12)
            x = np.nan_to_num(scale * ops.host(f))
            res = float("nan")
        conv = res <= c.cg_tol
        word = "cg" if conv else "cg not converged "
        how = f"{word}({it} it, res {res:.1e}" + (", shift x10" if attempt else "") + ")"
        if not ok:
            how = f"cg breakdown; preconditioned force ({it} it)"
        self.previous = x.copy()
        info.update(cg_iterations=it, cg_residual=res, cg_converged=bool(conv and ok),
                    cg_warm_start=warm)
        total = time.perf_counter() - t_start
        self.timings.update(allreduce=t_comm, solve=total - t_comm)
        return x, how

    def _cg_iterate(self, ops, o, n, f, diag, eps, x0, s_x0):
        """CG iterations from x0; returns (x, steps, |r|/|F|, ok, seconds in collectives).

        The vectors live where O does (``ops``). Every step is one allreduce of
        [O^T (O p) (P), stop vote (1)]: the vote is an integer sum, exact on every
        rank, so all ranks stop together even if a float sum differed in its last
        bit (delta is broadcast from rank 0 afterwards anyway).
        """
        c = self.cfg
        size = self.comm.size
        t_comm = 0.0
        if x0 is None:
            x = ops.zeros(int(f.shape[0]))
            r = ops.copy(f)
        else:
            x = ops.copy(x0)
            r = f - (s_x0 + eps * x0)
        minv = None if diag is None else ops.where_positive_inverse(diag + eps)
        z = r if minv is None else minv * r
        p = ops.copy(z)
        rz = ops.dot(r, z)
        f_norm = ops.norm(f)
        if not np.isfinite(f_norm):
            return ops.zeros(int(f.shape[0])), 0, float("nan"), False, 0.0
        if f_norm == 0.0:
            return ops.zeros(int(f.shape[0])), 0, 0.0, True, 0.0
        tol = c.cg_tol * f_norm
        it = 0
        ok = True
        while True:
            r_norm = ops.norm(r)
            want = 1.0 if (r_norm > tol and it < c.cg_maxiter and np.isfinite(r_norm)) else 0.0
            local = ops.s_times(o, p) if want else ops.zeros(int(p.shape[0]))
            t = time.perf_counter()
            (total,) = ops.allreduce_many(self.comm, [ops.concat([local, np.array([want])])])
            t_comm += time.perf_counter() - t
            votes = int(round(float(total[-1])))
            if votes < size:  # someone is done (all are, unless a float sum differed)
                break
            sp = total[:-1] / n + eps * p
            pap = ops.dot(p, sp)
            if not (np.isfinite(pap) and pap > 0.0):
                ok = False
                break
            alpha = rz / pap
            x = x + alpha * p
            r = r - alpha * sp
            z = r if minv is None else minv * r
            rz_new = ops.dot(r, z)
            p = z + (rz_new / rz) * p if rz != 0.0 else ops.copy(z)
            rz = rz_new
            it += 1
        res = ops.norm(r) / f_norm
        ok = ok and ops.all_finite(x) and np.isfinite(res)
        return x, it, res, ok, t_comm

    # -- sample space -------------------------------------------------------
    def _samplespace(self, g: Gradient, shift: float, m=None):
        """Momentum m = mu delta_(k-1): push-through with E - O m, then + m (SPRING's
        form); Woodbury with F + shift m (the same delta)."""
        t0 = time.perf_counter()
        comm = self.comm
        ops = ops_for(g.o)
        mo = None if m is None else ops.array(m)
        # this rank's local energies, less O m for momentum (O m is per sample)
        e = g.e if m is None or g.extra is not None else g.e - ops.matvec(g.o, mo)
        if comm.size == 1:
            t = ops.gram_samples(g.o)
            t1 = time.perf_counter()
            if g.extra is None:  # F = O^T E / n: push-through identity
                y, how = ops.solve_shifted(t, e, shift * g.n)
                delta = ops.rmatvec(g.o, y)
                if m is not None:
                    delta = delta + mo
            else:  # Woodbury with A = O / sqrt(n): (A^T A + eps)^-1 F
                f = ops.rmatvec(g.o, g.e) / g.n + ops.array(g.extra)
                if m is not None:
                    f = f + shift * mo
                y, how = ops.solve_shifted(t / g.n, ops.matvec(g.o, f) / np.sqrt(g.n), shift)
                delta = (f - ops.rmatvec(g.o, y) / np.sqrt(g.n)) / shift
            self.timings.update(overlap=t1 - t0, solve=time.perf_counter() - t1)
            return ops.host(delta), how
        # several ranks: reshard O to parameter slices (through host buffers), sum the
        # n x n kernel
        t_comm = 0.0
        cuts = np.linspace(0, self.n_parameters, comm.size + 1).round().astype(int)
        lo, hi = cuts[comm.rank], cuts[comm.rank + 1]
        t = time.perf_counter()
        blocks = comm.alltoall([ops.host(ops.columns(g.o, cuts[s], cuts[s + 1]))
                                for s in range(comm.size)])
        e_all = comm.allgather(np.asarray(ops.host(e), dtype=np.float64))
        t_comm += time.perf_counter() - t
        o_mine = ops.stack_rows(blocks)  # (n, P_r): every sample, this rank's parameters
        del blocks
        e_mine = ops.array(e_all)
        kernel = ops.gram_samples(o_mine)
        if g.extra is None:
            parts = [kernel]
        else:
            f_mine = ops.rmatvec(o_mine, e_mine) / g.n + ops.array(g.extra[lo:hi])
            if m is not None:
                f_mine = f_mine + shift * ops.array(m[lo:hi])
            parts = [kernel, ops.matvec(o_mine, f_mine)]
        t1 = time.perf_counter()
        sums = ops.allreduce_many(comm, parts)
        t2 = time.perf_counter()
        t_comm += t2 - t1
        if comm.is_root:
            if g.extra is None:
                y, how = ops.solve_shifted(sums[0], e_mine, shift * g.n)
            else:
                y, how = ops.solve_shifted(sums[0] / g.n, sums[1] / np.sqrt(g.n), shift)
        else:
            y, how = ops.zeros(len(e_all)), ""
        t3 = time.perf_counter()
        y = ops.bcast(comm, y)
        how = comm.bcast_object(how)
        if g.extra is None:
            d_mine = ops.rmatvec(o_mine, y)
        else:
            d_mine = (f_mine - ops.rmatvec(o_mine, y) / np.sqrt(g.n)) / shift
        delta = comm.allgather(ops.host(d_mine))
        if m is not None and g.extra is None:
            delta = delta + m  # the same m and delta on every rank: the same bits
        t_comm += time.perf_counter() - t3
        self.timings.update(allreduce=t_comm, solve=time.perf_counter() - t0 - t_comm)
        return delta, how


def force(g: Gradient, comm) -> np.ndarray:
    """F = <O E> + extra (or the explicit force), identical on every rank (one allreduce)."""
    if g.o is None:
        return np.asarray(g.force, dtype=np.float64)
    ops = ops_for(g.o)
    (f_sum,) = ops.allreduce_many(comm, [ops.rmatvec(g.o, g.e)])
    f = ops.host(f_sum) / g.n
    return f + g.extra if g.extra is not None else f
