"""The one training loop: sample -> objective -> preconditioner -> update -> hooks.

Every mode (ground state by sampling, excited states by a penalized search,
grid quadrature) runs through :meth:`Driver.step`. One iteration on every rank:

1. **objective** (:mod:`distvmc.objectives`): sample and measure (or
   integrate on the grid); returns the iteration's record and a
   :class:`~distvmc.optimizers.sr.Gradient`.
2. **recovery**: non-finite energies rewind every rank to the last good state
   (the start of the previous finite iteration: parameters, walkers,
   optimizer state; the random streams continue, so the retry draws fresh
   numbers) and the run continues with the learning rate times
   ``recovery.lr_factor`` and the SR shift times ``recovery.shift_factor``, at
   most ``recovery.max_rewinds`` times (then :class:`NonFiniteEnergyError`).
   For a deterministic objective (grid) a step that raised the energy is
   undone the same way and the step size halved (step control; an accepted
   step grows it by 1.2, up to :data:`MAX_STEP_SCALE`).
3. **preconditioner** (:mod:`distvmc.optimizers`): SR or Adam gives the
   direction delta, identical on every rank.
4. **update**: theta <- theta - lr delta (clipped to ``optimizer.max_update_norm``);
   the objective refreshes what depends on theta (the sampler's log|psi|^2).
5. **hooks**: callables on the record, every rank, in order (progress
   line, history file, TensorBoard, checkpoints and pre-emption signals).

The driver's :meth:`state` (parameters, optimizer, objective, iteration,
recovery) is the tree that snapshots, rewinds and checkpoints share
(:mod:`distvmc.state`).
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from distvmc.objectives import NonFiniteEnergyError
from distvmc.optimizers import learning_rate
from distvmc.state import copy_tree

MAX_STEP_SCALE = 20.0  # step control (deterministic objectives): lr grows up to this factor


def _injected_failure(rank: int, iteration: int) -> None:
    """TEST ONLY: raise on rank DISTVMC_FAIL_RANK at iteration DISTVMC_FAIL_ITERATION.

    Lets the test suite check that one failing rank ends the whole job
    promptly (tests/test_multirank.py). Unset in normal runs.
    """
    fail_rank = os.environ.get("DISTVMC_FAIL_RANK")
    if fail_rank is not None and int(fail_rank) == rank and \
            iteration == int(os.environ.get("DISTVMC_FAIL_ITERATION", "0")):
        raise RuntimeError(f"injected failure (DISTVMC_FAIL_RANK={fail_rank}, "
                           f"DISTVMC_FAIL_ITERATION={iteration})")


def fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Driver:
    """Optimizes one wavefunction's parameters against one objective.

    Args:
      wf: the wavefunction (parameters as a flat vector: ``get_flat``/``set_flat``).
      objective: :mod:`distvmc.objectives` object.
      preconditioner: :class:`~distvmc.optimizers.SR` or :class:`~distvmc.optimizers.Adam`.
      cfg: the validated config (optimizer, recovery sections).
      comm: the communicator.
      history: the list the records are appended to (shared by the states of a run).
      extra: fields added to every record (e.g. {"state": k}).
    """

    def __init__(self, wf, objective, preconditioner, cfg, comm, history=None, extra=None,
                 log=print):
        self.wf, self.objective, self.preconditioner = wf, objective, preconditioner
        self.cfg, self.comm, self.log = cfg, comm, log
        self.history = history if history is not None else []
        self.extra = dict(extra or {})
        self.iteration = 0
        # recovery (rewinds) and step control
        self.lr_scale = 1.0  # times recovery.lr_factor per rewind
        self.shift_scale = 1.0  # times recovery.shift_factor per rewind
        self.step_scale = 1.0  # step control of deterministic objectives
        self.accepted_energy: float | None = None  # deterministic: energy of the last accepted step
        self.rewinds: list[dict] = []
        self.last_good: dict | None = None  # snapshot() at the start of the last finite iteration
        self.converged = False

    @property
    def step_control(self) -> bool:
        return bool(self.objective.deterministic and self.cfg.optimizer.type == "sr")

    # -- state -----------------------------------------------------------
    def snapshot(self) -> dict:
        """A copy of this rank's optimization state (no collectives). Every ``state()``
        returns fresh arrays, so nothing here aliases live state (no second copy on the
        hot path: this runs every iteration)."""
        return {"iteration": self.iteration, "parameters": self.wf.get_flat(),
                "optimizer": self.preconditioner.state(), "objective": self.objective.state(),
                "history_len": len(self.history)}

    def restore(self, snap: dict) -> str:
        """Back to a :meth:`snapshot` (history records after it are dropped)."""
        self.wf.set_flat(np.asarray(snap["parameters"], dtype=np.float64))
        self.preconditioner.set_state(snap["optimizer"])
        note = self.objective.set_state(snap["objective"])  # recomputes log|psi|^2 of the walkers
        self.iteration = int(snap["iteration"])
        del self.history[int(snap["history_len"]):]
        return note

    def state(self) -> dict:
        """Everything that determines the rest of the optimization (see :mod:`distvmc.state`)."""
        out = self.snapshot()
        out["recovery"] = {"lr_scale": self.lr_scale, "shift_scale": self.shift_scale,
                           "step_scale": self.step_scale, "accepted_energy": self.accepted_energy,
                           "rewinds": copy_tree(self.rewinds), "converged": self.converged}
        out["last_good"] = copy_tree(self.last_good)
        return out

    def set_state(self, state: dict) -> str:
        """Restore :meth:`state` (a checkpoint's, gathered from any number of ranks)."""
        note = self.restore(state)
        r = state["recovery"]
        self.lr_scale, self.shift_scale = float(r["lr_scale"]), float(r["shift_scale"])
        self.step_scale = float(r["step_scale"])
        self.accepted_energy = None if r["accepted_energy"] is None else float(r["accepted_energy"])
        self.rewinds = copy_tree(r["rewinds"])
        self.converged = bool(r["converged"])
        self.last_good = None
        if state.get("last_good") is not None and not note:
            self.last_good = state["last_good"]  # kept only when walkers were restored exactly
        elif state.get("last_good") is not None:
            note += "; the rewind target was dropped (it holds the old rank layout)"
        return note

    # -- one iteration -----------------------------------------------------
    def _rewind(self, rec: dict, start: dict) -> dict:
        """Back to the last good state with a smaller step (every rank does the same)."""
        r = self.cfg.recovery
        bad = self.iteration
        target = self.last_good if self.last_good is not None else start
        if self.objective.deterministic:
            what, are = "the energy or its gradient", "is"
        else:
            what, are = (f"{rec.get('nonfinite', 0)} of {rec.get('samples', '?')} local energies",
                         "are")
        if len(self.rewinds) >= r.max_rewinds:
            raise NonFiniteEnergyError(
                f"iteration {bad}: {what} {are} not finite after {len(self.rewinds)} rewind(s) "
                f"(recovery.max_rewinds = {r.max_rewinds}); last good state: start of iteration "
                f"{target['iteration']}; try a smaller optimizer.lr, a larger optimizer.shift "
                "or optimizer.max_update_norm")
        self._back_to(target)
        self.lr_scale *= r.lr_factor
        self.shift_scale *= r.shift_factor
        shift = self.cfg.optimizer.shift * self.shift_scale
        event = {"iteration": bad, "to": int(target["iteration"]), "nonfinite": rec.get("nonfinite", 0),
                 "lr_scale": self.lr_scale, "shift": shift}
        self.rewinds.append(event)
        self.log(f"warning: iteration {bad}: {what} not finite; rewound to the start of iteration "
                 f"{target['iteration']} (rewind {len(self.rewinds)} of at most {r.max_rewinds}); "
                 f"learning rate now x{self.lr_scale:g}"
                 + (f", SR shift {shift:g}" if self.cfg.optimizer.type == "sr" else ""))
        rec["solve"] = "rewind"
        rec["rewind"] = event
        return rec

    def _back_to(self, target: dict) -> None:
        """Restore ``target`` but keep the random streams going (fresh numbers on the retry)."""
        counter = self.objective.state().get("sampler", {}).get("counter")
        self.restore(target)
        if counter is not None:
            self.objective.sampler.counter.assign(int(counter.value))

    def step(self) -> dict:
        """One iteration; returns its record (a rewind's record is not a history row)."""
        self.objective.prepare()
        _injected_failure(self.comm.rank, self.iteration)
        start = self.snapshot()
        t0 = time.perf_counter()
        o = self.cfg.optimizer
        rec, grad = self.objective.estimate(self.preconditioner.needs_metric)
        rec = {"iteration": self.iteration, **self.extra, **rec}
        if grad is None:
            return self._rewind(rec, start)
        rejected = False
        if self.step_control and self.accepted_energy is not None:
            e, e0 = rec["energy"], self.accepted_energy
            if not e <= e0 + 1e-12 * abs(e0):  # the last step raised E: undo it, halve the step
                self._parameters_back(self.last_good)
                self.step_scale *= 0.5
                rejected = True
                again, grad = self.objective.estimate(self.preconditioner.needs_metric)
                rec = {"iteration": self.iteration, **self.extra, **again}
            else:
                self.step_scale = min(self.step_scale * 1.2, MAX_STEP_SCALE)
        if self.step_control:
            self.accepted_energy = rec["energy"]
        if not rejected:
            self.last_good = start
        lr = learning_rate(o, self.iteration) * self.lr_scale * self.step_scale
        rec["lr"] = lr
        if self.objective.deterministic and self.objective.converged(rec):
            # done: keep the parameters whose convergence was measured
            self.converged = True
            rec.update(converged=True, solve="converged", update_norm=0.0)
            self.iteration += 1
            rec["seconds"] = time.perf_counter() - t0
            self.history.append(rec)
            return rec
        t3 = time.perf_counter()
        delta, info = self.preconditioner.direction(grad, o.shift * self.shift_scale)
        update = lr * delta
        norm = float(np.linalg.norm(update))
        rec["clipped"] = 0
        cap = o.max_update_norm
        if cap is not None and o.max_update_norm_decay:
            cap = cap / (1.0 + o.lr_decay * self.iteration)
        if cap is not None and norm > cap:
            update *= cap / norm
            rec["clipped"] = 1
        if np.all(np.isfinite(update)):
            self.wf.set_flat(self.wf.get_flat() - update)
            self.objective.after_update()
            rec["update_norm"] = float(np.linalg.norm(update))
            rec["solve"] = "rejected" if rejected else (info["solve"] or info["solver"])
        else:
            rec["update_norm"] = float("nan")
            rec["solve"] = "non-finite update (skipped)"
        rec["t_optimizer"] = time.perf_counter() - t3
        rec.update({f"t_{k}": v for k, v in self.preconditioner.timings.items()})
        if str(info.get("solve", "")).startswith(("cholesky(", "eigh", "cg not converged")):
            self.log(f"note: iteration {self.iteration}: SR solve: {info['solve']}")
        self.iteration += 1
        rec["seconds"] = time.perf_counter() - t0
        self.history.append(rec)
        return rec

    def _parameters_back(self, snap: dict) -> None:
        """Parameters, optimizer and objective state of ``snap``; iteration and history stay."""
        self.wf.set_flat(np.asarray(snap["parameters"], dtype=np.float64))
        self.preconditioner.set_state(snap["optimizer"])
        self.objective.set_state(snap["objective"])

    def finish(self) -> None:
        """Deterministic objectives: the last step was never checked; undo it if it raised E."""
        if not self.step_control or self.accepted_energy is None or self.last_good is None \
                or self.converged:
            return
        rec, _ = self.objective.estimate(False)
        if not rec["energy"] <= self.accepted_energy + 1e-12 * abs(self.accepted_energy):
            self._parameters_back(self.last_good)

    # -- the loop -------------------------------------------------------------
    def train(self, target: int, hooks=()) -> None:
        """Iterate until ``target`` iterations are done (a resumed run does the rest) or a
        deterministic objective has converged. ``hooks`` are called with every record."""
        self.objective.prepare()
        start = len(self.history)
        while self.iteration < target and not self.converged:
            rec = self.step()
            for hook in hooks:
                hook(rec)
        self._clipping_note(self.history[start:])

    def _clipping_note(self, recs: list) -> None:
        """Say so when max_update_norm cut (nearly) every update: the steps then all have
        that length whatever the SR direction's size, so lr and lr_decay did nothing."""
        clipped = [r["clipped"] for r in recs if "clipped" in r]
        if len(clipped) < 50 or np.mean(clipped) < 0.9:
            return
        o = self.cfg.optimizer
        if o.max_update_norm_decay:
            self.log(f"note: optimizer.max_update_norm shortened {100 * np.mean(clipped):.0f}% "
                     f"of the last {len(clipped)} updates: the steps followed its decay, not lr")
            return
        self.log(f"note: optimizer.max_update_norm = {o.max_update_norm:g} shortened "
                 f"{100 * np.mean(clipped):.0f}% of the last {len(clipped)} updates, so every "
                 f"step had that length and lr / lr_decay had no effect; to let the step "
                 f"shrink, lower optimizer.lr (now {o.lr:g}) or set "
                 f"optimizer.max_update_norm_decay")


class Progress:
    """Hook: one progress line every ``every`` iterations (and the first and last) with ETA."""

    def __init__(self, driver: Driver, target: int, every: int, log=print, prefix: str = ""):
        self.driver, self.target, self.every, self.log = driver, target, every, log
        self.prefix = prefix
        self.first = driver.iteration
        self.mark = None  # (time, done) after the first iteration, whose compilation skews the ETA
        self.t_start = time.perf_counter()

    def __call__(self, rec: dict) -> None:
        if "rewind" in rec:
            return
        d = self.driver
        done = d.iteration - self.first
        now = time.perf_counter()
        if self.mark is None and done >= 1:
            self.mark = (now, done)
        if done % self.every and d.iteration != self.target and done != 1 and not d.converged:
            return
        if self.mark is not None and done > self.mark[1]:
            per = (now - self.mark[0]) / (done - self.mark[1])
        else:
            per = (now - self.t_start) / done if done > 0 else float("nan")
        eta = per * (self.target - d.iteration)
        w = len(str(self.target))
        if d.objective.deterministic:
            body = (f"E = {rec['energy']:.10f}"
                    + (f"  var {rec['variance']:.2e}" if rec.get("variance") is not None else "")
                    + f"  lr {rec['lr']:.3g}  |step| {rec.get('update_norm', float('nan')):.2e}")
        else:
            body = (f"E = {rec['energy']:.6f} ± {rec['energy_err']:.6f}  var {rec['variance']:.3e}"
                    + (f"  S^2 {rec['overlap_sq']:+.2e}" if "overlap_sq" in rec else "")
                    + f"  acc {rec['acceptance']:.3f}")
        self.log(f"{self.prefix}[{d.iteration:>{w}}/{self.target}] {body}  "
                 f"{rec['seconds']:.3f} s/it  ETA {fmt_time(eta)}")
        sys.stdout.flush()
