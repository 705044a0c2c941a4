"""Runs that survive: exact restarts, pre-emption, rewinds, results files, plots.

Every run is the hydrogen atom with an 8x8 network and 65 walkers per rank
(odd on purpose: one rank's 65 walkers resumed on two ranks need one extra
walker, so that path re-thermalizes). "The same run" means bitwise equal
parameters (params.h5), bitwise equal history (every column of history.csv but
the wall-clock timings), and the same evaluation energy.

Signals are sent once the run has printed its first line, which comes after
the signal handlers are installed and before the first iteration ends (it
includes XLA compilation), so the run always stops early, deterministically,
not racing the end of training.
"""

from __future__ import annotations

import csv
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

import h5py
import numpy as np
import pytest

from conftest import cli
from distvmc import checkpoint, resume
from distvmc.comm import available
from distvmc.preemption import EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240
TINY = ["wavefunction.factors.0.hidden=[8, 8]", "sampler.walkers=65", "sampler.thermalization=20",
        "sampler.sweeps_per_sample=3", "evaluation.samples=650", "evaluation.thermalization=5",
        "evaluation.sweeps_per_sample=2", "output.log_every=1", "reference_energy=-0.5"]
# One rank: Adam, whose state (m, v, t) must survive the restart too.
ADAM = TINY + ["optimizer.type=adam", "optimizer.lr=0.01", "optimizer.iterations=12",
               "checkpoint.every=2"]
# Two ranks: SR (dense solver, one allreduce of the overlap matrix per iteration).
SR2 = TINY + ["optimizer.iterations=10", "optimizer.solver=dense", "checkpoint.every=3",
              "distributed.backend=mpi"]
HEADER = r"^distvmc \S+: hydrogen"  # first line of a run; printed after the handlers are set
TIMINGS = {"seconds", "t_sample", "t_eloc", "t_optimizer", "t_jacobian", "t_overlap", "t_solve"}


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def distvmc(*args) -> list[str]:
    return [sys.executable, "-m", "distvmc.cli", *args]


class Proc:
    """A process whose merged stdout/stderr is collected line by line by a thread."""

    def __init__(self, cmd: list[str], env: dict | None = None):
        # Unbuffered: the first line must arrive when it is printed, not at the first flush.
        e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=e, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while not rx.search(self.text):
            if self.proc.poll() is not None and not self._reader.is_alive():
                pytest.fail(f"process ended (status {self.proc.returncode}) before printing "
                            f"{pattern!r}:\n{self.text[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no line {pattern!r} within {timeout} s:\n{self.text[-3000:]}")
            time.sleep(0.05)

    def finish(self, timeout: float = TIMEOUT_S) -> int:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running after {timeout} s:\n{self.text[-3000:]}")
        self._reader.join(10)
        return self.proc.returncode

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def mpirun_or_skip() -> list[str]:
    """``mpirun -np 2`` with the flags Open MPI needs here, or skip (also when
    DISTVMC_TEST_BACKENDS, as in tests/test_multirank.py, does not name mpi)."""
    requested = [b.strip() for b in os.environ.get("DISTVMC_TEST_BACKENDS", "").split(",")
                 if b.strip()]
    if requested and "mpi" not in requested:
        pytest.skip(f"backend mpi not in DISTVMC_TEST_BACKENDS={','.join(requested)}")
    local = Path(sys.executable).parent / "mpirun"
    mpirun = str(local) if local.exists() else shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun next to this Python or on PATH")
    if not available("mpi"):
        pytest.skip("mpi4py is not installed")
    cmd = [mpirun, "-np", "2"]
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    if re.search(r"open mpi|open-mpi|prte|openrte", version, re.I):
        cmd += ["--oversubscribe", "--bind-to", "none"]
        if os.geteuid() == 0:
            cmd += ["--allow-run-as-root"]
        for var in ("PATH", "PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "PYTHONUNBUFFERED"):
            if var in os.environ or var in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONUNBUFFERED"):
                cmd += ["-x", var]  # Proc sets the last two
    return cmd


def rank_pid(launcher_pid: int, rank: int, timeout: float = 60) -> int:
    """The pid of MPI rank ``rank`` among the launcher's children (from their environment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != launcher_pid:
                    continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env or f"PMI_RANK={rank}".encode() in env:
                return int(entry)
        time.sleep(0.1)
    pytest.fail(f"rank {rank} of launcher {launcher_pid} not found")


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def params(run_dir: Path) -> dict[str, bytes]:
    with h5py.File(run_dir / "params.h5") as f:
        return {k: f["parameters"][k][()].tobytes() for k in f["parameters"]}


def history(run_dir: Path) -> list[dict]:
    """history.csv without the wall-clock columns (floats are written with repr: exact)."""
    with open(run_dir / "history.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(f)]


def assert_same_run(reference: Path, other: Path, iterations: int) -> None:
    ref_h, h = history(reference), history(other)
    assert len(ref_h) == len(h) == iterations
    for i, (a, b) in enumerate(zip(ref_h, h)):
        assert a == b, f"history differs at iteration {i}:\n{a}\n{b}"
    assert params(reference) == params(other), "parameters differ (bitwise)"
    s_ref = json.loads((reference / "summary.json").read_text())
    s = json.loads((other / "summary.json").read_text())
    assert s["iterations"] == iterations
    assert s["energy"] == s_ref["energy"] and s["energy_err"] == s_ref["energy_err"]


def interrupt(p: Proc, out: Path, signal_rank: int | None = None) -> str:
    """Send SIGTERM to a started run once it has printed its first line (to the
    process, or to one MPI rank); check that it stopped with a checkpoint and
    EXIT_PREEMPTED."""
    p.wait_for(HEADER)
    target = p.proc.pid if signal_rank is None else rank_pid(p.proc.pid, signal_rank)
    os.kill(target, signal.SIGTERM)
    rc = p.finish()
    assert rc == EXIT_PREEMPTED, p.text[-3000:]
    assert "pre-emption signal" in p.text and f"exit code {EXIT_PREEMPTED}" in p.text
    assert checkpoint.list_checkpoints(str(out)), "no checkpoint written"
    assert not (out / "params.h5").exists()
    return p.text


# ----------------------------------------------------------------------------
# One rank (Adam). The runs the tests start from are made side by side (the
# machine has two cores); tests copy them before changing anything.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adam_runs(tmp_path_factory):
    """reference: uninterrupted (with TensorBoard); interrupted: SIGTERM early on;
    stalled: killed with SIGKILL in the middle of writing its third checkpoint."""
    base = tmp_path_factory.mktemp("adam")
    ref = Proc(distvmc("run", *ADAM, "output.tensorboard=true", "--out", str(base / "reference")))
    intr = Proc(distvmc("run", *ADAM, "--out", str(base / "interrupted")))
    stall = Proc(distvmc("run", *ADAM, "--out", str(base / "stalled")),
                 env={checkpoint.STALL_VAR: "6"})
    text = interrupt(intr, base / "interrupted")
    assert "SIGTERM on 1 of 1 rank(s)" in text
    stall.wait_for("stalling in the middle of writing")
    os.kill(stall.proc.pid, signal.SIGKILL)
    assert stall.finish() == -signal.SIGKILL
    assert ref.finish() == 0, ref.text[-3000:]
    return base


@pytest.fixture(scope="module")
def adam_reference(adam_runs):
    return adam_runs / "reference"


@pytest.fixture(scope="module")
def adam_interrupted(adam_runs):
    return adam_runs / "interrupted"


def test_sigterm_then_resume_is_bitwise_the_uninterrupted_run(adam_reference, adam_interrupted,
                                                              tmp_path):
    run = copy_run(adam_interrupted, tmp_path / "run")
    (it, path), = checkpoint.list_checkpoints(str(run))[-1:]
    assert 1 <= it < 12
    # Rows written after the checkpoint (if any) must not survive the resume.
    r = cli("run", "--resume", str(run), timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {path} at iteration {it} on the same 1 rank(s)" in r.stdout
    assert "thermalized" not in r.stdout  # thermalization is not repeated
    assert_same_run(adam_reference, run, 12)


def test_kill_during_checkpoint_write_resumes_from_the_previous_one(adam_runs, tmp_path):
    adam_reference = adam_runs / "reference"
    out = copy_run(adam_runs / "stalled", tmp_path / "run")
    names = sorted(os.listdir(out / "checkpoints"))
    assert names == ["ckpt-00000002.h5", "ckpt-00000004.h5", "ckpt-00000006.h5.tmp"]
    r = cli("run", "--resume", str(out), timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ckpt-00000006.h5.tmp: a checkpoint whose write was interrupted" in r.stdout
    assert "resumed from" in r.stdout and "ckpt-00000004.h5 at iteration 4" in r.stdout
    assert_same_run(adam_reference, out, 12)


def test_config_change_on_resume_is_refused_naming_the_keys(adam_interrupted, tmp_path):
    run = copy_run(adam_interrupted, tmp_path / "run")
    r = cli("run", "--resume", str(run), "sampler.walkers=128", "optimizer.lr=0.5",
            "optimizer.iterations=20", timeout=60)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "sampler.walkers (65 -> 128)" in err and "optimizer.lr (0.01 -> 0.5)" in err
    assert "optimizer.iterations (" not in err  # allowed to change
    assert "may change on resume" in err


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path):
    r = cli("run", "--resume", str(tmp_path), timeout=60)
    assert r.returncode == 2 and "no checkpoints" in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_corrupt_checkpoints_are_detected_and_skipped(adam_reference, tmp_path):
    ckpts = checkpoint.list_checkpoints(str(adam_reference))
    assert [i for i, _ in ckpts] == [8, 10, 12]  # checkpoint.keep = 3
    run = tmp_path / "run"
    shutil.copytree(adam_reference / "checkpoints", run / "checkpoints")
    # 12: truncated (a copy cut short); 10: one byte of the walkers flipped;
    # a file without the 'complete' mark pretending to be iteration 14.
    p12 = run / "checkpoints" / "ckpt-00000012.h5"
    data = p12.read_bytes()
    p12.write_bytes(data[: len(data) // 2])
    p10 = run / "checkpoints" / "ckpt-00000010.h5"
    with h5py.File(p10, "r") as f:
        offset = f["state/driver/objective/sampler/x"].id.get_offset()
    assert offset is not None
    with open(p10, "r+b") as f:
        f.seek(offset + 100)
        b = f.read(1)
        f.seek(offset + 100)
        f.write(bytes([b[0] ^ 0xFF]))
    p14 = run / "checkpoints" / "ckpt-00000014.h5"
    shutil.copy(run / "checkpoints" / "ckpt-00000008.h5", p14)
    with h5py.File(p14, "a") as f:
        del f.attrs["complete"]

    messages: list[str] = []
    state = checkpoint.find_latest(str(run), messages)
    assert state["meta"]["iteration"] == 8
    assert len(messages) == 3
    assert "ckpt-00000014.h5: incomplete" in messages[0]
    assert "ckpt-00000012.h5: unreadable" in messages[1]
    assert "ckpt-00000010.h5: checksum mismatch" in messages[2]
    res = resume.prepare_resume(str(run), None, [])
    assert res.checkpoint["path"].endswith("ckpt-00000008.h5") and len(res.messages) == 3


def test_results_h5_holds_history_and_evaluation(adam_reference):
    summary = json.loads((adam_reference / "summary.json").read_text())
    obs = json.loads((adam_reference / "observables.json").read_text())
    with open(adam_reference / "history.csv") as f:
        rows = list(csv.DictReader(f))
    with h5py.File(adam_reference / "results.h5") as f:
        assert f.attrs["format"] == "distvmc-results"
        assert f.attrs["iterations"] == 12 and f.attrs["ranks"] == 1
        assert f.attrs["reference_energy"] == -0.5
        assert f["history/iteration"][:].tolist() == list(range(12))
        assert f["history/energy"][:].tolist() == [float(r["energy"]) for r in rows]
        assert f["history/solve"].asstr()[:].tolist() == [r["solve"] for r in rows]
        ev = f["evaluation"]
        assert ev.attrs["energy"] == summary["energy"]
        assert ev.attrs["energy_err"] == summary["energy_err"]
        assert f["evaluation/observables/r"].attrs["mean"] == obs["r"]["mean"]
        p_r = f["evaluation/radial_density/p_r"][:]
        assert p_r.tolist() == obs["radial_density"]["p_r"]
        assert len(f["evaluation/radial_density/edges"]) == len(p_r) + 1
        assert "type: adam" in f["config"].asstr()[()]


def test_tensorboard_scalars_match_the_history(adam_reference):
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    files = list((adam_reference / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    series: dict[str, dict[int, float]] = {}
    for raw in tf.data.TFRecordDataset(str(files[0])):
        ev = event_pb2.Event.FromString(raw.numpy())
        for v in ev.summary.value:
            assert v.metadata.plugin_data.plugin_name == "scalars"
            series.setdefault(v.tag, {})[ev.step] = float(tf.make_ndarray(v.tensor))
    with open(adam_reference / "history.csv") as f:
        rows = list(csv.DictReader(f))
    for tag, col in [("energy/mean", "energy"), ("energy/error", "energy_err"),
                     ("energy/variance", "variance"), ("sampler/acceptance", "acceptance"),
                     ("sampler/step", "step"), ("optimizer/lr", "lr"),
                     ("optimizer/update_norm", "update_norm"), ("time/sample", "t_sample"),
                     ("time/eloc", "t_eloc"), ("time/optimizer", "t_optimizer")]:
        assert sorted(series[tag]) == list(range(12)), tag
        expect = np.array([float(r[col]) for r in rows], dtype=np.float32)
        got = np.array([series[tag][i] for i in range(12)], dtype=np.float32)
        np.testing.assert_array_equal(got, expect, err_msg=tag)
    assert "optimizer/sr_shift" not in series  # Adam has no shift


def test_plot_writes_the_figures(adam_reference, tmp_path):
    pytest.importorskip("matplotlib")
    r = cli("plot", str(adam_reference), "--out", str(tmp_path / "plots"), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("energy", "variance", "acceptance", "radial_density"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size > 10_000, name  # axes, curves and labels, not an empty canvas


def test_plot_without_matplotlib_says_how_to_install(adam_reference, tmp_path):
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    r = cli("plot", str(adam_reference), timeout=60,
            env={"PYTHONPATH": f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "matplotlib" in r.stderr and "pip install 'distvmc[plot]'" in r.stderr


# ----------------------------------------------------------------------------
# Two ranks (SR, mpi backend) and changing the rank count
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mpirun():
    return mpirun_or_skip()


@pytest.fixture(scope="module")
def sr2_runs(mpirun, tmp_path_factory):
    """reference: uninterrupted; interrupted: SIGTERM sent to rank 1 only."""
    base = tmp_path_factory.mktemp("sr2")
    ref = Proc(mpirun + distvmc("run", *SR2, "--out", str(base / "reference")))
    intr = Proc(mpirun + distvmc("run", *SR2, "--out", str(base / "interrupted")))
    text = interrupt(intr, base / "interrupted", signal_rank=1)
    assert "SIGTERM/SIGUSR1 on 1 of 2 rank(s)" in text  # rank 0 learnt it from the allreduce
    assert ref.finish() == 0, ref.text[-3000:]
    return base


@pytest.fixture(scope="module")
def sr2_reference(sr2_runs):
    return sr2_runs / "reference"


@pytest.fixture(scope="module")
def sr2_interrupted(sr2_runs):
    return sr2_runs / "interrupted"


@pytest.mark.mpi
def test_two_ranks_signal_to_one_rank_then_resume_is_bitwise(mpirun, sr2_reference,
                                                             sr2_interrupted, tmp_path):
    run = copy_run(sr2_interrupted, tmp_path / "run")
    (it, path), = checkpoint.list_checkpoints(str(run))[-1:]
    assert 1 <= it < 10
    with h5py.File(path) as f:  # every rank's walkers and stream position are in it
        x = f["state/driver/objective/sampler/x"]
        assert x.shape == (2, 65, 1, 3) and x.attrs["all_ranks"] == 1
        counters = f["state/driver/objective/sampler/counter"][:]
        assert counters.shape == (2,) and counters[0] == counters[1] > 0  # same sweeps, own streams
        assert len(set(x[0].ravel()) & set(x[1].ravel())) == 0
    p = Proc(mpirun + distvmc("run", "--resume", str(run)))
    assert p.finish() == 0, p.text[-3000:]
    assert f"resumed from {path} at iteration {it} on the same 2 rank(s)" in p.text
    assert_same_run(sr2_reference, run, 10)


@pytest.mark.mpi
def test_resume_two_ranks_on_one_concatenates_the_walkers(sr2_interrupted, tmp_path):
    run = copy_run(sr2_interrupted, tmp_path / "run")
    r = cli("run", "--resume", str(run), "distributed.backend=single", timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "config changed on resume: distributed.backend 'mpi' -> 'single'" in r.stdout
    assert "checkpoint of 2 rank(s) resumed on 1: its 130 walkers concatenated into 130 per rank" \
        in r.stdout
    s = json.loads((run / "summary.json").read_text())
    assert s["iterations"] == 10 and s["ranks"] == 1 and s["walkers_global"] == 130
    assert len(history(run)) == 10
    # A finished run continues when optimizer.iterations grows; the 130 walkers stay.
    r = cli("run", "--resume", str(run), "optimizer.iterations=12", timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "config changed on resume: optimizer.iterations 10 -> 12" in r.stdout
    assert "at iteration 10 on the same 1 rank(s)" in r.stdout
    s = json.loads((run / "summary.json").read_text())
    assert s["iterations"] == 12 and s["walkers_global"] == 130 and s["resumed_at"] == 10
    assert len(history(run)) == 12


@pytest.mark.mpi
def test_resume_one_rank_on_two_splits_and_rethermalizes(mpirun, adam_interrupted, tmp_path):
    run = copy_run(adam_interrupted, tmp_path / "run")
    p = Proc(mpirun + distvmc("run", "--resume", str(run), "distributed.backend=mpi"))
    assert p.finish() == 0, p.text[-3000:]
    assert "checkpoint of 1 rank(s) resumed on 2: its 65 walkers split into 33 per rank" in p.text
    assert "1 walker(s) added as copies of others, so every rank re-thermalized 20 sweeps" in p.text
    s = json.loads((run / "summary.json").read_text())
    assert s["iterations"] == 12 and s["ranks"] == 2 and s["walkers_global"] == 66
    assert len(history(run)) == 12


# ----------------------------------------------------------------------------
# Non-finite energies, disk space, and the Slurm requeue path
# ----------------------------------------------------------------------------

NAN = TINY + ["optimizer.iterations=10", "potential.type=user",
              "potential.function=nan_potential:coulomb_with_nan",
              f"potential.path={ROOT}/tests"]


@pytest.fixture(scope="module")
def nan_runs(tmp_path_factory):
    """once: NaN at iteration 5 only; persistent: NaN from iteration 3 on, at most 2 rewinds.
    (Call 1 of the potential is the start-up shape check, call k + 2 iteration k.)"""
    base = tmp_path_factory.mktemp("nan")
    once = Proc(distvmc("run", *NAN, "potential.params={nan_call: 7}", "--out",
                        str(base / "once")))
    persistent = Proc(distvmc("run", *NAN, "potential.params={nan_call: 5, persistent: true}",
                              "recovery.max_rewinds=2", "--out", str(base / "persistent")))
    once.finish()
    persistent.finish()
    return {"once": (base / "once", once), "persistent": (base / "persistent", persistent)}


def test_nan_energies_rewind_to_the_last_good_state_and_the_run_completes(nan_runs):
    out, p = nan_runs["once"]
    assert p.proc.returncode == 0, p.text[-3000:]
    assert ("warning: iteration 5: 1 of 65 local energies not finite; rewound to the start of "
            "iteration 4 (rewind 1 of at most 5); learning rate now x0.5, SR shift 0.01") in p.text
    s = json.loads((out / "summary.json").read_text())
    assert s["iterations"] == 10
    assert [(e["iteration"], e["to"], e["nonfinite"]) for e in s["rewinds"]] == [(5, 4, 1)]
    rows = history(out)
    assert [int(r["iteration"]) for r in rows] == list(range(10))  # no duplicate, no gap
    assert all(np.isfinite(float(r["energy"])) and r["nonfinite"] == "0" for r in rows)
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[:4] == [0.05] * 4 and lrs[4:] == [0.025] * 6  # iteration 4 was redone, cautiously


def test_persistent_nan_energies_stop_after_max_rewinds_with_one_line(nan_runs):
    _, p = nan_runs["persistent"]
    assert p.proc.returncode == 1
    assert "Traceback" not in p.text
    err = [line for line in p.lines if line.startswith("distvmc: error:")]
    assert len(err) == 1
    assert "iteration 2: 1 of 65 local energies are not finite after 2 rewind(s) " \
        "(recovery.max_rewinds = 2)" in err[0]
    assert p.text.count("rewound to the start of iteration 2") == 2


def test_too_little_disk_space_is_a_clear_error_at_start(tmp_path):
    r = cli("run", *TINY, "optimizer.iterations=2", "checkpoint.min_free_mb=1000000000000",
            "--out", str(tmp_path / "run"), timeout=TIMEOUT_S)
    assert r.returncode == 2
    assert r.stderr.startswith("distvmc: error: ") and r.stderr.strip().count("\n") == 0
    assert "MB free on its file system" in r.stderr and "checkpoint.min_free_mb" in r.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was created


def test_free_space_is_checked_against_the_size_of_the_checkpoints(tmp_path):
    from distvmc import config, hooks

    cfg = config.load(None, ["sampler.walkers=4096", "checkpoint.keep=3"])
    walkers, n, d, p = 4096 * 64, 10, 3, 100_000
    need = 4 * hooks.estimate_bytes(cfg, walkers, n, d, p)
    assert need > 4 * 2 * 8 * (walkers * n * d)  # every rank's walkers, twice (rewind state)
    free = shutil.disk_usage(tmp_path).free
    if free > need:
        hooks.check_free_space(str(tmp_path), cfg, hooks.estimate_bytes(cfg, walkers, n, d, p))
    walkers *= 1 + int(free // (4 * 2 * 8 * 30))  # more walkers than the disk holds
    with pytest.raises(config.ConfigError, match="MB free on its file system"):
        hooks.check_free_space(str(tmp_path), cfg, hooks.estimate_bytes(cfg, walkers, n, d, p))


def test_slurm_script_checkpoints_on_sigusr1_requeues_and_resumes(tmp_path):
    """launch/slurm/cpu.sbatch with stand-ins: srun runs the command in place,
    scontrol records what it was asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ $# -gt 0 && $1 == --* ]]; do shift; done\n'
                                  'exec "$@"\n')
    (bin_dir / "scontrol").write_text('#!/bin/bash\necho "$@" >> "$SCONTROL_LOG"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    run_dir = tmp_path / "job"
    log = tmp_path / "scontrol.log"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NAME": "test", "SLURM_CPUS_PER_TASK": "1", "RUN_DIR": str(run_dir),
           "BACKEND": "single", "DISTVMC_CMD": f"{sys.executable} -m distvmc.cli",
           "SCONTROL_LOG": str(log)}
    script = [str(ROOT / "launch" / "slurm" / "cpu.sbatch"), str(ROOT / "configs" / "hydrogen.yaml"),
              *TINY,
              "optimizer.iterations=6"]
    first = Proc(["bash", *script], env=env)
    first.wait_for(HEADER)
    os.kill(first.proc.pid, signal.SIGUSR1)  # what --signal=B:USR1@300 does
    assert first.finish() == 0, first.text[-3000:]
    assert "[cpu.sbatch] new run in" in first.text
    assert "got SIGUSR1" in first.text and "SIGUSR1 on 1 of 1 rank(s)" in first.text
    assert f"distvmc exited with status {EXIT_PREEMPTED}" in first.text
    assert log.read_text().split("\n")[0] == "requeue 4242"
    assert checkpoint.list_checkpoints(str(run_dir))

    second = Proc(["bash", *script], env=dict(env, SLURM_RESTART_COUNT="1"))  # the requeued job
    assert second.finish() == 0, second.text[-3000:]
    assert "[cpu.sbatch] resuming" in second.text and "resumed from" in second.text
    assert "distvmc exited with status 0" in second.text
    assert log.read_text().strip() == "requeue 4242"  # not requeued again
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == 6
