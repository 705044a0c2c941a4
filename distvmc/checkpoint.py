"""Checkpoints that restart exactly, and resuming from them.

A checkpoint is everything that determines the rest of a run: parameters,
optimizer state, the sampler's step width, **every rank's** walkers and
random-stream position (the sweep counter of the counter-based Philox stream,
:mod:`distvmc.sampler`), the recovery state (learning-rate and SR-shift
scales, the rewind target), the resolved config and the history so far.
Resuming with the same number of ranks therefore continues bit for bit as if
the run had never stopped.

Files: ``RUN_DIR/checkpoints/ckpt-IIIIIIII.h5`` (IIIIIIII = iterations done),
HDF5, written by rank 0 only, atomically: ``ckpt-….h5.tmp`` is written,
fsync'ed and renamed, so a kill during the write leaves the previous
checkpoint as the latest. The last ``checkpoint.keep`` files are kept. Layout
(every name below is a dataset; read with plain h5py)::

    meta                    JSON: iteration, ranks, step, thermalized, lr_scale,
                            shift_scale, rewinds, config_dir, versions, time
    config                  JSON: the resolved config
    history                 JSON: the per-iteration records so far
                            (JSON datasets are UTF-8 bytes as uint8 arrays:
                            json.loads(f["history"][()].tobytes()))
    parameters/NNN_name     parameter arrays (as in params.h5), native dtype
    optimizer/KEY           optimizer state (Adam: m, v, t; SR: none)
    sampler/walkers         (G, N, D) walkers of all ranks, rank after rank
    sampler/walkers_per_rank  (ranks,) int64
    sampler/counters        (ranks,) int64: sweeps drawn from each rank's stream
    rewind/...              the state a rewind would return to (recovery.*):
                            meta (JSON), parameters (P,) float64, optimizer/KEY,
                            walkers, walkers_per_rank, counters

The root attribute ``sha256`` is a digest of every dataset (name, dtype,
shape, bytes) and ``complete`` is set last: a truncated, half-written or
altered file fails to open, lacks ``complete`` or fails the digest, and
:func:`find_latest` skips it with a message.

Walkers are collected on rank 0 with one allreduce of a zero-padded
(ranks, W_max, N, D) array in which each rank fills its own slot (exact: x + 0
= x), so this works on every communicator.

This module imports TensorFlow only inside the functions that need it: the
command line checks a resume before TensorFlow starts.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import os
import re
import shutil
import time

import h5py
import numpy as np

from distvmc import __version__, preemption
from distvmc.config import ConfigError

FORMAT = "distvmc-checkpoint"
FORMAT_VERSION = 1
NAME = re.compile(r"ckpt-(\d{8})\.h5$")

# Keys that may differ between a checkpoint's config and the config of the run
# that resumes it ("section.*" means every key of the section). Everything else
# would change the trajectory, so a resume refuses it.
RESUME_MAY_CHANGE = ("optimizer.iterations", "output.*", "evaluation.*", "checkpoint.*",
                     "distributed.backend", "recovery.max_rewinds")

STALL_VAR = "DISTVMC_TEST_CHECKPOINT_STALL"  # test only, see write()


class CheckpointError(Exception):
    """A checkpoint file that cannot be used; ``str(err)`` says why."""


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def path_for(run_dir: str, iteration: int) -> str:
    return os.path.join(checkpoint_dir(run_dir), f"ckpt-{iteration:08d}.h5")


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(iteration, path) of every ``ckpt-*.h5`` in the run directory, oldest first."""
    out = []
    for p in glob.glob(os.path.join(checkpoint_dir(run_dir), "ckpt-*.h5")):
        m = NAME.search(os.path.basename(p))
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def _json(obj) -> str:
    def default(v):
        if isinstance(v, (np.floating, np.integer, np.bool_)):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        raise TypeError(f"not JSON serializable: {type(v)}")

    return json.dumps(obj, default=default)  # floats as repr: exact round trip


def _put_json(g: h5py.Group, name: str, obj) -> None:
    """JSON text as a gzip-compressed uint8 dataset (histories get long)."""
    data = np.frombuffer(_json(obj).encode(), dtype=np.uint8)
    g.create_dataset(name, data=data, compression="gzip" if data.size > 4096 else None)


def _get_json(g: h5py.Group, name: str):
    return json.loads(g[name][()].tobytes().decode())


def _digest(f: h5py.File) -> str:
    """SHA-256 over every dataset's name, dtype, shape and bytes (sorted by name)."""
    items = []
    f.visititems(lambda name, obj: items.append(name) if isinstance(obj, h5py.Dataset) else None)
    h = hashlib.sha256()
    for name in sorted(items):
        d = f[name]
        data = np.ascontiguousarray(d[()]).tobytes()
        h.update(f"{name}|{d.dtype.str}|{d.shape}|".encode())
        h.update(data)
    return h.hexdigest()


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_arrays(g: h5py.Group, arrays: dict) -> None:
    for k, v in arrays.items():
        g.create_dataset(k, data=np.asarray(v))


def write(path: str, state: dict) -> None:
    """Write ``state`` (from :func:`gather`) to ``path`` atomically.

    TEST ONLY: with ``DISTVMC_TEST_CHECKPOINT_STALL=I`` in the environment the
    write of the checkpoint of iteration I stops halfway (after the data,
    before the digest, ``complete`` and the rename) and sleeps for ten
    minutes, so that a test can kill the process during a write.
    """
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["iteration"] = int(state["meta"]["iteration"])
        _put_json(f, "meta", state["meta"])
        _put_json(f, "config", state["config"])
        _put_json(f, "history", state["history"])
        _write_arrays(f.create_group("parameters"), state["parameters"])
        _write_arrays(f.create_group("optimizer"), state["optimizer"])
        _write_arrays(f.create_group("sampler"), state["sampler"])
        if state.get("rewind") is not None:
            r = state["rewind"]
            g = f.create_group("rewind")
            _put_json(g, "meta", r["meta"])
            g.create_dataset("parameters", data=r["parameters"])
            _write_arrays(g.create_group("optimizer"), r["optimizer"])
            _write_arrays(g, r["sampler"])
        stall = os.environ.get(STALL_VAR)
        if stall is not None and int(stall) == int(state["meta"]["iteration"]):
            f.flush()
            print(f"distvmc: {STALL_VAR}={stall}: stalling in the middle of writing {tmp}",
                  flush=True)
            time.sleep(600)
        f.attrs["sha256"] = _digest(f)
        f.attrs["complete"] = True
    _fsync_path(tmp)
    os.replace(tmp, path)
    try:
        _fsync_path(os.path.dirname(path))
    except OSError:  # some file systems refuse fsync on a directory
        pass


def _read_arrays(g: h5py.Group) -> dict:
    return {k: g[k][()] for k in g.keys()}


def read(path: str) -> dict:
    """Read and verify a checkpoint; raises :class:`CheckpointError` saying why it is unusable."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise CheckpointError("not a distvmc checkpoint")
            if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
                raise CheckpointError(f"format version {f.attrs.get('format_version')} "
                                      f"(this distvmc reads {FORMAT_VERSION})")
            if not f.attrs.get("complete", False):
                raise CheckpointError("incomplete (its write was interrupted)")
            if f.attrs.get("sha256") != _digest(f):
                raise CheckpointError("checksum mismatch (the file was altered or damaged)")
            state = {
                "meta": _get_json(f, "meta"),
                "config": _get_json(f, "config"),
                "history": _get_json(f, "history"),
                "parameters": _read_arrays(f["parameters"]),
                "optimizer": _read_arrays(f["optimizer"]),
                "sampler": _read_arrays(f["sampler"]),
                "rewind": None,
            }
            if "rewind" in f:
                g = f["rewind"]
                state["rewind"] = {
                    "meta": _get_json(g, "meta"),
                    "parameters": g["parameters"][()],
                    "optimizer": _read_arrays(g["optimizer"]),
                    "sampler": {k: g[k][()] for k in ("walkers", "walkers_per_rank", "counters")},
                }
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"unreadable ({type(e).__name__}: {' '.join(str(e).split())[:160]})"
                              ) from None
    state["path"] = path
    return state


def find_latest(run_dir: str, messages: list[str] | None = None) -> dict | None:
    """The newest checkpoint of ``run_dir`` that reads and verifies, or None.

    Every newer file that does not is skipped, with one line appended to
    ``messages`` naming it and the reason.
    """
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return read(path)
        except CheckpointError as e:
            if messages is not None:
                messages.append(f"skipping checkpoint {path}: {e}")
    return None


# ----------------------------------------------------------------------------
# Collecting and restoring the state of all ranks (collective calls)
# ----------------------------------------------------------------------------


def _gather_rows(comm, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's rows of x (shape (W_rank, ...)) concatenated in rank order, on every rank.

    Returns (all rows (sum W_rank, ...), counts (ranks,) int64). One allreduce
    for the counts and one of a zero-padded (ranks, W_max, ...) array.
    """
    onehot = np.zeros(comm.size)
    onehot[comm.rank] = x.shape[0]
    counts = comm.allreduce(onehot).astype(np.int64)
    if comm.size == 1:
        return np.array(x, copy=True), counts
    buf = np.zeros((comm.size, int(counts.max())) + x.shape[1:])
    buf[comm.rank, :x.shape[0]] = x
    total = comm.allreduce(buf)
    rows = np.concatenate([total[r, :counts[r]] for r in range(comm.size)])
    return rows.astype(x.dtype), counts


def _gather_ints(comm, value: int) -> np.ndarray:
    onehot = np.zeros(comm.size)
    onehot[comm.rank] = float(value)  # exact below 2**53
    return comm.allreduce(onehot).astype(np.int64)


def _gather_snapshot(comm, snap: dict) -> dict:
    walkers, counts = _gather_rows(comm, snap["sampler"]["x"])
    return {"walkers": walkers, "walkers_per_rank": counts,
            "counters": _gather_ints(comm, snap["sampler"]["counter"])}


def gather(vmc, config_dir: str | None = None) -> dict | None:
    """The complete state of the run, on rank 0 (None elsewhere). Collective."""
    comm = vmc.comm
    snap = vmc.snapshot()
    sampler = _gather_snapshot(comm, snap)
    rewind = None
    if vmc.last_good is not None:  # the same on every rank
        rewind = _gather_snapshot(comm, vmc.last_good)
    if not comm.is_root:
        return None
    import tensorflow as tf

    meta = {
        "iteration": vmc.iteration, "ranks": comm.size, "step": snap["sampler"]["step"],
        "thermalized": bool(vmc.thermalized), "lr_scale": vmc.lr_scale,
        "shift_scale": float(getattr(vmc.optimizer, "shift_scale", 1.0)),
        "rewinds": copy.deepcopy(vmc.rewinds), "config_dir": config_dir,
        "distvmc_version": __version__, "tensorflow_version": tf.__version__,
        "h5py_version": h5py.__version__, "numpy_version": np.__version__,
        "backend": comm.name, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    sampler["step"] = np.float64(snap["sampler"]["step"])
    state = {"meta": meta, "config": vmc.cfg.to_dict(), "history": copy.deepcopy(vmc.history),
             "parameters": vmc.wf.named_parameters(), "optimizer": snap["optimizer"],
             "sampler": sampler, "rewind": None}
    if rewind is not None:
        g = vmc.last_good
        rewind["step"] = np.float64(g["sampler"]["step"])
        state["rewind"] = {
            "meta": {"iteration": g["iteration"], "history_len": g["history_len"],
                     "step": g["sampler"]["step"]},
            "parameters": g["parameters"], "optimizer": g["optimizer"],
            "sampler": rewind}
    return state


def _my_rows(walkers: np.ndarray, counts: np.ndarray, rank: int) -> np.ndarray:
    start = int(np.sum(counts[:rank]))
    return walkers[start:start + int(counts[rank])]


def _set_walkers(vmc, x: np.ndarray, step: float, counter: int) -> None:
    """Give this rank the walkers x (a new sampler when their number changes)."""
    from distvmc.sampler import MetropolisSampler, stream_key

    if x.shape[0] != vmc.sampler.walkers:
        cfg = vmc.cfg
        vmc.sampler = MetropolisSampler(vmc.wf.log_abs, x, step, stream_key(cfg.seed, vmc.comm.rank),
                                        vmc.comm, cfg.sampler.target_acceptance, vmc.dtype)
    vmc.sampler.set_state({"x": x, "step": step, "counter": counter})


def restore(vmc, state: dict | None, log=print) -> str:
    """Put a checkpoint's state (read on rank 0; None elsewhere) into ``vmc``. Collective.

    Same rank count: every rank gets back exactly its walkers and stream
    position. Another rank count: the G walkers are dealt out in rank order,
    ceil(G / ranks) per rank (fewer ranks concatenate, more ranks split); if G
    does not divide, the missing walkers are copies of existing ones and every
    rank re-thermalizes (``sampler.thermalization`` sweeps, step width kept) so
    the copies decorrelate. Every rank's stream then continues from the
    largest counter in the checkpoint, never reusing random numbers. The
    rewind target is kept only with the same rank count.

    Returns a one-line description of what was done (also logged).
    """
    comm = vmc.comm
    state = comm.bcast_object(state if comm.is_root else None)
    meta = state["meta"]
    names = list(vmc.wf.named_parameters())
    if sorted(names) != sorted(state["parameters"]):
        raise ConfigError(f"checkpoint {state['path']}: its parameters do not match the "
                          "configured wavefunction")
    for name, var in zip(names, vmc.wf.parameters):
        var.assign(state["parameters"][name])
    vmc.optimizer.set_state(state["optimizer"])
    vmc.iteration = int(meta["iteration"])
    vmc.history = copy.deepcopy(state["history"])
    vmc.thermalized = bool(meta["thermalized"])
    vmc.lr_scale = float(meta["lr_scale"])
    if hasattr(vmc.optimizer, "shift_scale"):
        vmc.optimizer.shift_scale = float(meta["shift_scale"])
    vmc.rewinds = copy.deepcopy(meta["rewinds"])

    s = state["sampler"]
    walkers, counts, counters = s["walkers"], s["walkers_per_rank"], s["counters"]
    step = float(s["step"])
    old = int(meta["ranks"])
    how = f"resumed from {state['path']} at iteration {vmc.iteration}"
    if old == comm.size:
        _set_walkers(vmc, _my_rows(walkers, counts, comm.rank), step, int(counters[comm.rank]))
        r = state.get("rewind")
        vmc.last_good = None
        if r is not None:
            rs = r["sampler"]
            vmc.last_good = {
                "iteration": int(r["meta"]["iteration"]), "history_len": int(r["meta"]["history_len"]),
                "parameters": np.asarray(r["parameters"], dtype=np.float64),
                "optimizer": r["optimizer"],
                "sampler": {"x": _my_rows(rs["walkers"], rs["walkers_per_rank"], comm.rank),
                            "step": float(r["meta"]["step"]),
                            "counter": int(rs["counters"][comm.rank])}}
        how += f" on the same {comm.size} rank(s): walkers and random streams restored exactly"
    else:
        g = walkers.shape[0]
        per = -(-g // comm.size)
        missing = per * comm.size - g
        dealt = np.concatenate([walkers, walkers[np.arange(missing) % g]]) if missing else walkers
        mine = dealt[comm.rank * per:(comm.rank + 1) * per]
        counter = int(np.max(counters))
        _set_walkers(vmc, mine, step, counter)
        vmc.last_good = None
        verb = "concatenated" if comm.size < old else "split"
        how += (f"; checkpoint of {old} rank(s) resumed on {comm.size}: its {g} walkers "
                f"{verb} into {per} per rank, random streams continue from sweep {counter}")
        if missing:
            sweeps = vmc.cfg.sampler.thermalization
            acc = vmc.sampler.thermalize(sweeps, adapt=False) if sweeps else float("nan")
            how += (f"; {missing} walker(s) added as copies of others, so every rank "
                    f"re-thermalized {sweeps} sweeps (acceptance {acc:.3f})")
        if state.get("rewind") is not None:
            how += "; the rewind target was dropped (it holds the old rank layout)"
    log(how)
    return how


# ----------------------------------------------------------------------------
# Resume: which checkpoint, and which config changes are allowed
# ----------------------------------------------------------------------------


def _flatten(tree, prefix="") -> dict:
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        for i, v in enumerate(tree):
            out.update(_flatten(v, f"{prefix}.{i}"))
        out[f"{prefix}.#"] = len(tree)
    else:
        out[prefix] = tree
    return out


def may_change(key: str) -> bool:
    for pattern in RESUME_MAY_CHANGE:
        if key == pattern or (pattern.endswith(".*") and key.startswith(pattern[:-1])):
            return True
    return False


def config_changes(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(key, old value, new value) for every key that differs between two resolved configs."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class Resume:
    """What ``distvmc run --resume RUN_DIR`` resumes: run directory, config, checkpoint.

    Attributes:
      run_dir, cfg (validated Section), state (the checkpoint, read and
      verified), messages (skipped checkpoints), changes (allowed config changes).
    """

    def __init__(self, run_dir, cfg, state, messages, changes):
        self.run_dir, self.cfg, self.state = run_dir, cfg, state
        self.messages, self.changes = messages, changes

    @property
    def config_dir(self) -> str | None:
        return self.state["meta"].get("config_dir")


def prepare_resume(run_dir: str, config_path: str | None, overrides: list[str]) -> Resume:
    """Find the latest valid checkpoint and the config to continue with (no TensorFlow).

    The config is the checkpoint's own, or ``config_path`` when given, with
    ``overrides`` applied and ``output.dir`` set to ``run_dir``. Raises
    ConfigError (one line) when there is nothing to resume or when a key
    outside :data:`RESUME_MAY_CHANGE` differs from the checkpoint's config.
    """
    from distvmc import config as config_mod

    if not os.path.isdir(run_dir):
        raise ConfigError(f"--resume {run_dir!r}: no such run directory")
    if not list_checkpoints(run_dir):
        raise ConfigError(f"--resume {run_dir!r}: no checkpoints in "
                          f"{checkpoint_dir(run_dir)!r}; start the run with --out {run_dir}")
    messages: list[str] = []
    state = find_latest(run_dir, messages)
    if state is None:
        raise ConfigError(f"--resume {run_dir!r}: no usable checkpoint ({'; '.join(messages)})")
    raw = config_mod.load_raw(config_path) if config_path else copy.deepcopy(state["config"])
    raw = config_mod.apply_overrides(raw, list(overrides) + [f"output.dir={run_dir}"])
    cfg = config_mod.validate(raw)
    try:  # keys added to distvmc since the checkpoint get their defaults on both sides
        old = config_mod.validate(copy.deepcopy(state["config"])).to_dict()
    except ConfigError as e:
        raise ConfigError(f"--resume {run_dir!r}: the checkpoint's config is not valid for "
                          f"this distvmc {__version__}: {e}") from None
    changes = config_changes(old, cfg.to_dict())
    refused = [c for c in changes if not may_change(c[0])]
    if refused:
        listed = ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in refused)
        raise ConfigError(f"--resume {run_dir!r}: config differs from the checkpoint's in {listed}; "
                          f"only {', '.join(RESUME_MAY_CHANGE)} may change on resume")
    return Resume(run_dir, cfg, state, messages, [c for c in changes if c[0] != "output.dir"])


# ----------------------------------------------------------------------------
# When to write: every N iterations, every M minutes, at the end, on a signal
# ----------------------------------------------------------------------------


def estimate_bytes(vmc) -> int:
    """A generous size of one checkpoint of this run (current and rewind states)."""
    walkers = vmc.global_walkers * vmc.system.particles * vmc.system.dim
    history = 600 * max(vmc.cfg.optimizer.iterations, 1)
    return int(2 * 8 * (walkers + 3 * vmc.wf.n_parameters) + history + 65536)


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


def check_free_space(run_dir: str, vmc) -> None:
    """ConfigError at start when the run directory's disk cannot hold keep + 1 checkpoints
    of this run (or has less than ``checkpoint.min_free_mb``)."""
    c = vmc.cfg.checkpoint
    need = max(c.min_free_mb * 1e6, (c.keep + 1) * estimate_bytes(vmc))
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise ConfigError(f"output.dir = {run_dir!r}: only {free / 1e6:.1f} MB free on its file "
                          f"system; this run needs at least {need / 1e6:.1f} MB "
                          f"(checkpoint.min_free_mb = {c.min_free_mb:g}, checkpoint.keep = "
                          f"{c.keep}); free some space or choose another --out")


class Checkpointer:
    """Writes checkpoints on schedule and turns a pre-emption signal into a clean stop.

    :meth:`after_iteration` runs on every rank after every iteration (one
    allreduce of two flags: has any rank received SIGTERM/SIGUSR1, and has
    rank 0's clock passed ``checkpoint.minutes``) and writes a checkpoint every
    ``checkpoint.every`` iterations, at the end of training, when the minutes
    have passed, and before stopping on a signal (then it raises
    :class:`~distvmc.preemption.Preempted`).
    """

    def __init__(self, vmc, run_dir: str, config_dir: str | None = None, log=print,
                 clock=time.monotonic):
        self.vmc, self.run_dir, self.config_dir = vmc, run_dir, config_dir
        self.log = log
        self.clock = clock
        self.last_time = clock()
        self.last_path: str | None = None
        self.target = vmc.cfg.optimizer.iterations
        if vmc.comm.is_root:
            for tmp in glob.glob(os.path.join(checkpoint_dir(run_dir), "*.tmp")):
                os.remove(tmp)
                log(f"removed {tmp}: a checkpoint whose write was interrupted")

    def _flags(self) -> tuple[int, bool]:
        c = self.vmc.cfg.checkpoint
        due = (self.vmc.comm.is_root and c.minutes > 0
               and self.clock() - self.last_time >= 60.0 * c.minutes)
        f = self.vmc.comm.allreduce(np.array([float(preemption.requested()), float(due)]))
        return int(f[0]), bool(f[1] > 0)

    def save(self) -> str:
        """Write a checkpoint of the current state (collective); returns its path."""
        vmc = self.vmc
        state = gather(vmc, self.config_dir)
        path = path_for(self.run_dir, vmc.iteration)
        if vmc.comm.is_root:
            t0 = time.perf_counter()
            write(path, state)
            old = list_checkpoints(self.run_dir)[:-vmc.cfg.checkpoint.keep]
            for _, p in old:
                os.remove(p)
            self.log(f"checkpoint {path} ({os.path.getsize(path) / 1e3:.0f} kB, "
                     f"{time.perf_counter() - t0:.2f} s)")
        vmc.comm.barrier()  # no rank leaves before the file is complete
        self.last_time = self.clock()
        self.last_path = path
        return path

    def after_iteration(self, rec: dict) -> None:
        signalled, time_due = self._flags()
        if signalled:
            path = self.save()
            self.log(f"pre-emption signal ({'/'.join(preemption.received_names()) or 'SIGTERM/SIGUSR1'}"
                     f" on {signalled} of {self.vmc.comm.size} rank(s)): stopped after iteration "
                     f"{self.vmc.iteration} with checkpoint {path}; exit code "
                     f"{preemption.EXIT_PREEMPTED}; continue with: distvmc run --resume {self.run_dir}")
            raise preemption.Preempted(self.vmc.iteration, path)
        if "rewind" in rec:
            return
        every = self.vmc.cfg.checkpoint.every
        i = self.vmc.iteration
        if time_due or (every > 0 and i % every == 0) or i >= self.target:
            self.save()

    def during_evaluation(self) -> None:
        """Between evaluation blocks: stop on a signal (the end-of-training checkpoint
        is the restart point; the evaluation is repeated on resume)."""
        signalled, _ = self._flags()
        if signalled:
            self.log(f"pre-emption signal during the evaluation: stopping; exit code "
                     f"{preemption.EXIT_PREEMPTED}; distvmc run --resume {self.run_dir} repeats "
                     f"the evaluation from {self.last_path or 'the last checkpoint'}")
            raise preemption.Preempted(self.vmc.iteration, None)
