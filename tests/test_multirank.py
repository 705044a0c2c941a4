"""Two ranks under mpirun give the same physics as one rank, and fail together.

Each test starts ``mpirun -np 2`` on tests/multirank_worker.py or on the
``distvmc`` command line and checks what the ranks report. The backends to
test come from ``DISTVMC_TEST_BACKENDS`` (comma-separated: mpi, horovod); by
default every backend that is installed. A backend named there that is not
installed is a test failure; one that is merely absent is skipped. Without an
``mpirun`` (next to this Python, or on PATH) everything here is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from distvmc.comm import available

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("multirank_worker.py")
BACKENDS = ("mpi", "horovod")
TIMEOUT_S = 180  # per mpirun; a hang is a failure, not a stuck CI


def _requested() -> list[str] | None:
    raw = os.environ.get("DISTVMC_TEST_BACKENDS", "").strip()
    return [b.strip() for b in raw.split(",") if b.strip()] if raw else None


def _mpirun() -> str | None:
    """The launcher of this Python's environment first (same Open MPI as mpi4py)."""
    local = Path(sys.executable).parent / "mpirun"
    return str(local) if local.exists() else shutil.which("mpirun")


def _backend_or_skip(backend: str) -> str:
    requested = _requested()
    if requested is not None and backend not in requested:
        pytest.skip(f"backend {backend} not in DISTVMC_TEST_BACKENDS={','.join(requested)}")
    if _mpirun() is None:
        pytest.skip("no mpirun next to this Python or on PATH")
    if not available(backend):
        msg = f"backend {backend} is not installed in {sys.prefix}"
        if requested is not None:
            pytest.fail(msg + " but DISTVMC_TEST_BACKENDS asks for it")
        pytest.skip(msg)
    return backend


@pytest.fixture(params=BACKENDS)
def backend(request):
    return _backend_or_skip(request.param)


def _launch_cmd(env: dict, np_: int = 2) -> list[str]:
    """mpirun with the flags Open MPI needs here (root, 2 cores) and our variables."""
    mpirun = _mpirun()
    cmd = [mpirun, "-np", str(np_)]
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    if re.search(r"open mpi|open-mpi|prte|openrte", version, re.I):
        cmd += ["--oversubscribe", "--bind-to", "none"]
        if os.geteuid() == 0:
            cmd += ["--allow-run-as-root"]
        for var in ("PATH", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS", "TF_CPP_MIN_LOG_LEVEL",
                    "DISTVMC_FAIL_RANK", "DISTVMC_FAIL_ITERATION"):
            if var in env:
                cmd += ["-x", var]
    return cmd


def _env(**extra) -> dict:
    """The ranks' environment: one thread each, this Python's bin/ first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTVMC_FAIL_")}
    env.update(OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


class Run:
    """An mpirun job: merged output lines with their arrival times, exit code, wall time."""

    def __init__(self, args: list[str], env: dict, cwd: Path, timeout: float = TIMEOUT_S):
        cmd = _launch_cmd(env) + args
        self.lines: list[tuple[float, str]] = []
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)

        def reader():
            for raw in p.stdout:
                self.lines.append((time.monotonic() - t0, raw.decode("utf-8", "replace")))

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        try:
            self.returncode = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            th.join(5)
            pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s:\n{self.tail()}")
        self.wall = time.monotonic() - t0
        th.join(10)

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)

    def tail(self, n: int = 40) -> str:
        return "".join(line for _, line in self.lines[-n:])

    def results(self) -> dict[int, dict]:
        out = {}
        for _, line in self.lines:
            if line.startswith("RESULT "):
                r = json.loads(line[len("RESULT "):])
                out[r["rank"]] = r
        return out


def _worker(what: str, backend: str, tmp_path: Path, *args: str) -> dict[int, dict]:
    run = Run([sys.executable, str(WORKER), what, backend, *args], _env(), tmp_path)
    assert run.returncode == 0, run.tail()
    res = run.results()
    assert sorted(res) == [0, 1], f"expected RESULT lines from ranks 0 and 1:\n{run.tail()}"
    assert all(r["backend"] == backend and r["size"] == 2 for r in res.values())
    return res


@pytest.mark.mpi
def test_sr_on_two_ranks_equals_sr_on_one_rank_with_the_same_walkers(backend, tmp_path):
    res = _worker("equivalence", backend, tmp_path)
    # the Communicator contract itself: shapes, dtypes, sums, rank 0's data
    assert res[0]["collectives_failed"] == res[1]["collectives_failed"] == []
    r0 = res[0]
    assert r0["solver"] == r0["solver_1rank"] == "dense"
    assert r0["delta_norm"] > 0
    assert r0["delta_rel_diff"] <= 1e-12, r0["delta_rel_diff"]
    # every rank applies the same broadcast direction, bit for bit
    assert res[0]["delta_sha"] == res[1]["delta_sha"]
    one, two = r0["stats_1rank"], r0["stats_2rank"]
    assert one["n"] == two["n"] == 3 * 2 * 96
    for key in ("mean", "error", "variance", "tau", "rhat"):
        assert abs(two[key] - one[key]) <= 1e-12 * max(abs(one[key]), 1e-300), (key, one, two)


@pytest.mark.mpi
def test_every_sr_solver_on_two_ranks_gives_the_one_rank_dense_direction(backend, tmp_path):
    res = _worker("solvers", backend, tmp_path)
    r0, r1 = res[0], res[1]
    assert r0["samples"] < r0["n_parameters"]  # the regime sample space is for
    for key, diff in r0["rel_diff"].items():
        # samplespace is exact (1e-10); cg is solved to cg_tol = 1e-12 here
        assert diff <= 1e-10, (key, diff, r0["solve"][key])
    assert set(r0["rel_diff"]) == {s + x + m + d for s in ("dense", "cg", "samplespace")
                                   for x in ("", "+extra") for m in ("", "+momentum")
                                   for d in ("", "@device")} | {
        "cg" + x + m + "@recompute" for x in ("", "+extra") for m in ("", "+momentum")}
    assert r0["sha"] == r1["sha"]  # identical bits on every rank, for every solver
    assert r0["solve"]["cg"].startswith("cg("), r0["solve"]


@pytest.mark.mpi
@pytest.mark.parametrize("solver", ["dense", "cg", "samplespace", "samplespace+momentum",
                                    "dense@device", "cg@device", "samplespace@device",
                                    "cg@recompute"])
def test_parameters_are_bitwise_identical_on_every_rank_after_every_step(backend, solver,
                                                                          tmp_path):
    res = _worker("bitwise", backend, tmp_path, solver)
    r0, r1 = res[0], res[1]
    assert len(r0["param_sha"]) == 4
    assert r0["param_sha"] == r1["param_sha"]
    assert r0["ranks_differing"] == r1["ranks_differing"] == [0.0] * 4
    # the steps were real: parameters moved every iteration...
    shas = [r0["initial_sha"]] + r0["param_sha"]
    assert len(set(shas)) == len(shas)
    # ...and the ranks sampled independently (own random streams) but agree on the energy
    assert r0["walkers_sha"] != r1["walkers_sha"]
    assert r0["energies"] == r1["energies"]


@pytest.mark.mpi
def test_alpha_parameters_are_bitwise_identical_on_two_ranks(backend, tmp_path):
    """Issue 11: the nuclear ansatz, pionless V2 + V3 and re-centred walkers on 2 ranks."""
    res = _worker("bitwise", backend, tmp_path, "dense", "3", "alpha")
    r0, r1 = res[0], res[1]
    assert r0["param_sha"] == r1["param_sha"] and len(r0["param_sha"]) == 3
    assert r0["ranks_differing"] == r1["ranks_differing"] == [0.0] * 3
    shas = [r0["initial_sha"]] + r0["param_sha"]
    assert len(set(shas)) == len(shas)  # the parameters moved every step
    assert r0["walkers_sha"] != r1["walkers_sha"]  # independent streams
    assert r0["energies"] == r1["energies"]
    assert all(-60.0 < e < 60.0 for e in r0["energies"]), r0["energies"]  # MeV, sane


def _cli_args(out: Path, backend: str, *extra: str) -> list[str]:
    config = ROOT / "configs" / "hydrogen.yaml"
    return ([sys.executable, "-m", "distvmc", "run"]
            + ([str(config)] if config.exists() else [])
            + [f"distributed.backend={backend}", "wavefunction.factors.0.hidden=[8, 8]",
               "sampler.walkers=128", "sampler.thermalization=50", "sampler.sweeps_per_sample=5",
               "evaluation.samples=2000", "evaluation.thermalization=20",
               "output.log_every=5", *extra, "--out", str(out)])


@pytest.mark.mpi
def test_a_failure_on_rank_1_ends_the_job_promptly_and_names_the_rank(backend, tmp_path):
    out = tmp_path / "run"
    # Rank 1 raises at the start of iteration 0 (after thermalization, whose
    # compilation is the slow part); rank 0 is then waiting in the sampler's
    # acceptance allreduce, a collective that rank 1 will never join.
    env = _env(DISTVMC_FAIL_RANK="1", DISTVMC_FAIL_ITERATION="0")
    run = Run(_cli_args(out, backend, "optimizer.iterations=50"), env, tmp_path, timeout=120)
    text = run.output
    assert run.returncode != 0, run.tail()
    assert run.wall < 60, f"job took {run.wall:.1f} s to end after the failure:\n{run.tail()}"
    m = re.search(r"distvmc: rank 1 failed: RuntimeError: injected failure", text)
    assert m, run.tail()
    assert "rank 0 failed" not in text
    # from the failure message to the end of every rank: seconds, not a hang
    t_fail = next(t for t, line in run.lines if "distvmc: rank 1 failed" in line)
    assert run.wall - t_fail < 10, (t_fail, run.wall)
    assert not (out / "summary.json").exists()


@pytest.mark.mpi
def test_a_two_rank_hydrogen_run_reports_ranks_and_global_walkers(backend, tmp_path):
    out = tmp_path / "run"
    run = Run(_cli_args(out, backend, "optimizer.iterations=15"), _env(), tmp_path)
    assert run.returncode == 0, run.tail()
    s = json.loads((out / "summary.json").read_text())
    assert s["ranks"] == 2 and s["backend"] == backend
    assert s["walkers_per_rank"] == 128 and s["walkers_global"] == 256
    assert s["eval_samples"] >= 2000  # evaluation.samples counts all ranks together
    assert s["iterations"] == 15
    # variational: never below the exact -0.5 Hartree beyond the error bar
    assert s["energy"] > -0.5 - 5 * s["energy_err"] - 1e-6
    assert s["energy"] < -0.3
    # only rank 0 prints and writes
    assert run.output.count("evaluating with") == 1
    assert f"256 walkers on 2 rank(s) ({backend})" in run.output
    # the run checks its ranks' final parameters are bitwise equal, and says so
    assert len(s["parameters_sha256"]) == 64
    assert f"parameters bitwise equal on all 2 ranks (sha256 {s['parameters_sha256'][:16]})" \
        in run.output
