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

Results (both modes): a table of E_k with error bars (0 on the grid:
quadrature is deterministic) and the matrix of normalized overlaps between all
found states, written to the run directory by :func:`run_states`.
"""

from __future__ import annotations

import json
import math
import os
import time

import h5py
import numpy as np
import tensorflow as tf

from distvmc import __version__, io, stats
from distvmc.grid import Grid, GridEnergy, finish_state, optimize_state, overlap_matrix
from distvmc.optimizers.direct import DirectStep, ParameterUpdate
from distvmc.systems import build_system
from distvmc.wavefunctions import build_wavefunction
from distvmc.wavefunctions.projected import ProjectedWavefunction

STATE_HISTORY_FIELDS = ["state"] + io.HISTORY_FIELDS + ["penalty", "overlap_sq"]


def state_seed(cfg, k: int) -> int:
    """Seed of state k's initial parameters (and, in sampling mode, its random streams)."""
    return cfg.seed + k * cfg.excited.reseed


def penalty_strength(cfg, energies: list[float]) -> float:
    """lambda for the next state given the energies found so far (see the module docstring)."""
    if cfg.excited.penalty is not None:
        return float(cfg.excited.penalty)
    e0 = energies[0]
    return float(cfg.excited.penalty_factor * max(abs(e0), energies[-1] - e0))


def _references(cfg) -> list:
    k = cfg.excited.states
    if cfg.excited.reference_energies is not None:
        return list(cfg.excited.reference_energies)[:k]
    return [cfg.reference_energy] + [None] * (k - 1)


# ----------------------------------------------------------------------------
# Grid mode
# ----------------------------------------------------------------------------


def solve_grid(cfg, system=None, config_dir=None, log=print, on_iteration=None,
               energy: GridEnergy | None = None) -> dict:
    """The lowest ``excited.states`` states on the grid, one after another.

    Args:
      cfg: validated config with ``integrator: grid``.
      system: the :class:`~distvmc.systems.System` (built from cfg when None).
      energy: a :class:`GridEnergy` to reuse (its wavefunction is re-initialised
        for every state; reusing it across calls skips TensorFlow tracing).

    Returns:
      dict with "states" (list of per-state dicts: energy, energy_err = 0,
      energy_parts, energy_laplacian, kinetic, potential, edge_ratio,
      raw_overlaps, iterations, seconds), "overlaps" (K, K), "grid",
      "grid_states" (list of GridState), "wavefunction", "energy" (the GridEnergy).
    """
    system = system or build_system(cfg, config_dir)
    k_states = cfg.excited.states
    if energy is None:
        grid = Grid.from_config(cfg)
        dtype = tf.float64 if cfg.precision == "float64" else tf.float32
        wf = build_wavefunction(cfg, system, cfg.seed)
        energy = GridEnergy(wf, system, grid, cfg.grid.kinetic, "hessian",
                            max_lower=max(k_states - 1, 1), chunk_size=cfg.grid.chunk_size,
                            dtype=dtype)
    grid, wf = energy.grid, energy.wf
    shape = " x ".join(map(str, grid.shape)) + (f" = {grid.size}" if len(grid.shape) > 1 else "")
    log(f"grid: {shape} points, spacing "
        f"{', '.join(f'{h:.4g}' for h in grid.spacing)}, box +-{', '.join(f'{L:g}' for L in grid.half_widths)}; "
        f"kinetic {cfg.grid.kinetic}; {wf.n_parameters} parameters; optimizer {cfg.optimizer.type}")
    found, rows = [], []
    for k in range(k_states):
        t0 = time.perf_counter()
        wf.set_flat(build_wavefunction(cfg, system, state_seed(cfg, k)).get_flat())
        energy.set_lower(found)
        hist = optimize_state(energy, cfg.optimizer, cfg.optimizer.iterations, log, state=k,
                              log_every=cfg.output.log_every, on_iteration=on_iteration,
                              tolerance=cfg.grid.tolerance)
        st = finish_state(energy, cfg.grid.edge_tolerance, k, log)
        found.append(st)
        rows.append({"state": k, "energy": st.energy, "energy_err": 0.0,
                     "energy_parts": st.energy_parts, "energy_laplacian": st.energy_laplacian,
                     "kinetic": st.kinetic, "potential": st.potential,
                     "edge_ratio": st.edge_ratio, "raw_overlaps": st.raw_overlaps.tolist(),
                     "iterations": len(hist), "seconds": time.perf_counter() - t0})
        log(f"state {k}: E = {st.energy:.10f} (parts {st.energy_parts:.10f}, laplacian "
            f"{st.energy_laplacian:.10f}) after {len(hist)} iterations, "
            f"{rows[-1]['seconds']:.1f} s")
    return {"integrator": "grid", "states": rows, "overlaps": overlap_matrix(grid, found),
            "grid": grid, "grid_states": found, "wavefunction": wf, "energy": energy}


def grid_density(grid: Grid, found: list, rows: list) -> dict:
    """Normalized densities |psi_k|^2 on the grid: cell_volume * sum(density) = 1."""
    nd = len(grid.shape)
    labels = ([f"x{i}" for i in range(nd)] if nd > 1 else ["x"])
    return {
        "coordinates": labels,
        "axes": [a.tolist() for a in grid.axes],
        "shape": list(grid.shape),
        "spacing": grid.spacing.tolist(),
        "cell_volume": grid.cell_volume,
        "normalization": "cell_volume * sum(density) = 1; density has shape `shape` (C order)",
        "states": [{"state": r["state"], "energy": r["energy"],
                    "density": (s.psi ** 2).reshape(grid.shape).tolist()}
                   for s, r in zip(found, rows)],
    }


def grid_observables(grid: Grid, system, found: list) -> list[dict]:
    """<r>, <r^2> per particle about the origin by quadrature, for each state."""
    r = np.linalg.norm(grid.points, axis=-1).mean(axis=-1)  # (G,)
    r2 = (np.linalg.norm(grid.points, axis=-1) ** 2).mean(axis=-1)
    out = []
    for s in found:
        rho = s.psi ** 2
        out.append({"r": grid.integrate(rho * r), "r2": grid.integrate(rho * r2)})
    return out


# ----------------------------------------------------------------------------
# Sampling mode
# ----------------------------------------------------------------------------


class _Amplitude:
    """Compiled (log|psi|, sign psi) of one wavefunction, chunked; NumPy in and out."""

    def __init__(self, wf, system, dtype, chunk_size):
        spec = tf.TensorSpec([None, system.particles, system.dim], dtype)
        self.chunk = chunk_size

        @tf.function(input_signature=[spec])
        def f(x):
            return wf.log_abs(x), wf.sign(x)

        self._f = f

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        us, ss = [], []
        for i in range(0, len(x), self.chunk):
            u, s = self._f(tf.convert_to_tensor(x[i:i + self.chunk]))
            us.append(u.numpy())
            ss.append(s.numpy())
        return np.concatenate(us).astype(np.float64), np.concatenate(ss).astype(np.float64)


def _ratio(u_num, s_num, u_den, s_den):
    """psi_num / psi_den from logs and signs (0 where the numerator vanishes)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return s_num * s_den * np.exp(u_num - u_den)


class PenalizedSearch:
    """Sampling-mode search for the lowest K states with the overlap penalty."""

    def __init__(self, cfg, comm=None, config_dir=None, log=print, on_iteration=None):
        from distvmc import config as config_mod
        from distvmc.comm import SingleProcess

        self.cfg = cfg
        self.comm = comm or SingleProcess()
        self.config_dir = config_dir
        self.log = log if self.comm.is_root else (lambda *a, **k: None)
        self.on_iteration = on_iteration
        self._config_mod = config_mod
        self.dtype = tf.float64 if cfg.precision == "float64" else tf.float32
        self.found = []  # list of dicts: vmc, amp, energy, result

    def _state_cfg(self, k: int):
        """The config of state k: the run's, with seed + k * reseed."""
        raw = self.cfg.to_dict()
        raw["seed"] = state_seed(self.cfg, k)
        return self._config_mod.validate(raw)

    def _overlap_terms(self, cur_amp, x, u_k, s_k, o, lower, n_lower_samples):
        """Sums for the overlap with one lower state (this rank's part)."""
        u_j, s_j = lower["amp"](x)
        r_a = _ratio(u_j, s_j, u_k, s_k)  # psi_j / psi_k on |psi_k|^2 samples
        sampler = lower["vmc"].sampler
        w = sampler.walkers
        m = max(1, -(-n_lower_samples // w))
        xs, _ = sampler.sample(m, self.cfg.sampler.sweeps_per_sample)
        xj = xs.reshape((m * w,) + xs.shape[2:])
        uj_j, sj_j = lower["amp"](xj)
        uk_j, sk_j = cur_amp(xj)
        r_b = _ratio(uk_j, sk_j, uj_j, sj_j)  # psi_k / psi_j on |psi_j|^2 samples
        o_b = self.current.optimizer.log_derivatives(xj)
        ok = np.isfinite(r_a)
        okb = np.isfinite(r_b)
        r_a, r_b = np.where(ok, r_a, 0.0), np.where(okb, r_b, 0.0)
        return [np.array([r_a.sum(), float(ok.sum()), r_b.sum(), float(okb.sum())]),
                r_a @ o, r_b @ o_b]

    def _iteration(self, k: int, lam: float, stepper: DirectStep, apply: ParameterUpdate,
                   amp: _Amplitude) -> dict:
        cfg, vmc = self.cfg, self.current
        s = cfg.sampler
        t0 = time.perf_counter()
        xs, acc = vmc.sampler.sample(s.samples_per_walker, s.sweeps_per_sample)
        if s.adapt == "always":
            vmc.sampler.adapt(acc)
        m, w = xs.shape[:2]
        x = xs.reshape((m * w,) + xs.shape[2:])
        e = vmc.local_energy(x)
        st = stats.summarize(e.reshape(m, w), self.comm)
        rec = {"state": k, "iteration": vmc.iteration, "energy": st.mean,
               "energy_err": st.error, "variance": st.variance, "tau": st.tau,
               "acceptance": acc, "step": float(vmc.sampler.step.numpy()),
               "nonfinite": st.nonfinite, "penalty": lam}
        if st.nonfinite > 0:
            rec["solve"] = "skipped"
            self.log(f"warning: state {k}, iteration {vmc.iteration}: {st.nonfinite} non-finite "
                     "local energies; update not applied")
        else:
            o = vmc.optimizer.log_derivatives(x)  # (S, P)
            u_k, s_k = amp(x)
            parts = [o.sum(axis=0), np.array([e.sum(), float(len(e))])]
            lower_parts = [self._overlap_terms(amp, x, u_k, s_k, o, low, cfg.excited.overlap_samples)
                           for low in self.found]
            flat = [p for lp in lower_parts for p in lp]
            sums = self.comm.allreduce_many(parts + flat)
            n = sums[1][1]
            o_mean, e_mean = sums[0] / n, sums[1][0] / n
            oc, ec = o - o_mean, e - e_mean
            s_loc, f_loc = oc.T @ oc, oc.T @ ec
            s_sum, f_sum = self.comm.allreduce_many([s_loc, f_loc])
            half_grad = f_sum / n
            overlap_sq = 0.0
            for j in range(len(self.found)):
                head, ra_o, rb_o = sums[2 + 3 * j: 5 + 3 * j]
                a = head[0] / head[1]
                b = head[2] / head[3]
                da = ra_o / head[1] - 2.0 * a * o_mean
                db = rb_o / head[3]
                overlap_sq += a * b
                half_grad = half_grad + 0.5 * lam * (a * db + b * da)
            rec["overlap_sq"] = overlap_sq
            step, info = stepper.update(half_grad, s_sum / n if stepper.needs_metric else None)
            if self.comm.size > 1:
                step = self.comm.bcast(step)
            apply(step)
            vmc.sampler.refresh()
            rec["lr"] = info["lr"]
            rec["update_norm"] = info.get("update_norm", float("nan"))
            rec["solve"] = info.get("skipped") or info["solve"]
        vmc.iteration += 1
        rec["seconds"] = time.perf_counter() - t0
        return rec

    def _initial_trial(self, k: int, cfg_k):
        """State k's ansatz: the fresh network phi_k minus its projections on the found states.

        Returns (wavefunction, T row): psi_k = sum_i T_ki phi_i over the base networks.
        """
        system = build_system(cfg_k, self.config_dir)
        trial = build_wavefunction(cfg_k, system, cfg_k.seed)
        if k == 0:
            return trial, np.array([1.0])
        trial_amp = _Amplitude(trial, system, self.dtype, self.cfg.hamiltonian.chunk_size)
        n = 16 * self.cfg.excited.overlap_samples
        c_state = self._projections(trial_amp, n)  # <psi_j|phi_k> / <psi_j|psi_j>
        t = np.stack([np.pad(f["T"], (0, k - len(f["T"]))) for f in self.found])  # (k, k)
        c_base = np.asarray(c_state) @ t  # psi_k = phi_k - sum_i c_base_i phi_i
        self.log(f"state {k}: starts orthogonalized: projection coefficients on the lower "
                 f"states {', '.join(f'{c:+.4g}' for c in c_state)} (from {n} samples each)")
        wf = ProjectedWavefunction(trial, [f["base"] for f in self.found], c_base)
        return wf, np.concatenate([-c_base, [1.0]])

    def _projections(self, amp, n: int) -> np.ndarray:
        """<psi_j|psi>/<psi_j|psi_j> = <psi/psi_j>_{|psi_j|^2} for every found state j,
        from n fresh samples of each (shape (J,))."""
        out = []
        for f in self.found:
            sampler = f["vmc"].sampler
            m = max(2, -(-n // sampler.walkers))
            xs, _ = sampler.sample(m, self.cfg.sampler.sweeps_per_sample)
            xj = xs.reshape((-1,) + xs.shape[2:])
            r = _ratio(*amp(xj), *f["amp"](xj))
            ok = np.isfinite(r)
            tot = self.comm.allreduce(np.array([np.where(ok, r, 0.0).sum(), float(ok.sum())]))
            out.append(tot[0] / tot[1])
        return np.asarray(out)

    def _reorthogonalize(self, k: int, vmc, amp) -> None:
        """Final Gram-Schmidt step: psi_k -= sum_j a_j psi_j with a_j estimated from
        fresh samples of the lower states (removes what the penalty left, down to the
        Monte Carlo error of a_j)."""
        n = max(self.cfg.evaluation.samples // 4, 16 * self.cfg.excited.overlap_samples)
        a = self._projections(amp, n)  # B_j = <psi_k/psi_j>_j
        # A_j = <psi_j/psi_k>_k on the state's own samples, for the normalized S^2 = A B
        w = vmc.sampler.walkers
        xs, _ = vmc.sampler.sample(max(2, -(-n // w)), self.cfg.sampler.sweeps_per_sample)
        xk = xs.reshape((-1,) + xs.shape[2:])
        own = amp(xk)
        s2 = []
        for f, b in zip(self.found, a):
            r = _ratio(*f["amp"](xk), *own)
            ok = np.isfinite(r)
            tot = self.comm.allreduce(np.array([np.where(ok, r, 0.0).sum(), float(ok.sum())]))
            s2.append(tot[0] / tot[1] * b)
        t = np.stack([np.pad(f["T"], (0, k - len(f["T"]))) for f in self.found])  # (k, k)
        wf = vmc.wf
        wf.c.assign(wf.c.numpy() + a @ t)
        vmc.sampler.refresh()
        self.log(f"state {k}: final Gram-Schmidt step: overlaps S^2 before it "
                 f"{', '.join(f'{v:+.1e}' for v in s2)}; removed the lower-state components "
                 f"(<psi_k/psi_j>_j = {', '.join(f'{v:+.3e}' for v in a)}, {n} samples each)")

    def run(self) -> dict:
        from distvmc.driver import VMC

        cfg = self.cfg
        rows = []
        for k in range(cfg.excited.states):
            t0 = time.perf_counter()
            cfg_k = self._state_cfg(k)
            wf, t_row = self._initial_trial(k, cfg_k)
            vmc = VMC(cfg_k, self.comm, self.config_dir, log=self.log, wavefunction=wf)
            self.current = vmc
            amp = _Amplitude(vmc.wf, vmc.system, self.dtype, cfg.hamiltonian.chunk_size)
            lam = penalty_strength(cfg, [f["energy"] for f in self.found]) if self.found else 0.0
            if k:
                self.log(f"state {k}: overlap penalty lambda = {lam:.4g} "
                         f"({'excited.penalty' if cfg.excited.penalty is not None else 'automatic rule'})")
            acc = vmc.thermalize()
            self.log(f"state {k}: {vmc.wf.n_parameters} parameters, thermalized: acceptance "
                     f"{acc:.3f}, step {float(vmc.sampler.step.numpy()):.4g}")
            stepper = DirectStep(cfg.optimizer, vmc.wf.n_parameters)
            apply = ParameterUpdate(vmc.wf.parameters)
            iters = cfg.optimizer.iterations
            t_train = time.perf_counter()
            for it in range(iters):
                rec = self._iteration(k, lam, stepper, apply, amp)
                if self.on_iteration is not None:
                    self.on_iteration(rec)
                if (it + 1) % cfg.output.log_every == 0 or it == 0 or it + 1 == iters:
                    extra = f"  S^2 {rec['overlap_sq']:+.2e}" if k and "overlap_sq" in rec else ""
                    self.log(f"[state {k}] [{it + 1:>{len(str(iters))}}/{iters}] "
                             f"E = {rec['energy']:.6f} ± {rec['energy_err']:.6f}{extra}  "
                             f"acc {rec['acceptance']:.3f}  "
                             f"{(time.perf_counter() - t_train) / (it + 1):.3f} s/it")
            train_s = time.perf_counter() - t0
            if k:
                self._reorthogonalize(k, vmc, amp)
            self.log(f"state {k}: evaluating with {cfg.evaluation.samples * self.comm.size} "
                     "fresh samples ...")
            result = vmc.evaluate()
            self.log(f"state {k}: E = {result['energy']:.6f} ± {result['energy_err']:.6f} "
                     f"(train {train_s:.1f} s, evaluation {result['wall_s']:.1f} s)")
            if k:
                t_row = np.concatenate([-wf.c.numpy().astype(np.float64), [1.0]])
            self.found.append({"vmc": vmc, "amp": amp, "energy": result["energy"],
                               "result": result, "penalty": lam, "T": t_row,
                               "base": wf.trial if k else wf})
            rows.append({"state": k, "energy": result["energy"], "energy_err": result["energy_err"],
                         "variance": result["variance"], "tau": result["tau"],
                         "rhat": result["rhat"], "acceptance": result["acceptance"],
                         "penalty": lam, "iterations": iters, "train_s": train_s,
                         "eval_s": result["wall_s"], "seconds": time.perf_counter() - t0})
        ov, ov_err, ov_sq, ov_sq_err = self.overlaps()
        for j in range(len(rows)):
            for k in range(j + 1, len(rows)):
                if abs(ov[j][k]) - 2 * ov_err[j][k] > 0.1:
                    self.log(f"warning: states {j} and {k} overlap by {ov[j][k]:.3f} ± "
                             f"{ov_err[j][k]:.3f}: state {k} has partly collapsed; raise "
                             "excited.penalty or optimizer.iterations")
        return {"integrator": "sampling", "states": rows, "overlaps": ov, "overlaps_err": ov_err,
                "overlaps_sq": ov_sq, "overlaps_sq_err": ov_sq_err, "found": self.found}

    def overlaps(self):
        """Normalized overlaps between all found states from fresh samples, with error bars.

        Returns (S, dS, S^2, d(S^2)), each (K, K): S = sign(A) sqrt(max(A B, 0)) with
        A = <psi_j/psi_k>_k, B = <psi_k/psi_j>_j; errors by blocking, propagated.
        """
        k_states = len(self.found)
        n_samples = max(self.cfg.evaluation.samples // 4, self.cfg.excited.overlap_samples)
        samples = []
        for f in self.found:
            sampler = f["vmc"].sampler
            w = sampler.walkers
            m = max(2, -(-n_samples // w))
            xs, _ = sampler.sample(m, self.cfg.sampler.sweeps_per_sample)
            samples.append(xs)  # (M, W, N, D)
        # own log|psi| and sign on own samples
        own = []
        for f, xs in zip(self.found, samples):
            flat = xs.reshape((-1,) + xs.shape[2:])
            own.append(f["amp"](flat))
        ov = np.eye(k_states)
        ov_err = np.zeros((k_states, k_states))
        ov_sq = np.eye(k_states)
        ov_sq_err = np.zeros((k_states, k_states))
        for j in range(k_states):
            for k in range(j + 1, k_states):
                xk, xj = samples[k], samples[j]
                fk, fj = self.found[k]["amp"], self.found[j]["amp"]
                uj_at_k, sj_at_k = fj(xk.reshape((-1,) + xk.shape[2:]))
                uk_at_j, sk_at_j = fk(xj.reshape((-1,) + xj.shape[2:]))
                r_a = _ratio(uj_at_k, sj_at_k, *own[k]).reshape(xk.shape[:2])
                r_b = _ratio(uk_at_j, sk_at_j, *own[j]).reshape(xj.shape[:2])
                sa, sb = stats.summarize(r_a, self.comm), stats.summarize(r_b, self.comm)
                s2 = sa.mean * sb.mean
                ds2 = math.hypot(sb.mean * sa.error, sa.mean * sb.error)
                s = math.copysign(math.sqrt(max(s2, 0.0)), sa.mean)
                ds = ds2 / (2 * abs(s)) if abs(s) > math.sqrt(max(ds2, 0.0)) else math.sqrt(ds2)
                ov[j, k] = ov[k, j] = s
                ov_err[j, k] = ov_err[k, j] = ds
                ov_sq[j, k] = ov_sq[k, j] = s2
                ov_sq_err[j, k] = ov_sq_err[k, j] = ds2
        return ov, ov_err, ov_sq, ov_sq_err


def solve_sampling(cfg, comm=None, config_dir=None, log=print, on_iteration=None) -> dict:
    """The lowest ``excited.states`` states by VMC with the overlap penalty (see module doc)."""
    return PenalizedSearch(cfg, comm, config_dir, log, on_iteration).run()


# ----------------------------------------------------------------------------
# Run directory (called by ``distvmc run`` for grid mode or excited.states > 1)
# ----------------------------------------------------------------------------


def _save_states(path: str, wavefunctions: list, extra: dict | None = None,
                 group: str = "grid") -> None:
    """params.h5: group ``parameters`` = state 0 (what ``distvmc evaluate`` reads) and
    ``states/<k>`` for every state; ``extra`` arrays go to ``<group>/``: for the grid the
    projection coefficients, log scale and norm of each state (state k = (phi_k e^{-shift_k}
    - sum_j coefficients_k[j] state_j) / sqrt(norm_k)); for sampling the expansion
    T (K, K) of each state over the base networks, psi_k = sum_i T_ki phi_i, with
    state k's ``projection`` parameters the -T_ki, i < k."""
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        for k, named in enumerate(wavefunctions):
            g = f.create_group(f"states/{k}")
            for name, v in named.items():
                g.create_dataset(name, data=v)
        g0 = f.create_group("parameters")
        for name, v in wavefunctions[0].items():
            g0.create_dataset(name, data=v)
        f.attrs["n_states"] = len(wavefunctions)
        f.attrs["n_parameters"] = int(sum(np.size(v) for v in wavefunctions[0].values()))
        for key, value in (extra or {}).items():
            f.create_dataset(f"{group}/{key}", data=value)
    os.replace(tmp, path)


def format_table(rows: list, refs: list) -> list[str]:
    lines = ["state  energy            error        reference     difference"]
    for r, ref in zip(rows, refs):
        diff = f"{r['energy'] - ref:+.3e}" if ref is not None else ""
        rs = f"{ref:.6f}" if ref is not None else ""
        lines.append(f"{r['state']:>5}  {r['energy']:<16.10f}  {r['energy_err']:<11.3e}  "
                     f"{rs:<12}  {diff}")
    return lines


def run_states(cfg, comm, config_dir, run_dir) -> int:
    """``distvmc run`` for grid mode and excited states: optimize, then write the run directory.

    Files: config.yaml, history.csv (one row per state and iteration), params.h5
    (every state), summary.json (energies table, overlaps), observables.json,
    and for the grid density.json (normalized |psi_k|^2 on the grid).
    """
    log = print if comm.is_root else (lambda *a, **k: None)
    t0 = time.perf_counter()
    k_states = cfg.excited.states
    log(f"distvmc {__version__}: {cfg.name}: {cfg.system.particles} particle(s) in "
        f"{cfg.system.dim}D, {k_states} state(s), integrator {cfg.integrator}, optimizer "
        f"{cfg.optimizer.type}; run directory {run_dir}")
    history = io.History(run_dir, STATE_HISTORY_FIELDS) if comm.is_root else None
    if comm.is_root:
        io.write_config(run_dir, cfg.to_dict())
    on_it = history.append if history else None
    refs = _references(cfg)
    summary = {"name": cfg.name, "integrator": cfg.integrator, "states": k_states}
    if cfg.integrator == "grid":
        system = build_system(cfg, config_dir)
        res = solve_grid(cfg, system, log=log, on_iteration=on_it)
        grid, found, wf = res["grid"], res["grid_states"], res["wavefunction"]
        named = []
        for st in found:
            wf.set_flat(st.theta)
            named.append(wf.named_parameters())
        extra = {"shape": np.array(grid.shape), "half_widths": grid.half_widths,
                 "spacing": grid.spacing}
        for k, st in enumerate(found):
            extra[f"coefficients_{k}"] = st.coefficients
            extra[f"shift_{k}"] = st.info["shift"]
            extra[f"norm_{k}"] = st.info["norm"]
        obs = grid_observables(grid, system, found)
        summary.update({
            "grid": {"shape": list(grid.shape), "spacing": grid.spacing.tolist(),
                     "half_widths": grid.half_widths.tolist(), "kinetic": cfg.grid.kinetic},
            "parameters": wf.n_parameters,
        })
        if comm.is_root:
            io.write_json(os.path.join(run_dir, "density.json"), grid_density(grid, found, res["states"]))
            _save_states(os.path.join(run_dir, "params.h5"), named, extra)
    else:
        res = solve_sampling(cfg, comm, config_dir, log=log, on_iteration=on_it)
        named = [f["vmc"].wf.named_parameters() for f in res["found"]]
        obs = [dict(f["result"]["observables"], radial_density=f["result"]["radial_density"])
               for f in res["found"]]
        summary.update({"overlaps_err": np.asarray(res["overlaps_err"]).tolist(),
                        "overlaps_sq": np.asarray(res["overlaps_sq"]).tolist(),
                        "overlaps_sq_err": np.asarray(res["overlaps_sq_err"]).tolist(),
                        "parameters": res["found"][0]["vmc"].wf.n_parameters,
                        "ranks": comm.size, "backend": comm.name})
        k_states = len(res["found"])
        expansion = np.zeros((k_states, k_states))  # psi_k = sum_i T_ki phi_i (base networks)
        for k, f in enumerate(res["found"]):
            expansion[k, :len(f["T"])] = f["T"]
        if comm.is_root:
            _save_states(os.path.join(run_dir, "params.h5"), named, {"expansion": expansion},
                         group="sampling")
    rows = res["states"]
    for r, ref in zip(rows, refs):
        r["reference"] = ref
    wall = time.perf_counter() - t0
    ov = np.asarray(res["overlaps"])
    off = ov - np.diag(np.diag(ov))
    summary.update({
        "energy": rows[0]["energy"], "energy_err": rows[0]["energy_err"],
        "reference_energy": refs[0],
        "energies": rows,
        "overlaps": ov.tolist(),
        "max_overlap": float(np.max(np.abs(off))) if len(rows) > 1 else 0.0,
        "wall_s": wall, "version": __version__,
    })
    if comm.is_root:
        io.write_json(os.path.join(run_dir, "summary.json"), summary)
        io.write_json(os.path.join(run_dir, "observables.json"),
                      {"states": [dict(state=k, energy=r["energy"], energy_err=r["energy_err"], **o)
                                  for k, (r, o) in enumerate(zip(rows, obs))]})
    for line in format_table(rows, refs):
        log(line)
    if len(rows) > 1 and cfg.integrator == "grid":
        log("overlaps <psi_i|psi_j> (normalized, quadrature):")
        for i, row in enumerate(ov):
            log("  " + "  ".join(f"{v:+.2e}" for v in row))
    elif len(rows) > 1:
        log("overlaps (Monte Carlo, normalized): S = sign(A) sqrt(A B), S^2 = A B with "
            "A = <psi_j/psi_k>_k, B = <psi_k/psi_j>_j")
        for j in range(len(rows)):
            for k in range(j + 1, len(rows)):
                log(f"  S_{j}{k} = {res['overlaps'][j][k]:+.4f} ± {res['overlaps_err'][j][k]:.4f}   "
                    f"S^2 = {res['overlaps_sq'][j][k]:+.2e} ± {res['overlaps_sq_err'][j][k]:.2e}")
    log(f"wall {wall:.1f} s; results in {run_dir}")
    return 0


# ----------------------------------------------------------------------------
# Figures (``distvmc plot RUN_DIR`` delegates here for multi-state runs)
# ----------------------------------------------------------------------------


def plot_states(run_dir: str, out_dir: str | None, plt) -> list[str]:
    """PNGs of a grid-mode or excited-state run; returns their paths.

      energy.png   energy per iteration, one curve per state, reference energies dashed
      density.png  (grid mode) the normalized |psi_k|^2 on the grid: curves in 1D,
                   one image per state in 2D
    """
    from distvmc.io import read_history
    from distvmc.plot import saver

    out_dir = out_dir or os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    rows = read_history(run_dir)
    summary = {}
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    name = summary.get("name", os.path.basename(os.path.normpath(run_dir)))
    written = []
    save = saver(plt, out_dir, written)

    states = sorted({int(r["state"]) for r in rows if r.get("state") is not None})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    finals = {r["state"]: r for r in summary.get("energies", [])}
    for k in states:
        sel = [r for r in rows if int(r["state"]) == k]
        it = np.array([r["iteration"] for r in sel], dtype=float)
        e = np.array([r["energy"] if r["energy"] is not None else np.nan for r in sel])
        c = colors[k % len(colors)]
        fin = finals.get(k, {})
        label = f"state {k}"
        if "energy" in fin:
            label += f": {fin['energy']:.6f}" + (f" ± {fin['energy_err']:.6f}"
                                                  if fin.get("energy_err") else "")
        ax.plot(it, e, color=c, lw=1.0, label=label)
        if fin.get("reference") is not None:
            ax.axhline(fin["reference"], color=c, ls="--", lw=0.8)
    finite = [r["energy"] for r in rows if r.get("energy") is not None]
    if finals and finite:
        lo = min(min(f["energy"] for f in finals.values()), min(finite))
        hi = max(f["energy"] for f in finals.values())
        pad = 0.15 * max(hi - lo, 1e-3)
        ax.set_ylim(lo - pad, hi + 3 * pad)
    ax.set_xlabel("iteration (of each state)")
    ax.set_ylabel("energy")
    ax.set_title(f"{name}: energies of the states (references dashed)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    save(fig, "energy.png")

    dpath = os.path.join(run_dir, "density.json")
    if os.path.exists(dpath):
        with open(dpath) as f:
            dens = json.load(f)
        axes = [np.asarray(a) for a in dens["axes"]]
        if len(axes) == 1:
            fig, ax = plt.subplots(figsize=(7, 4.2))
            for st in dens["states"]:
                ax.plot(axes[0], st["density"], lw=1.2, color=colors[st["state"] % len(colors)],
                        label=f"state {st['state']}: E = {st['energy']:.6f}")
            ax.set_xlabel(dens["coordinates"][0])
            ax.set_ylabel("|psi|^2 (normalized)")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        else:
            n = len(dens["states"])
            fig, axs = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
            for ax, st in zip(axs[0], dens["states"]):
                ax.imshow(np.asarray(st["density"]).T, origin="lower", cmap="viridis",
                          extent=[axes[0][0], axes[0][-1], axes[1][0], axes[1][-1]])
                ax.set_title(f"state {st['state']}: E = {st['energy']:.5f}", fontsize=9)
                ax.set_xlabel(dens["coordinates"][0])
                ax.set_ylabel(dens["coordinates"][1])
        fig.suptitle(f"{name}: grid density |psi_k|^2")
        save(fig, "density.png")
    return written
