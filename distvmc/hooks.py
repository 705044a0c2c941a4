"""Hooks of the training loop: history file, TensorBoard, checkpoints and pre-emption.

A hook is a callable taking an iteration's record, called on every rank after
every iteration (:meth:`distvmc.driver.Driver.train`). Collective hooks
(:class:`Checkpointer`) make the same calls on every rank.
"""

from __future__ import annotations

import glob
import os
import shutil
import time

import h5py
import numpy as np

from distvmc import __version__, checkpoint, preemption
from distvmc.config import ConfigError
from distvmc.state import gather


class HistoryFile:
    """``history.csv`` (rank 0): appends records, rewrites the file after a rewind."""

    def __init__(self, history, job):
        self.history, self.job = history, job

    def __call__(self, rec: dict) -> None:
        if "rewind" in rec:
            self.history.rewrite(self.job.history)
        else:
            self.history.append(rec)


class Board:
    """TensorBoard scalars of every record (rank 0)."""

    def __init__(self, scalars, job):
        self.scalars, self.job = scalars, job

    def __call__(self, rec: dict) -> None:
        d = self.job.driver
        shift = (self.job.cfg.optimizer.shift * d.shift_scale
                 if self.job.cfg.optimizer.type == "sr" else None)
        self.scalars.write(dict(rec, iteration=self.job.total_iterations - (0 if "rewind" in rec else 1)),
                           shift, len(d.rewinds))


# ----------------------------------------------------------------------------
# Disk space: refuse at start rather than crash after hours
# ----------------------------------------------------------------------------


def check_min_free(path: str | None, min_free_mb: float) -> None:
    """ConfigError when the file system of ``path`` (or of its nearest existing
    parent) has less than ``min_free_mb`` MB free. Cheap: runs before TensorFlow starts."""
    probe = os.path.abspath(path or ".")
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if free < min_free_mb * 1e6:
        raise ConfigError(f"output.dir = {path!r}: only {free / 1e6:.1f} MB free on its file "
                          f"system, less than checkpoint.min_free_mb = {min_free_mb:g}; free "
                          "some space or choose another --out")


def estimate_bytes(cfg, walkers_global: int, particles: int, dim: int, n_parameters: int) -> int:
    """A generous size of one checkpoint (current and rewind states, every state of the run)."""
    states = cfg.excited.states
    walkers = walkers_global * particles * dim * (states + 1)
    history = 600 * max(cfg.optimizer.iterations, 1) * states
    return int(2 * 8 * (walkers + 3 * n_parameters * states) + history + 65536)


def check_free_space(run_dir: str, cfg, need_bytes: int) -> None:
    """ConfigError at start when the run directory's disk cannot hold keep + 1 checkpoints
    of this run (or has less than ``checkpoint.min_free_mb``)."""
    c = cfg.checkpoint
    need = max(c.min_free_mb * 1e6, (c.keep + 1) * need_bytes)
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise ConfigError(f"output.dir = {run_dir!r}: only {free / 1e6:.1f} MB free on its file "
                          f"system; this run needs at least {need / 1e6:.1f} MB "
                          f"(checkpoint.min_free_mb = {c.min_free_mb:g}, checkpoint.keep = "
                          f"{c.keep}); free some space or choose another --out")


# ----------------------------------------------------------------------------
# When to write checkpoints
# ----------------------------------------------------------------------------


class Checkpointer:
    """Writes checkpoints on schedule and turns a pre-emption signal into a clean stop.

    Called on every rank after every iteration: one allreduce of two flags (has
    any rank received SIGTERM/SIGUSR1; has rank 0's clock passed
    ``checkpoint.minutes``), then a checkpoint every ``checkpoint.every``
    iterations of a state, at the end of each state's training (its last
    iteration, or convergence), when the minutes have passed, and before
    stopping on a signal (then it raises :class:`~distvmc.preemption.Preempted`
    on every rank).
    """

    def __init__(self, job, run_dir: str, log=print, clock=time.monotonic):
        self.job, self.run_dir, self.log, self.clock = job, run_dir, log, clock
        self.comm = job.comm
        self.last_time = clock()
        self.last_path: str | None = None
        if self.comm.is_root:
            for tmp in glob.glob(os.path.join(checkpoint.checkpoint_dir(run_dir), "*.tmp")):
                os.remove(tmp)
                log(f"removed {tmp}: a checkpoint whose write was interrupted")

    def _flags(self) -> tuple[int, bool]:
        c = self.job.cfg.checkpoint
        due = (self.comm.is_root and c.minutes > 0
               and self.clock() - self.last_time >= 60.0 * c.minutes)
        f = self.comm.allreduce(np.array([float(preemption.requested()), float(due)]))
        return int(f[0]), bool(f[1] > 0)

    def save(self) -> str:
        """Write a checkpoint of the job's state (collective); returns its path."""
        job = self.job
        state = gather(job.state(), self.comm)
        path = checkpoint.path_for(self.run_dir, job.total_iterations)
        if self.comm.is_root:
            import tensorflow as tf

            t0 = time.perf_counter()
            meta = {"iteration": job.total_iterations, "state_index": job.k,
                    "ranks": self.comm.size, "backend": self.comm.name,
                    "distvmc_version": __version__, "tensorflow_version": tf.__version__,
                    "h5py_version": h5py.__version__, "numpy_version": np.__version__,
                    "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            checkpoint.write(path, meta, job.cfg.to_dict(), job.history, state)
            for _, p in checkpoint.list_checkpoints(self.run_dir)[:-job.cfg.checkpoint.keep]:
                os.remove(p)
            self.log(f"checkpoint {path} ({os.path.getsize(path) / 1e3:.0f} kB, "
                     f"{time.perf_counter() - t0:.2f} s)")
        self.comm.barrier()  # no rank leaves before the file is complete
        self.last_time = self.clock()
        self.last_path = path
        return path

    def __call__(self, rec: dict) -> None:
        signalled, time_due = self._flags()
        if signalled:
            path = self.save()
            self.log(f"pre-emption signal ({'/'.join(preemption.received_names()) or 'SIGTERM/SIGUSR1'}"
                     f" on {signalled} of {self.comm.size} rank(s)): stopped after iteration "
                     f"{self.job.total_iterations} with checkpoint {path}; exit code "
                     f"{preemption.EXIT_PREEMPTED}; continue with: distvmc run --resume {self.run_dir}")
            raise preemption.Preempted(self.job.total_iterations, path)
        if "rewind" in rec:
            return
        every = self.job.cfg.checkpoint.every
        i = self.job.driver.iteration
        end = i >= self.job.cfg.optimizer.iterations or rec.get("converged", False)
        if time_due or (every > 0 and i % every == 0) or end:
            self.save()

    def during_evaluation(self) -> None:
        """Between evaluation blocks: stop on a signal (the end-of-training checkpoint
        is the restart point; the evaluation is repeated on resume)."""
        signalled, _ = self._flags()
        if signalled:
            self.log(f"pre-emption signal during the evaluation: stopping; exit code "
                     f"{preemption.EXIT_PREEMPTED}; distvmc run --resume {self.run_dir} repeats "
                     f"the evaluation from {self.last_path or 'the last checkpoint'}")
            raise preemption.Preempted(self.job.total_iterations, None)
