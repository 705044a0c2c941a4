"""The VMC driver: sample, measure, optimize, repeat; then evaluate.

One iteration on every rank:

1. Metropolis: ``samples_per_walker`` measurements per walker, each after
   ``sweeps_per_sample`` sweeps (compiled, :mod:`distvmc.sampler`).
2. Local energies with the exact Laplacian (:mod:`distvmc.hamiltonian`).
3. Statistics from sums added over ranks (:mod:`distvmc.stats`). Non-finite
   local energies are counted; any at all rewind every rank to the last good
   state (the start of the previous finite iteration: parameters, walkers,
   optimizer state; the random streams continue) and the run continues with
   a smaller learning rate and a larger SR shift (``recovery.*``), at most
   ``recovery.max_rewinds`` times.
4. Optimizer step: SR or Adam (:mod:`distvmc.optimizers`); every rank applies
   the same update; the sampler's cached log|psi|^2 is refreshed.

The final energy comes from :meth:`VMC.evaluate`: fresh samples from an
independent random stream with frozen parameters.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import tensorflow as tf

from distvmc import observables, stats
from distvmc.comm import Communicator, SingleProcess
from distvmc.config import Section
from distvmc.hamiltonian import LocalEnergy
from distvmc.optimizers import learning_rate, make_optimizer
from distvmc.sampler import MetropolisSampler, stream_key
from distvmc.systems import build_system
from distvmc.wavefunctions import build_wavefunction


class NonFiniteEnergyError(RuntimeError):
    """Non-finite local energies persisted after ``recovery.max_rewinds`` rewinds."""


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


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class VMC:
    """All state of one variational Monte Carlo run on one rank.

    Attributes:
      system, wf (wavefunction), sampler, optimizer: the physics objects.
      iteration: optimization iterations done.
      history: list of per-iteration records (dicts).
    """

    def __init__(self, cfg: Section, comm: Communicator | None = None,
                 config_dir: str | None = None, log=print, wavefunction=None):
        self.cfg = cfg
        self.comm = comm or SingleProcess()
        self.log = log if self.comm.is_root else (lambda *a, **k: None)
        self.dtype = tf.float64 if cfg.precision == "float64" else tf.float32
        self.system = build_system(cfg, config_dir)
        # wavefunction: a prebuilt ansatz (distvmc.excited passes its projected trial states)
        self.wf = wavefunction or build_wavefunction(cfg, self.system, cfg.seed)
        h = cfg.hamiltonian
        self.local_energy = LocalEnergy(self.wf, self.system, h.laplacian, h.chunk_size, self.dtype)
        self._check_potential()
        s = cfg.sampler
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, self.comm.rank, 1]))
        x0 = self.system.initial_walkers(rng, s.walkers, s.init_width)
        self.sampler = MetropolisSampler(self.wf.log_abs, x0, s.step,
                                         stream_key(cfg.seed, self.comm.rank), self.comm,
                                         s.target_acceptance, self.dtype)
        self.optimizer = make_optimizer(cfg.optimizer, self.wf, self.comm, h.chunk_size)
        self.iteration = 0
        self.thermalized = False
        self.history: list[dict] = []
        # Recovery from non-finite local energies (see _rewind).
        self.lr_scale = 1.0  # times recovery.lr_factor per rewind
        self.rewinds: list[dict] = []  # one record per rewind
        self.last_good: dict | None = None  # snapshot() at the start of the last finite iteration
        # Called on every rank between evaluation blocks (it may run collectives and
        # raise to stop the evaluation, e.g. on a pre-emption signal).
        self.on_evaluation_block = None

    def _check_potential(self):
        """Fail early, in one line, if the potential returns the wrong shape."""
        x = tf.constant(np.random.default_rng(0).standard_normal(
            (3, self.system.particles, self.system.dim)) + 0.1, dtype=self.dtype)
        v = self.system.potential(x)
        if tuple(v.shape) != (3,):
            raise ValueError(f"potential returned shape {tuple(v.shape)} for 3 walkers; "
                             "it must return one energy per walker, shape (walkers,)")

    # ------------------------------------------------------------------
    @property
    def global_walkers(self) -> int:
        # every rank has the same count (a resume on another rank count may change it)
        return self.sampler.walkers * self.comm.size

    # ------------------------------------------------------------------
    def snapshot(self) -> dict:
        """A copy of this rank's whole optimization state (no collectives).

        Keys: iteration, parameters (P,) float64, optimizer (dict of arrays),
        sampler ({x (W, N, D), step, counter}), history_len. :meth:`restore`
        puts it back; checkpoints store the same fields for every rank.
        """
        smp = self.sampler.get_state()
        smp["x"] = np.array(smp["x"], copy=True)
        return {"iteration": self.iteration, "parameters": self.wf.get_flat(),
                "optimizer": {k: np.array(v, copy=True) for k, v in self.optimizer.state().items()},
                "sampler": smp, "history_len": len(self.history)}

    def restore(self, snap: dict) -> None:
        """Return to a :meth:`snapshot` (history records after it are dropped)."""
        self.wf.set_flat(snap["parameters"])
        self.optimizer.set_state(snap["optimizer"])
        self.sampler.set_state(snap["sampler"])  # recomputes log|psi|^2 of the walkers
        self.iteration = int(snap["iteration"])
        del self.history[int(snap["history_len"]):]

    def _rewind(self, rec: dict, st, start: dict) -> dict:
        """Non-finite local energies: go back to the last good state, step more cautiously.

        Every rank sees the same global count of non-finite energies, so all
        rewind together. The target is the start of the last finite iteration
        (its update led here), or the start of this one when there is none
        yet. Parameters, walkers and optimizer state go back; the random
        streams do not (the retry draws fresh numbers, so walkers that wandered
        somewhere bad need not go there again, and no number is used twice).
        Raises :class:`NonFiniteEnergyError` after ``recovery.max_rewinds``.
        """
        r = self.cfg.recovery
        bad = self.iteration
        target = self.last_good if self.last_good is not None else start
        if len(self.rewinds) >= r.max_rewinds:
            raise NonFiniteEnergyError(
                f"iteration {bad}: {st.nonfinite} of {st.n + st.nonfinite} local energies are "
                f"not finite after {len(self.rewinds)} rewind(s) (recovery.max_rewinds = "
                f"{r.max_rewinds}); last good state: start of iteration {target['iteration']}; "
                "try a smaller optimizer.lr, a larger optimizer.shift or optimizer.max_update_norm")
        counter = int(self.sampler.counter.numpy())
        self.restore(target)
        self.sampler.counter.assign(counter)
        self.lr_scale *= r.lr_factor
        if hasattr(self.optimizer, "shift_scale"):
            self.optimizer.shift_scale *= r.shift_factor
        shift = self.cfg.optimizer.shift * getattr(self.optimizer, "shift_scale", 1.0)
        event = {"iteration": bad, "to": int(target["iteration"]), "nonfinite": st.nonfinite,
                 "lr_scale": self.lr_scale, "shift": shift}
        self.rewinds.append(event)
        self.log(f"warning: iteration {bad}: {st.nonfinite} of {st.n + st.nonfinite} local "
                 f"energies not finite; rewound to the start of iteration {target['iteration']} "
                 f"(rewind {len(self.rewinds)} of at most {r.max_rewinds}); learning rate now "
                 f"x{self.lr_scale:g}" + (f", SR shift {shift:g}" if self.cfg.optimizer.type == "sr"
                                          else ""))
        rec["solve"] = "rewind"
        rec["rewind"] = event
        return rec

    def thermalize(self) -> float:
        s = self.cfg.sampler
        acc = self.sampler.thermalize(s.thermalization, adapt=s.adapt != "never")
        self.thermalized = True
        return acc

    def step(self) -> dict:
        """One optimization iteration; returns its history record."""
        if not self.thermalized:
            self.thermalize()
        _injected_failure(self.comm.rank, self.iteration)
        start = self.snapshot()
        t0 = time.perf_counter()
        s, o = self.cfg.sampler, self.cfg.optimizer
        xs, acc = self.sampler.sample(s.samples_per_walker, s.sweeps_per_sample)
        if s.adapt == "always":
            self.sampler.adapt(acc)
        m, w = xs.shape[:2]
        x = xs.reshape((m * w,) + xs.shape[2:])
        t1 = time.perf_counter()
        e = self.local_energy(x)
        t2 = time.perf_counter()
        st = stats.summarize(e.reshape(m, w), self.comm)
        lr = learning_rate(o, self.iteration) * self.lr_scale
        rec = {"iteration": self.iteration, "energy": st.mean, "energy_err": st.error,
               "variance": st.variance, "tau": st.tau, "acceptance": acc,
               "step": float(self.sampler.step.numpy()), "lr": lr, "nonfinite": st.nonfinite,
               "t_sample": t1 - t0, "t_eloc": t2 - t1}
        if st.nonfinite > 0:
            return self._rewind(rec, st, start)  # not a history record
        self.last_good = start
        t3 = time.perf_counter()
        info = self.optimizer.step(x, e, lr)
        self.sampler.refresh()
        rec["t_optimizer"] = time.perf_counter() - t3
        rec.update({f"t_{k}": v for k, v in self.optimizer.timings.items()})
        rec["update_norm"] = info.get("update_norm", float("nan"))
        rec["solve"] = info.get("skipped") or info["solve"] or info["solver"]
        if info.get("solve", "").startswith(("cholesky(", "eigh")):
            self.log(f"note: iteration {self.iteration}: SR solve fell back to {info['solve']}")
        self.iteration += 1
        rec["seconds"] = time.perf_counter() - t0
        self.history.append(rec)
        return rec

    def train(self, iterations: int | None = None, on_iteration=None) -> None:
        """Run ``iterations`` optimization steps, printing progress (default: up to the
        config's ``optimizer.iterations`` in total, so a resumed run does the rest)."""
        n = max(self.cfg.optimizer.iterations - self.iteration, 0) if iterations is None else iterations
        every = self.cfg.output.log_every
        t_start = time.perf_counter()
        first = self.iteration
        target = first + n
        mark = None  # (time, done) after the first iteration, whose compilation skews the ETA
        if not self.thermalized:
            acc = self.thermalize()
            self.log(f"thermalized {self.cfg.sampler.thermalization} sweeps: acceptance "
                     f"{acc:.3f}, step {float(self.sampler.step.numpy()):.4g}")
        while self.iteration < target:
            rec = self.step()
            if on_iteration is not None:
                on_iteration(rec)
            if "rewind" in rec:
                continue
            done = self.iteration - first
            now = time.perf_counter()
            if mark is None and done >= 1:
                mark = (now, done)
            if done % every == 0 or self.iteration == target or done == 1:
                if mark is not None and done > mark[1]:
                    per_iteration = (now - mark[0]) / (done - mark[1])
                else:
                    per_iteration = (now - t_start) / done if done > 0 else float("nan")
                eta = per_iteration * (target - self.iteration)
                self.log(f"[{self.iteration:>{len(str(target))}}/{target}] "
                         f"E = {rec['energy']:.6f} ± {rec['energy_err']:.6f}  "
                         f"var {rec['variance']:.3e}  acc {rec['acceptance']:.3f}  "
                         f"{rec['seconds']:.3f} s/it  ETA {_fmt_time(eta)}")
                sys.stdout.flush()

    def evaluate(self, samples: int | None = None, sweeps: int | None = None,
                 thermalization: int | None = None) -> dict:
        """Energy and observables from fresh samples with frozen parameters.

        ``samples`` is per rank; the walkers continue from the training sampler
        but draw from an independent random stream.
        """
        ev = self.cfg.evaluation
        samples = ev.samples if samples is None else samples
        sweeps = ev.sweeps_per_sample if sweeps is None else sweeps
        therm = ev.thermalization if thermalization is None else thermalization
        w = self.sampler.walkers
        m = max(1, -(-samples // w))
        sampler = MetropolisSampler(self.wf.log_abs, self.sampler.x.numpy(),
                                    float(self.sampler.step.numpy()),
                                    stream_key(self.cfg.seed, self.comm.rank, 2), self.comm,
                                    self.cfg.sampler.target_acceptance, self.dtype,
                                    name="eval_sampler")
        t0 = time.perf_counter()
        sampler.thermalize(therm, adapt=self.cfg.sampler.adapt != "never")
        # Measure in pieces so memory stays bounded for large sample counts.
        per_block = max(1, min(m, (1 << 22) // max(w * self.system.particles * self.system.dim, 1)))
        es, xs_all, accs = [], [], []
        done = 0
        while done < m:
            if self.on_evaluation_block is not None:
                self.on_evaluation_block()
            k = min(per_block, m - done)
            xs, acc = sampler.sample(k, sweeps)
            es.append(self.local_energy(xs.reshape((k * w,) + xs.shape[2:])).reshape(k, w))
            xs_all.append(xs)
            accs.append(acc * k)
            done += k
        e = np.concatenate(es)
        xs = np.concatenate(xs_all)
        st = stats.summarize(e, self.comm)
        wall = time.perf_counter() - t0
        out = {
            "energy": st.mean, "energy_err": st.error, "variance": st.variance,
            "tau": st.tau, "rhat": st.rhat, "samples": st.n, "nonfinite": st.nonfinite,
            "acceptance": float(sum(accs) / m), "step": float(sampler.step.numpy()),
            "wall_s": wall,
        }
        out["observables"] = observables.radial_moments(xs, self.comm)
        out["radial_density"] = observables.radial_density(xs, ev.bins, ev.r_max, self.comm)
        return out
