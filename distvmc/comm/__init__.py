"""Communicators: the only place that knows how ranks talk to each other.

Every backend offers the same small interface (:class:`Communicator`):
``rank``, ``size``, ``local_rank``, ``allreduce`` (sum of float64 arrays),
``bcast`` (from rank 0), ``barrier`` and ``abort``. The VMC code calls these
the same way on every rank, in the same order. Only this package imports
mpi4py or horovod.
"""

from __future__ import annotations

import os

from distvmc.comm.base import Communicator
from distvmc.comm.single import SingleProcess

LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "HOROVOD_SIZE")


def detect_backend(env=None) -> str:
    """'single', 'mpi' or 'horovod' from the launcher's environment variables."""
    env = os.environ if env is None else env
    if "HOROVOD_RANK" in env or "HOROVOD_SIZE" in env:
        return "horovod"
    size = env.get("OMPI_COMM_WORLD_SIZE") or env.get("PMI_SIZE") or env.get("SLURM_NTASKS")
    if env.get("SLURM_NTASKS") and not env.get("SLURM_STEP_ID") and not env.get("PMI_SIZE"):
        size = None  # inside sbatch but not srun: one process
    if size is not None and int(size) > 1:
        return "mpi"
    return "single"


def make_communicator(backend: str = "auto") -> Communicator:
    """The communicator for ``distributed.backend``."""
    if backend == "auto":
        backend = detect_backend()
    if backend == "single":
        return SingleProcess()
    raise ValueError(f"distributed.backend = {backend!r} is not available in this build")
