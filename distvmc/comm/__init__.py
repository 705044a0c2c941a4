"""Communicators: the only place that knows how ranks talk to each other.

Every backend offers the same small interface (:class:`Communicator`):
``rank``, ``size``, ``local_rank``, ``allreduce`` (sum of float64 arrays),
``bcast`` (from rank 0), ``allgather`` (concatenate every rank's rows),
``alltoall`` (block s to rank s; the sample-space SR reshard), ``barrier``
and ``abort``. The VMC code calls these
the same way on every rank, in the same order. Only this package imports
mpi4py or horovod.

Backends: ``single`` (:mod:`.single`, no MPI at all), ``mpi``
(:mod:`.mpi`, mpi4py) and ``horovod`` (:mod:`.horovod`, horovod.tensorflow).
:func:`make_communicator` builds one (``auto`` reads the launcher's
environment, :func:`detect_backend`) and pins this rank's GPU
(:func:`pin_gpu`). :func:`fail` is how a failing rank ends the whole job.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback

from distvmc.comm.base import Communicator
from distvmc.comm.single import SingleProcess
from distvmc.config import ConfigError

# Rank-count variables of the launchers, in the order they are trusted.
LAUNCHER_VARS = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE",
                 "SLURM_STEP_NUM_TASKS")

INSTALL_HINT = {
    "mpi": "pip install 'distvmc[mpi]' (mpi4py and Open MPI), or use "
           "distributed.backend=single",
    "horovod": "build it with launch/setup_horovod.sh (Horovod 0.28.1 needs TensorFlow "
               "2.18) and run from that venv, or use distributed.backend=mpi",
}


def launcher_size(env=None) -> int:
    """Number of ranks the launcher started (1 when there is no launcher).

    Reads Open MPI (``OMPI_COMM_WORLD_SIZE``), MPICH/Hydra and PMI-2
    (``PMI_SIZE``), MVAPICH (``MV2_COMM_WORLD_SIZE``), Horovod's Gloo launcher
    (``HOROVOD_SIZE``) and Slurm's ``srun`` (``SLURM_STEP_NUM_TASKS``, or
    ``SLURM_NTASKS`` inside a job step). A batch script (sbatch without srun)
    is one process even when the job has several tasks.
    """
    env = os.environ if env is None else env
    for var in LAUNCHER_VARS:
        if env.get(var):
            return int(env[var])
    if env.get("SLURM_NTASKS") and (env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")):
        return int(env["SLURM_NTASKS"])
    return 1


def detect_backend(env=None) -> str:
    """'single', 'mpi' or 'horovod' from the launcher's environment variables.

    Horovod's own launcher (``HOROVOD_RANK``/``HOROVOD_SIZE``) means
    'horovod'; any other launcher with more than one rank means 'mpi' (ask for
    ``distributed.backend=horovod`` explicitly to use Horovod under mpirun or
    srun); no launcher, or a launcher with one rank, means 'single'.
    """
    env = os.environ if env is None else env
    if "HOROVOD_RANK" in env or "HOROVOD_SIZE" in env:
        return "horovod"
    return "mpi" if launcher_size(env) > 1 else "single"


def available(backend: str) -> bool:
    """Whether ``backend``'s Python package is installed (without importing it)."""
    module = {"single": None, "mpi": "mpi4py", "horovod": "horovod"}[backend]
    return module is None or importlib.util.find_spec(module) is not None


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


_current: Communicator | None = None


def current() -> Communicator | None:
    """The communicator :func:`make_communicator` built last (None before)."""
    return _current


def make_communicator(backend: str = "auto", pin_device: bool = True,
                      require_gpu: bool = False, log=print) -> Communicator:
    """The communicator for ``distributed.backend`` (auto, single, mpi, horovod).

    ``auto`` uses :func:`detect_backend`; under an MPI launcher it takes mpi4py,
    or Horovod when only Horovod is installed. A backend whose package is not
    installed raises :class:`~distvmc.config.ConfigError` with a one-line
    message saying how to install it. With ``pin_device`` the rank then sees
    only its own GPU (:func:`pin_gpu`), before any TensorFlow op runs, and
    every rank logs its device (:func:`describe_device`); ``require_gpu``
    (``distributed.require_gpu``) turns "no GPU" into a ConfigError. With
    more than one rank, an uncaught exception in a script ends every rank
    (:func:`fail`) instead of leaving the others blocked in a collective.
    """
    global _current
    requested = backend
    if backend == "auto":
        backend = detect_backend()
        if backend == "mpi" and not available("mpi") and available("horovod"):
            backend = "horovod"
        if backend != "single" and not available(backend):
            raise ConfigError(
                f"distributed.backend = 'auto': started by a launcher with {launcher_size()} "
                f"ranks but {'mpi4py' if backend == 'mpi' else 'horovod'} is not installed: "
                f"{INSTALL_HINT[backend]}")
    if backend == "single":
        comm: Communicator = SingleProcess()
    elif backend == "mpi":
        try:
            from mpi4py import MPI  # noqa: F401  (initializes MPI)
        except ImportError as e:
            raise ConfigError(f"distributed.backend = {requested!r} needs mpi4py, which cannot "
                              f"be imported here ({_one_line(e, 120)}): "
                              f"{INSTALL_HINT['mpi']}") from None
        from distvmc.comm.mpi import MPIComm

        comm = MPIComm()
    elif backend == "horovod":
        try:
            import horovod.tensorflow  # noqa: F401
        except Exception as e:  # ImportError, or TF failing to load a mismatched op library
            raise ConfigError(f"distributed.backend = {requested!r} needs Horovod built with "
                              f"TensorFlow, which cannot be imported here "
                              f"({type(e).__name__}: {_one_line(e, 160)}): "
                              f"{INSTALL_HINT['horovod']}") from None
        from distvmc.comm.horovod import HorovodComm

        comm = HorovodComm()
    else:
        raise ConfigError(f"distributed.backend = {backend!r}: must be one of auto, single, "
                          "mpi, horovod")
    if pin_device:
        pin_gpu(comm.local_rank)
        line = describe_device(comm)
        if require_gpu and "no GPU" in line:
            raise ConfigError(f"distributed.require_gpu = true but {line}: {gpu_hint()}")
        if log is not None:
            log(line)
            sys.stdout.flush()
    elif require_gpu:
        raise ConfigError("distributed.require_gpu = true needs the device pinned "
                          "(make_communicator(pin_device=True))")
    if comm.size > 1:
        _install_excepthook(comm)
    _current = comm
    return comm


def pin_gpu(local_rank: int) -> str | None:
    """Make GPU ``local_rank`` (mod the GPU count) the only GPU this process sees.

    Enables memory growth on it, so ranks sharing a node do not each reserve
    all memory. Does nothing without GPUs (the rank runs on CPU), and leaves
    the devices alone if TensorFlow has already initialized them.

    Returns:
      the physical device name, or None when running on CPU.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    gpu = gpus[local_rank % len(gpus)]
    try:
        tf.config.set_visible_devices(gpu, "GPU")
        tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # devices already initialized (a second communicator in one process)
        pass
    return gpu.name


def describe_device(comm: Communicator | None = None) -> str:
    """This rank's compute device, one line: ``rank 3/8: GPU 3 (NVIDIA H100 80GB HBM3)``
    or ``rank 0/1: CPU (no GPU visible)``.

    The GPU number is its index among the node's physical GPUs (after
    :func:`pin_gpu`, the one this rank sees).
    """
    import tensorflow as tf

    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    head = f"rank {rank}/{size}"
    physical = tf.config.list_physical_devices("GPU")
    visible = tf.config.get_visible_devices("GPU") if physical else []
    if not visible:
        return f"{head}: CPU (no GPU visible)"
    gpu = visible[0]
    try:
        name = tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
    except Exception:  # noqa: BLE001 - details are optional
        name = gpu.name
    index = physical.index(gpu) if gpu in physical else 0
    more = f", +{len(visible) - 1} more visible" if len(visible) > 1 else ""
    return f"{head}: GPU {index} ({name}{more})"


def gpu_hint() -> str:
    """How to get a GPU-capable TensorFlow here, one sentence."""
    import importlib.metadata as md

    import tensorflow as tf

    try:
        md.version("tensorflow-cpu")
        return ("tensorflow-cpu is installed and never uses a GPU: pip uninstall tensorflow-cpu, "
                "then pip install 'distvmc[gpu]'")
    except md.PackageNotFoundError:
        pass
    if not tf.test.is_built_with_cuda():
        return f"TensorFlow {tf.__version__} here is built without CUDA: pip install 'distvmc[gpu]'"
    return ("TensorFlow is built with CUDA but finds no GPU: check nvidia-smi, "
            "CUDA_VISIBLE_DEVICES and the driver, or pip install 'distvmc[gpu]' for the CUDA "
            "libraries; or set distributed.require_gpu=false to run on the CPU")


def failure_message(exc: BaseException, rank: int) -> str:
    """``distvmc: rank R failed: ExceptionType: message`` on one line."""
    return f"distvmc: rank {rank} failed: {type(exc).__name__}: {_one_line(exc)}"


def fail(exc: BaseException, comm: Communicator | None = None, code: int = 1) -> None:
    """Report ``exc`` (traceback, then one line naming the rank) and end every rank.

    With one rank this only prints; the caller decides how to exit. With
    several ranks it calls ``comm.abort(code)`` and does not return: the other
    ranks may be blocked in a collective that this rank will never join.
    """
    comm = comm if comm is not None else _current
    rank = comm.rank if comm is not None else 0
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(failure_message(exc, rank), file=sys.stderr, flush=True)
    sys.stdout.flush()
    if comm is not None and comm.size > 1:
        comm.abort(code)


def _install_excepthook(comm: Communicator) -> None:
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            previous(exc_type, exc, tb)
            comm.abort(130)
        fail(exc, comm)

    sys.excepthook = hook
