"""Pre-emption: SIGTERM and SIGUSR1 ask the run to checkpoint and stop.

Batch systems announce the end of a job with a signal: Slurm sends SIGTERM on
pre-emption or ``scancel``, and the signal named by ``--signal`` (SIGUSR1 in
``launch/slurm/*.sbatch``) shortly before the time limit. :func:`install`
replaces the default action of both (die at once) by setting a flag. The
driver's per-iteration hook (:class:`distvmc.hooks.Checkpointer`) adds the
flags of all ranks with one allreduce every iteration, so a signal that
reaches only one rank still stops every rank after the same iteration; they
write a checkpoint together and :func:`distvmc.cli.main` exits with
:data:`EXIT_PREEMPTED`. A second signal of the same kind restores the default
action and re-delivers it (the process ends at once).

With ``mpirun`` (Open MPI), signal the ranks directly or send SIGUSR1 to
``mpirun``, which forwards it; SIGTERM to ``mpirun`` kills the ranks without
a checkpoint. ``srun`` forwards both.

This module does not import TensorFlow.
"""

from __future__ import annotations

import os
import signal

EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): stopped early, resume with --resume
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: list[int] = []


class Preempted(Exception):
    """Raised on every rank after the checkpoint of a pre-empted run is written.

    Attributes:
      iteration: iterations done (the checkpoint's step).
      path: the checkpoint to resume from (None when none was written now).
    """

    def __init__(self, iteration: int, path: str | None):
        super().__init__(f"pre-empted after iteration {iteration}")
        self.iteration = iteration
        self.path = path


def _handler(signum, frame):
    if signum in _received:  # second time: give up on a clean stop
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _received.append(signum)


def install() -> None:
    """Catch SIGTERM and SIGUSR1 in this process (call from the main thread)."""
    for s in SIGNALS:
        signal.signal(s, _handler)


def requested() -> bool:
    """Whether this process has received a pre-emption signal."""
    return bool(_received)


def received_names() -> list[str]:
    return [signal.Signals(s).name for s in _received]


def reset() -> None:
    """Forget received signals (tests)."""
    _received.clear()
