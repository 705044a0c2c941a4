"""Stochastic reconfiguration (natural-gradient descent), the one SR of distvmc.

An objective hands the preconditioner a :class:`Gradient`: either per-sample
log-derivatives O (this rank's samples x P parameters) centred by their
global mean, with the centred local energies E, or (grid mode) an explicit
force and metric. Then

    S = <O O^T>,  F = <O E> + extra,  (S + eps 1) delta = F,  theta <- theta - lr delta,

where ``extra`` is an objective's additional force (the overlap penalty of
excited states). An explicit metric (grid quadrature) replaces <O O^T>.

Sums are accumulated per rank and added over ranks in one collective; rank 0
solves in float64 and broadcasts delta, so every rank applies the same update.

Solvers (``optimizer.solver``):
  dense        P x P overlap matrix, Cholesky; the right choice up to a few
               thousand parameters.
  samplespace  the same delta through the N x N matrix T = O O^T / n (N samples):
               delta = O^T (T + eps n 1)^-1 E when F = <O E> (push-through
               identity), or the Woodbury form
               delta = (F - A^T (eps 1 + A A^T)^-1 A F) / eps, A = O / sqrt(n),
               for any F. Cheaper when the samples are fewer than the
               parameters. Single rank only.
  auto         samplespace on one rank when samples < parameters, else dense.

If Cholesky fails the shift is raised tenfold (twice), then an eigenvalue
pseudo-inverse is used; the fallback is reported, never a NaN.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg


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


def solve_shifted(a: np.ndarray, b: np.ndarray, shift: float) -> tuple[np.ndarray, str]:
    """Solve (a + shift 1) x = b for symmetric positive semi-definite a.

    Returns (x, how): how is "cholesky", "cholesky(shift=...)" after raising
    the shift, or "eigh-pinv" for the pseudo-inverse fallback.
    """
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


class SR:
    """Stochastic reconfiguration on one communicator; no state between iterations."""

    needs_metric = True

    def __init__(self, cfg, comm, n_parameters: int):
        self.cfg = cfg
        self.comm = comm
        self.n_parameters = n_parameters
        self.timings: dict[str, float] = {}  # seconds per phase of the last direction

    def state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        pass

    def choose_solver(self, n_total: float, explicit_metric: bool = False) -> str:
        """The solver for this iteration (``auto`` resolved)."""
        solver = self.cfg.solver
        if explicit_metric:
            return "dense"
        if solver == "auto":
            return "samplespace" if (self.comm.size == 1 and n_total < self.n_parameters) else "dense"
        if solver == "samplespace" and self.comm.size > 1:
            raise ValueError("optimizer.solver = 'samplespace' needs a single rank; use dense or auto")
        return solver

    def direction(self, g: Gradient, shift: float) -> tuple[np.ndarray, dict]:
        """The SR direction delta (P,), identical on every rank, and solve info."""
        t0 = time.perf_counter()
        self.timings = {}
        solver = self.choose_solver(g.n, g.o is None)
        if g.o is None:  # explicit metric and force (grid quadrature)
            if self.comm.is_root:
                delta, how = solve_shifted(np.array(g.metric, dtype=np.float64),
                                           np.asarray(g.force, dtype=np.float64), shift)
            else:
                delta, how = np.empty(self.n_parameters), ""
            delta = self.comm.bcast(delta)
            self.timings["solve"] = time.perf_counter() - t0
        elif solver == "dense":
            s_loc = g.o.T @ g.o
            f_loc = g.o.T @ g.e
            t1 = time.perf_counter()
            s_sum, f_sum = self.comm.allreduce_many([s_loc, f_loc])
            t2 = time.perf_counter()
            if self.comm.is_root:
                s_sum /= g.n  # in place: S is P x P
                f = f_sum / g.n
                if g.extra is not None:
                    f = f + g.extra
                delta, how = solve_shifted(s_sum, f, shift)
            else:
                delta, how = np.empty(self.n_parameters), ""
            delta = self.comm.bcast(delta)
            self.timings.update(overlap=t1 - t0, allreduce=t2 - t1, solve=time.perf_counter() - t2)
        else:  # samplespace, single rank
            t = g.o @ g.o.T
            t1 = time.perf_counter()
            if g.extra is None:  # F = O^T E / n: push-through identity
                y, how = solve_shifted(t, g.e, shift * g.n)
                delta = g.o.T @ y
            else:  # Woodbury with A = O / sqrt(n): (A^T A + eps)^-1 F
                f = g.o.T @ g.e / g.n + g.extra
                y, how = solve_shifted(t / g.n, g.o @ f / np.sqrt(g.n), shift)
                delta = (f - g.o.T @ y / np.sqrt(g.n)) / shift
            self.timings.update(overlap=t1 - t0, solve=time.perf_counter() - t1)
        return delta, {"solver": solver, "solve": how}


def force(g: Gradient, comm) -> np.ndarray:
    """F = <O E> + extra (or the explicit force), identical on every rank (one allreduce)."""
    if g.o is None:
        return np.asarray(g.force, dtype=np.float64)
    (f_sum,) = comm.allreduce_many([g.o.T @ g.e])
    f = f_sum / g.n
    return f + g.extra if g.extra is not None else f
