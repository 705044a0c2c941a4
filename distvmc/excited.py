"""Excited states: the lowest K states, found one after another.

State k is optimized with the states 0..k-1 already found and frozen.

Grid mode (``integrator: grid``): exact orthogonalization. The found states
are orthonormal vectors on the grid and are projected out of the trial
function before its energy is computed (:class:`distvmc.grid.GridEnergy`), so
the optimized quantity is a Rayleigh quotient on the orthogonal complement of
the lower states. Its minimum is E_k and no initialisation can make it
collapse onto a lower state (the lecture's penalty method did in about half of
the seeds). State k is the projected network function; the projection
coefficients are saved with the parameters.

Sampling mode (any dimension): a penalty on Monte Carlo estimates of the
normalized overlaps,

    L_k = E[psi_k] + lambda sum_{j<k} S_jk^2,
    S_jk^2 = <psi_j/psi_k>_{|psi_k|^2} <psi_k/psi_j>_{|psi_j|^2}
           = |<psi_j|psi_k>|^2 / (<psi_j|psi_j> <psi_k|psi_k>),

each factor averaged over samples of one state only (both have finite
variance, and the product of two independent means is an unbiased estimate
of S^2). Samples of |psi_j|^2 come from a sampler per lower state that keeps
running. The gradient is minimized with SR (or Adam) from the same per-sample
log-derivatives O as the energy:

    (1/2) dE/dtheta      = <O_c E_c>_k
    d<psi_j/psi_k>_k     = <(psi_j/psi_k) O>_k - 2 <psi_j/psi_k>_k <O>_k
    d<psi_k/psi_j>_j     = <(psi_k/psi_j) O>_j

Initialisation: state k's ansatz is psi_k = phi_k - sum_j c_j psi_j
(:class:`~distvmc.wavefunctions.projected.ProjectedWavefunction`): a fresh
network phi_k (seed + k * reseed) with its Monte Carlo projections
c_j = <phi_k/psi_j>_{|psi_j|^2} on the found states subtracted, and the c_j
trainable. It starts (nearly) orthogonal, away from psi_0, where E + lambda S^2
is stationary and a nodeless start would stay. After training one Gram-Schmidt
step with fresh samples removes the lower-state components the penalty left
(they bias E_k low by S^2 (E_k - E_j)).

Penalty rule: mixing a fraction a^2 of a lower state j into the exact state k
changes L_k by -a^2 (E_k - E_j - lambda), so lambda must exceed E_k - E_0 or
the minimum of L_k moves onto the lower state. ``excited.penalty`` sets lambda
directly (energy units); when null, lambda = penalty_factor * max(|E_0|,
E_(k-1) - E_0) from the energies already found. For bound states whose
continuum starts at V = 0 (atoms) every gap is below |E_0|; for evenly spaced
levels E_k - E_0 <= 2 (E_(k-1) - E_0) for k >= 2. The default factor 3 keeps a
margin for both; set ``excited.penalty`` when neither holds. A final overlap
above 0.1 is reported as a warning.

Every state is trained by the one driver loop (:mod:`distvmc.driver`) with
the objective of its mode (:mod:`distvmc.objectives`); :mod:`distvmc.job`
runs the states one after another. This module holds the excited-state
physics they share: seeds, the penalty rule, the orthogonalized start, the
final Gram-Schmidt step and the Monte Carlo overlap matrix.
"""

from __future__ import annotations

import math

import numpy as np

from distvmc import stats
from distvmc.objectives import finite_mean, ratio


def state_seed(cfg, k: int) -> int:
    """Seed of state k's initial parameters (and, in sampling mode, its random streams)."""
    return cfg.seed + k * cfg.excited.reseed


def penalty_strength(cfg, energies: list[float]) -> float:
    """lambda for the next state given the energies found so far (see the module docstring)."""
    if cfg.excited.penalty is not None:
        return float(cfg.excited.penalty)
    e0 = energies[0]
    return float(cfg.excited.penalty_factor * max(abs(e0), energies[-1] - e0))


def references(cfg) -> list:
    """Reference energy of each state (None where unknown)."""
    k = cfg.excited.states
    if cfg.excited.reference_energies is not None:
        return list(cfg.excited.reference_energies)[:k]
    return [cfg.reference_energy] + [None] * (k - 1)


def expansion_rows(found: list) -> np.ndarray:
    """T (k, k): found state j = sum_i T_ji phi_i over the base networks phi_i."""
    k = len(found)
    return np.stack([np.pad(f.T, (0, k - len(f.T))) for f in found])


def projections(amp, found: list, n: int, sweeps: int, comm) -> np.ndarray:
    """<psi_j|psi>/<psi_j|psi_j> = <psi/psi_j>_{|psi_j|^2} for every found state j, from
    about n fresh samples of each (their samplers continue); shape (J,)."""
    out = []
    for f in found:
        xj = f.lower.draw(n, sweeps, minimum=2)
        out.append(finite_mean(ratio(amp(xj), f.lower.amp(xj)), comm))
    return np.asarray(out)


def orthogonal_start(trial_amp, found: list, cfg, comm, log=print) -> np.ndarray:
    """Coefficients c over the base networks such that phi_k - sum_i c_i phi_i starts
    (nearly) orthogonal to the found states (Monte Carlo projections)."""
    n = 16 * cfg.excited.overlap_samples
    c_state = projections(trial_amp, found, n, cfg.sampler.sweeps_per_sample, comm)
    c_base = np.asarray(c_state) @ expansion_rows(found)
    log(f"state {len(found)}: starts orthogonalized: projection coefficients on the lower "
        f"states {', '.join(f'{c:+.4g}' for c in c_state)} (from {n} samples each)")
    return c_base


def reorthogonalize(k: int, wf, objective, found: list, cfg, comm, log=print) -> None:
    """Final Gram-Schmidt step: psi_k -= sum_j a_j psi_j with a_j estimated from fresh
    samples of the lower states (removes what the penalty left, down to the Monte Carlo
    error of a_j)."""
    n = max(cfg.evaluation.samples // (4 * comm.size), 16 * cfg.excited.overlap_samples)
    sweeps = cfg.sampler.sweeps_per_sample
    a = projections(objective.amp, found, n, sweeps, comm)  # B_j = <psi_k/psi_j>_j
    w = objective.sampler.walkers
    xs, _ = objective.sampler.sample(max(2, -(-n // w)), sweeps)
    xk = xs.reshape((-1,) + xs.shape[2:])
    own = objective.amp(xk)
    s2 = []
    for f, b in zip(found, a):  # S^2 = A B with A_j = <psi_j/psi_k>_k on the state's own samples
        s2.append(finite_mean(ratio(f.lower.amp(xk), own), comm) * b)
    wf.c.assign(wf.c.numpy() + a @ expansion_rows(found))
    objective.after_update()
    log(f"state {k}: final Gram-Schmidt step: overlaps S^2 before it "
        f"{', '.join(f'{v:+.1e}' for v in s2)}; removed the lower-state components "
        f"(<psi_k/psi_j>_j = {', '.join(f'{v:+.3e}' for v in a)}, {n} samples each)")


def overlaps(found: list, cfg, comm):
    """Normalized overlaps between all found states from fresh samples, with error bars.

    Returns (S, dS, S^2, d(S^2)), each (K, K): S = sign(A) sqrt(max(A B, 0)) with
    A = <psi_j/psi_k>_k, B = <psi_k/psi_j>_j; errors by blocking, propagated.
    """
    k_states = len(found)
    n_samples = max(cfg.evaluation.samples // (4 * comm.size), cfg.excited.overlap_samples)
    samples = []
    for f in found:
        w = f.lower.sampler.walkers
        xs, _ = f.lower.sampler.sample(max(2, -(-n_samples // w)), cfg.sampler.sweeps_per_sample)
        samples.append(xs)  # (M, W, N, D)
    own = [f.lower.amp(xs.reshape((-1,) + xs.shape[2:])) for f, xs in zip(found, samples)]
    ov, ov_err = np.eye(k_states), np.zeros((k_states, k_states))
    ov_sq, ov_sq_err = np.eye(k_states), np.zeros((k_states, k_states))
    for j in range(k_states):
        for k in range(j + 1, k_states):
            xk, xj = samples[k], samples[j]
            fk, fj = found[k].lower.amp, found[j].lower.amp
            r_a = ratio(fj(xk.reshape((-1,) + xk.shape[2:])), own[k]).reshape(xk.shape[:2])
            r_b = ratio(fk(xj.reshape((-1,) + xj.shape[2:])), own[j]).reshape(xj.shape[:2])
            sa, sb = stats.summarize(r_a, comm), stats.summarize(r_b, comm)
            s2 = sa.mean * sb.mean
            ds2 = math.hypot(sb.mean * sa.error, sa.mean * sb.error)
            s = math.copysign(math.sqrt(max(s2, 0.0)), sa.mean)
            ds = ds2 / (2 * abs(s)) if abs(s) > math.sqrt(max(ds2, 0.0)) else math.sqrt(ds2)
            ov[j, k] = ov[k, j] = s
            ov_err[j, k] = ov_err[k, j] = ds
            ov_sq[j, k] = ov_sq[k, j] = s2
            ov_sq_err[j, k] = ov_sq_err[k, j] = ds2
    return ov, ov_err, ov_sq, ov_sq_err
