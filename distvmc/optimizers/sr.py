"""Stochastic reconfiguration (natural-gradient descent on the energy).

With O the per-sample log-derivatives (S samples x P parameters) centred by
their global mean, and E the centred local energies,

    S = <O O^T>,  F = <O E>,  (S + eps 1) delta = F,  theta <- theta - lr delta.

Sums are accumulated per rank and added over ranks (two collectives: first
the means, then the centred second moments); rank 0 solves in float64 and
broadcasts delta, so every rank applies the same update.

Solvers:
  dense        P x P overlap matrix, Cholesky; the right choice up to a few
               thousand parameters.
  samplespace  the same delta through the S x S matrix T = O O^T (push-through
               identity: delta = O^T (T + eps S 1)^-1 E); cheaper when the
               samples are fewer than the parameters. Single rank only.

If Cholesky fails the shift is raised tenfold (twice), then an eigenvalue
pseudo-inverse is used; the fallback is reported, never a NaN.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg

from distvmc.optimizers.jacobian import LogDerivatives


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
    w, v = scipy.linalg.eigh(m, overwrite_a=True, check_finite=False)
    keep = w > 1e-12 * max(scale, float(w.max()) if w.size else 0.0)
    x = v[:, keep] @ ((v[:, keep].T @ b) / w[keep])
    return x, "eigh-pinv"


class SR:
    """Stochastic reconfiguration for one wavefunction on one communicator."""

    def __init__(self, wavefunction, cfg, comm, chunk_size: int = 16384):
        self.wf = wavefunction
        self.cfg = cfg
        self.comm = comm
        self.log_derivatives = LogDerivatives(wavefunction, chunk_size)
        self.solver = cfg.solver
        self.timings: dict[str, float] = {}  # seconds per phase of the last step
        self.shift_scale = 1.0  # raised by the driver after a rewind (recovery.shift_factor)

    def state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        pass

    def _choose_solver(self, n_total: int) -> str:
        p = self.wf.n_parameters
        if self.solver == "auto":
            return "samplespace" if (self.comm.size == 1 and n_total < p) else "dense"
        if self.solver == "samplespace" and self.comm.size > 1:
            raise ValueError("optimizer.solver = 'samplespace' needs a single rank; use dense or auto")
        return self.solver

    def moments(self, x: np.ndarray, e: np.ndarray):
        """Global means and centred second moments from this rank's samples.

        Args:
          x: (S, N, D) configurations; e: (S,) local energies (finite).

        Returns:
          dict with n (global sample count), o_mean (P,), e_mean, s (P, P) = <O O^T>
          centred, f (P,) = <O E> centred, and oc, ec (this rank's centred O and E).
        """
        t0 = time.perf_counter()
        o = self.log_derivatives(x)  # (S, P)
        self.timings = {"jacobian": time.perf_counter() - t0}
        n_local = o.shape[0]
        first = self.comm.allreduce(np.concatenate([o.sum(axis=0), [e.sum(), float(n_local)]]))
        n = first[-1]
        o_mean, e_mean = first[:-2] / n, first[-2] / n
        oc = o - o_mean
        ec = e - e_mean
        return dict(n=n, o_mean=o_mean, e_mean=e_mean, oc=oc, ec=ec)

    def direction(self, x: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, dict]:
        """The SR direction delta (P,), identical on every rank, and solve info."""
        m = self.moments(x, e)
        n, oc, ec = m["n"], m["oc"], m["ec"]
        solver = self._choose_solver(int(n))
        shift = self.cfg.shift * self.shift_scale
        t0 = time.perf_counter()
        if solver == "dense":
            s_loc = oc.T @ oc
            f_loc = oc.T @ ec
            t1 = time.perf_counter()
            s_sum, f_sum = self.comm.allreduce_many([s_loc, f_loc])
            t2 = time.perf_counter()
            if self.comm.rank == 0:
                s_sum /= n  # in place: S is P x P
                delta, how = solve_shifted(s_sum, f_sum / n, shift)
            else:
                delta, how = np.empty(self.wf.n_parameters), ""
            delta = self.comm.bcast(delta)
            self.timings.update(overlap=t1 - t0, allreduce=t2 - t1, solve=time.perf_counter() - t2)
        else:  # samplespace, single rank
            t = oc @ oc.T
            t1 = time.perf_counter()
            y, how = solve_shifted(t, ec, shift * n)
            delta = oc.T @ y
            self.timings.update(overlap=t1 - t0, solve=time.perf_counter() - t1)
        info = {"solver": solver, "solve": how}
        return delta, info

    def step(self, x: np.ndarray, e: np.ndarray, lr: float) -> dict:
        """Update the parameters in place; returns info (update norm, solve method)."""
        delta, info = self.direction(x, e)
        update = lr * delta
        norm = float(np.linalg.norm(update))
        if self.cfg.max_update_norm is not None and norm > self.cfg.max_update_norm:
            update *= self.cfg.max_update_norm / norm
            info["clipped"] = True
        if not np.all(np.isfinite(update)):
            info["skipped"] = "non-finite update"
            return info
        self.wf.set_flat(self.wf.get_flat() - update)
        info["update_norm"] = float(np.linalg.norm(update))
        return info
