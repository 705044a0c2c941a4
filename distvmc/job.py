"""A job: the lowest ``excited.states`` states of one config, one after another,
each trained by the one driver loop.

    for state k = 0 .. K-1:
        wavefunction   fresh network (seed + k * reseed); sampling mode, k > 0: minus its
                       projections on the found states (distvmc.excited)
        objective      MonteCarloEnergy (k = 0), PenalizedEnergy (k > 0), or
                       QuadratureEnergy (grid mode; lower states projected out exactly)
        driver.train   sample -> objective -> preconditioner -> update -> hooks
        finish         sampling: (k > 0: Gram-Schmidt step) evaluation with fresh samples;
                       grid: normalize and measure by quadrature

A plain ground-state run is the case K = 1, and state 0 of an excited-state run
is trained exactly as the plain run of the same config. :meth:`Job.state` is
the tree a checkpoint holds: the states found so far (parameters, evaluation,
their samplers, which keep running for the overlaps) and the current driver's
state; :meth:`Job.set_state` rebuilds the job from it on any number of ranks.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tensorflow as tf

from distvmc import excited
from distvmc.driver import Driver, Progress
from distvmc.grid import Grid, GridEnergy, GridState, finish_state, overlap_matrix
from distvmc.objectives import (Amplitude, LowerState, MonteCarloEnergy, PenalizedEnergy,
                                QuadratureEnergy)
from distvmc.optimizers import make_preconditioner
from distvmc.state import copy_tree


@dataclasses.dataclass
class Found:
    """A finished state. Sampling: wf, its base network, T row (psi = sum_i T_i phi_i over
    the base networks), evaluation result and a LowerState (sampler that keeps running).
    Grid: the GridState."""

    k: int
    iterations: int
    train_s: float
    wf: object = None
    base: object = None
    T: np.ndarray | None = None
    result: dict | None = None
    penalty: float = 0.0
    lower: LowerState | None = None
    grid: GridState | None = None
    converged: bool | None = None
    variance: float | None = None
    rewinds: list = dataclasses.field(default_factory=list)

    def state(self) -> dict:
        out = {"k": self.k, "iterations": self.iterations, "train_s": self.train_s,
               "rewinds": copy_tree(self.rewinds),
               "penalty": self.penalty, "converged": self.converged, "variance": self.variance}
        if self.grid is not None:
            out["grid"] = dataclasses.asdict(self.grid)
        else:
            out.update(parameters=self.wf.get_flat(), T=np.asarray(self.T, dtype=np.float64),
                       result=copy_tree(self.result), sampler=self.lower.sampler.state())
        return out


class Job:
    """Everything one run of a config does, on one rank of ``comm``.

    Args:
      cfg: validated config.
      comm: communicator.
      system: the :class:`~distvmc.systems.System` (built by the caller from cfg).
      log: print-like function (rank 0 prints; other ranks pass a no-op).
      wavefunction: optional builder ``(cfg, system, seed) -> Wavefunction`` replacing
        :func:`distvmc.wavefunctions.build_wavefunction` (the Python API's own ansatz).
      grid_energy: grid mode: a :class:`~distvmc.grid.GridEnergy` to reuse.
    """

    def __init__(self, cfg, comm, system, log=print, wavefunction=None, grid_energy=None):
        from distvmc.wavefunctions import build_wavefunction

        self.cfg, self.comm, self.system, self.log = cfg, comm, system, log
        self.build_wavefunction = wavefunction or build_wavefunction
        self.dtype = tf.float64 if cfg.precision == "float64" else tf.float32
        self.grid_mode = cfg.integrator == "grid"
        self.n_states = cfg.excited.states
        self.k = 0
        self.found: list[Found] = []
        self.history: list[dict] = []
        self.driver: Driver | None = None
        # grid mode: one GridEnergy for every state (a caller may pass one built for the same
        # grid, system and ansatz: reusing it skips TensorFlow tracing)
        self._energy: GridEnergy | None = grid_energy
        self._t_state = time.perf_counter()
        self.wf = grid_energy.wf if grid_energy is not None else None
        self.pretrain_pending = False  # fresh state 0 with pretrain.iterations > 0
        self.pretrained: dict | None = None

    # ------------------------------------------------------------------
    @property
    def multi(self) -> bool:
        return self.grid_mode or self.n_states > 1

    @property
    def total_iterations(self) -> int:
        return sum(f.iterations for f in self.found) + (self.driver.iteration if self.driver else 0)

    @property
    def walkers_per_rank(self) -> int:
        """Walkers of this rank (after a resume on another rank count, not the config's)."""
        if self.found and self.found[0].lower is not None:
            return self.found[0].lower.sampler.walkers
        sampler = getattr(self.driver.objective, "sampler", None) if self.driver else None
        return sampler.walkers if sampler is not None else self.cfg.sampler.walkers

    def _prefix(self) -> str:
        return f"[state {self.k}] " if self.multi else ""

    def _grid_energy(self, wf) -> GridEnergy:
        if self._energy is None:
            c = self.cfg
            self._energy = GridEnergy(wf, self.system, Grid.from_config(c), c.grid.kinetic, "hessian",
                                      max_lower=max(self.n_states - 1, 1),
                                      chunk_size=c.grid.chunk_size, dtype=self.dtype)
            g = self._energy.grid
            shape = " x ".join(map(str, g.shape)) + (f" = {g.size}" if len(g.shape) > 1 else "")
            self.log(f"grid: {shape} points, spacing {', '.join(f'{h:.4g}' for h in g.spacing)}, "
                     f"box +-{', '.join(f'{L:g}' for L in g.half_widths)}; kinetic {c.grid.kinetic}")
        return self._energy

    # ------------------------------------------------------------------
    def start_state(self, k: int, fresh: bool = True) -> None:
        """Build state k's wavefunction, objective, preconditioner and driver.

        ``fresh``: a new start (draws the orthogonalized start of an excited state from
        the lower states' samplers); False when a checkpoint will set the state next.
        """
        cfg, comm = self.cfg, self.comm
        seed = excited.state_seed(cfg, k)
        self.k = k
        self._t_state = time.perf_counter()
        self.pretrain_pending = False
        if self.grid_mode:
            if self.wf is None:
                self.wf = self.build_wavefunction(cfg, self.system, cfg.seed)
            wf = self.wf
            energy = self._grid_energy(wf)
            wf.set_flat(self.build_wavefunction(cfg, self.system, seed).get_flat())
            energy.set_lower([f.grid for f in self.found])
            objective = QuadratureEnergy(energy, cfg)
        elif k == 0:
            wf = self.build_wavefunction(cfg, self.system, seed)
            objective = MonteCarloEnergy(wf, self.system, cfg, comm, seed, self.log)
            self.pretrain_pending = fresh and cfg.pretrain.iterations > 0
        else:
            from distvmc.wavefunctions.projected import ProjectedWavefunction

            trial = self.build_wavefunction(cfg, self.system, seed)
            c = np.zeros(k)
            if fresh:
                amp = Amplitude(trial, trial.config_shape, self.dtype, cfg.hamiltonian.chunk_size)
                c = excited.orthogonal_start(amp, self.found, cfg, comm, self.log)
            wf = ProjectedWavefunction(trial, [f.base for f in self.found], c)
            lam = excited.penalty_strength(cfg, [f.result["energy"] for f in self.found])
            if fresh:
                self.log(f"state {k}: overlap penalty lambda = {lam:.4g} "
                         f"({'excited.penalty' if cfg.excited.penalty is not None else 'automatic rule'})")
            objective = PenalizedEnergy(wf, self.system, cfg, comm, seed,
                                        [f.lower for f in self.found], lam, self.log)
        self.wf = wf
        pre = make_preconditioner(cfg.optimizer, comm, wf.n_parameters, self.log)
        self.driver = Driver(wf, objective, pre, cfg, comm, self.history,
                             {"state": k} if self.multi else None, self.log)

    def train(self, hooks=()) -> None:
        """Train the current state to ``optimizer.iterations`` (or grid convergence)."""
        cfg = self.cfg
        if self.pretrain_pending and self.driver.iteration == 0:  # never after a resume
            from distvmc.pretrain import pretrain

            self.pretrain_pending = False
            self.pretrained = pretrain(self.wf, self.system, cfg, self.comm,
                                       excited.state_seed(cfg, 0), self.log)
            sampler = self.driver.objective.sampler  # VMC starts from the pretraining walkers
            sampler.x.assign(self.pretrained["walkers"])
            sampler.refresh()
        progress = Progress(self.driver, cfg.optimizer.iterations, cfg.output.log_every,
                            self.log, self._prefix())
        self.driver.train(cfg.optimizer.iterations, [progress, *hooks])
        self.driver.finish()

    def finish_state(self, between_blocks=None) -> Found:
        """Measure the trained state and add it to the found states."""
        cfg, d, k = self.cfg, self.driver, self.k
        train_s = time.perf_counter() - self._t_state
        if self.grid_mode:
            st = finish_state(d.objective.energy, cfg.grid.edge_tolerance, k, self.log)
            var = d.objective.energy.variance()
            conv = bool(cfg.grid.tolerance > 0 and var < cfg.grid.tolerance)
            found = Found(k, d.iteration, train_s, grid=st, converged=conv, variance=var,
                          rewinds=copy_tree(d.rewinds))
            self.log(f"state {k}: E = {st.energy:.10f} (parts {st.energy_parts:.10f}, laplacian "
                     f"{st.energy_laplacian:.10f}); energy variance {var:.2e} after {d.iteration} "
                     f"iterations, {train_s:.1f} s")
            if not conv:
                self.log(f"warning: state {k} did not converge in {d.iteration} iterations "
                         f"(optimizer.iterations): its energy variance {var:.2e} is above "
                         f"grid.tolerance = {cfg.grid.tolerance:g}, so E may lie above the exact "
                         f"level by up to about variance/gap; raise optimizer.iterations")
        else:
            obj = d.objective
            if k:
                excited.reorthogonalize(k, self.wf, obj, self.found, cfg, self.comm, self.log)
            n = cfg.evaluation.samples
            self.log(f"{self._prefix()}evaluating with {n} fresh samples ...")
            result = obj.evaluate(between_blocks=between_blocks)
            t_row = (np.concatenate([-self.wf.c.numpy().astype(np.float64), [1.0]]) if k
                     else np.array([1.0]))
            lower = LowerState(self.wf, obj.sampler,
                               obj.amp if k else Amplitude(self.wf, self.wf.config_shape, self.dtype,
                                                           cfg.hamiltonian.chunk_size))
            found = Found(k, d.iteration, train_s, wf=self.wf, base=self.wf.trial if k else self.wf,
                          T=t_row, result=result, penalty=getattr(obj, "penalty", 0.0), lower=lower,
                          rewinds=copy_tree(d.rewinds))
            if self.multi:
                self.log(f"state {k}: E = {result['energy']:.6f} ± {result['energy_err']:.6f} "
                         f"(train {train_s:.1f} s, evaluation {result['wall_s']:.1f} s)")
        self.found.append(found)
        self.driver = None
        self.k = k + 1
        return found

    def run(self, hooks_for=lambda job: [], between_blocks=None) -> None:
        """Every state not yet found: start, train, finish."""
        while self.k < self.n_states:
            if self.driver is None:
                self.start_state(self.k)
            self.train(hooks_for(self))
            self.finish_state(between_blocks)

    # -- state -------------------------------------------------------------
    def state(self) -> dict:
        return {"k": self.k, "found": [f.state() for f in self.found],
                "driver": self.driver.state() if self.driver is not None else None}

    def set_state(self, state: dict) -> str:
        """Rebuild the job from a (gathered) :meth:`state`; returns notes on the restore."""
        cfg, comm = self.cfg, self.comm
        self.found = []
        notes = []
        for fs in state["found"]:
            k = int(fs["k"])
            common = dict(k=k, iterations=int(fs["iterations"]), train_s=float(fs["train_s"]),
                          penalty=float(fs["penalty"]), converged=fs.get("converged"),
                          variance=fs.get("variance"), rewinds=list(fs["rewinds"]))
            if self.grid_mode:
                self.found.append(Found(grid=GridState(**fs["grid"]), **common))
                continue
            self.start_state(k, fresh=False)  # the state's wavefunction and sampler, then its values
            obj = self.driver.objective
            self.wf.set_flat(np.asarray(fs["parameters"], dtype=np.float64))
            note = obj.set_state({"sampler": fs["sampler"], "thermalized": True})
            if note:
                notes.append(f"state {k}: {note}")
            amp = obj.amp if k else Amplitude(self.wf, self.wf.config_shape, self.dtype,
                                              cfg.hamiltonian.chunk_size)
            self.found.append(Found(wf=self.wf, base=self.wf.trial if k else self.wf,
                                    T=np.asarray(fs["T"]), result=fs["result"],
                                    lower=LowerState(self.wf, obj.sampler, amp), **common))
        self.driver = None
        self.k = int(state["k"])
        if state.get("driver") is not None:
            self.start_state(self.k, fresh=False)
            note = self.driver.set_state(state["driver"])
            if note:
                notes.append(note)
        return "; ".join(notes)

    # -- results -------------------------------------------------------------
    def overlaps(self):
        """(S, dS, S^2, dS^2) between the found states (grid: exact, errors 0)."""
        if self.grid_mode:
            ov = overlap_matrix(self._grid_energy(self.wf).grid, [f.grid for f in self.found])
            z = np.zeros_like(ov)
            return ov, z, ov * ov, z
        return excited.overlaps(self.found, self.cfg, self.comm)
