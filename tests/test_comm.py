"""The communicator layer without a launcher: backend detection, errors, failures."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import distvmc.comm as comm_mod
from distvmc.comm import SingleProcess, detect_backend, launcher_size, make_communicator
from distvmc.config import ConfigError


@pytest.mark.parametrize("env, backend, size", [
    ({}, "single", 1),
    ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}, "mpi", 2),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, "single", 1),           # mpirun -np 1
    ({"PMI_SIZE": "4", "PMI_RANK": "0"}, "mpi", 4),          # MPICH / Hydra, srun --mpi=pmi2
    ({"MV2_COMM_WORLD_SIZE": "3"}, "mpi", 3),                # MVAPICH
    ({"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2"}, "horovod", 2),  # horovodrun (Gloo)
    ({"SLURM_NTASKS": "8", "SLURM_JOB_ID": "7"}, "single", 1),    # sbatch script, no srun
    ({"SLURM_NTASKS": "8", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3"}, "mpi", 8),  # srun
    ({"SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "8"}, "mpi", 4),  # srun -n 4 in an 8-task job
    ({"SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"}, "single", 1),
])
def test_the_launcher_environment_decides_the_backend(env, backend, size):
    assert detect_backend(env) == backend
    assert launcher_size(env) == size


def test_single_process_collectives_are_identities():
    c = make_communicator("single", pin_device=False)
    assert isinstance(c, SingleProcess) and (c.rank, c.size, c.local_rank) == (0, 1, 0)
    a, b = np.arange(6.0).reshape(2, 3), np.array(2.5)
    ra, rb = c.allreduce_many([a, b])
    assert np.array_equal(ra, a) and ra.dtype == np.float64 and rb.shape == ()
    assert np.array_equal(c.bcast(a), a)
    assert comm_mod.current() is c


def test_auto_without_a_launcher_is_a_single_process(monkeypatch):
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "HOROVOD_SIZE",
                "HOROVOD_RANK", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert make_communicator("auto", pin_device=False).name == "single"


def _one_line_config_error(backend):
    with pytest.raises(ConfigError) as err:
        make_communicator(backend, pin_device=False)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_asking_for_horovod_without_horovod_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "horovod", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", None)
    msg = _one_line_config_error("horovod")
    assert msg.startswith("distributed.backend = 'horovod' needs Horovod")
    assert "launch/setup_horovod.sh" in msg and "2.18" in msg


def test_asking_for_mpi_without_mpi4py_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    msg = _one_line_config_error("mpi")
    assert "needs mpi4py" in msg and "pip install 'distvmc[mpi]'" in msg


def test_a_launcher_without_any_mpi_package_is_an_error_not_n_single_runs(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setattr(comm_mod, "available", lambda b: b == "single")
    msg = _one_line_config_error("auto")
    assert "2 ranks" in msg and "mpi4py" in msg


def test_the_cli_turns_a_missing_backend_into_one_line_and_exit_code_2(monkeypatch, capsys):
    from distvmc import cli

    monkeypatch.setitem(sys.modules, "horovod", None)
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", None)
    assert cli.main(["run", "distributed.backend=horovod", "optimizer.iterations=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distvmc: error: distributed.backend = 'horovod'")


def test_a_failure_report_names_the_rank_type_and_message(capsys):
    class FakeRank(SingleProcess):
        rank = 3

    try:
        raise ValueError("walkers escaped\nto infinity")
    except ValueError as e:
        comm_mod.fail(e, FakeRank())  # size 1: reports, does not abort
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "distvmc: rank 3 failed: ValueError: walkers escaped to infinity"
    assert any("Traceback" in line for line in err)


def test_without_gpus_every_rank_runs_on_the_cpu():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has GPUs")
    assert comm_mod.pin_gpu(0) is None and comm_mod.pin_gpu(3) is None
