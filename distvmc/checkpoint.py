"""The checkpoint file format: one HDF5 file per checkpoint, written atomically.

A checkpoint holds a run's whole state tree (:mod:`distvmc.state`: the job's
states found so far, and the current driver's parameters, optimizer state,
walkers, random-stream positions and recovery state, with every rank's
walkers and streams gathered on rank 0), the resolved config, the history
so far and a ``meta`` record. What goes in the tree is the owners' business
(:meth:`distvmc.job.Job.state`); when files are written is
:class:`distvmc.hooks.Checkpointer`'s; which checkpoint a resume takes and
which config changes it allows is :mod:`distvmc.resume`'s.

Files: ``RUN_DIR/checkpoints/ckpt-IIIIIIII.h5`` (IIIIIIII = iterations done in
the run, over all states). Rank 0 writes ``ckpt-….h5.tmp``, fsyncs it and
renames it, so a kill during the write leaves the previous checkpoint as the
latest. Layout (every name is a dataset; read with plain h5py)::

    meta          JSON: iteration, ranks, versions, time, ...
    config        JSON: the resolved config
    history       JSON: the per-iteration records so far
    state_json    JSON: {path: value} for every scalar, string or list leaf of the tree
    state/PATH    one dataset per array leaf (PATH: the tree's keys joined by '/',
                  list items as '#i'); leaves gathered from all ranks have the
                  attribute all_ranks = 1 and a first axis of length ranks

(JSON datasets are UTF-8 bytes as uint8 arrays: ``json.loads(f["meta"][()].tobytes())``.)
The root attribute ``sha256`` is a digest of every dataset (name, dtype,
shape, bytes) and ``complete`` is set last: a truncated, half-written or
altered file fails to open, lacks ``complete`` or fails the digest, and
:func:`find_latest` skips it with a message.

This module imports neither TensorFlow nor MPI.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import time

import h5py
import numpy as np

from distvmc.state import AllRanks

FORMAT = "distvmc-checkpoint"
FORMAT_VERSION = 2
NAME = re.compile(r"ckpt-(\d{8})\.h5$")
STALL_VAR = "DISTVMC_TEST_CHECKPOINT_STALL"  # test only, see write()


class CheckpointError(Exception):
    """A checkpoint file that cannot be used; ``str(err)`` says why."""


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


# ----------------------------------------------------------------------------
# Trees <-> flat paths
# ----------------------------------------------------------------------------


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v)}")


def _is_array(v) -> bool:
    return isinstance(v, (np.ndarray, AllRanks))


def _has_array(tree) -> bool:
    if _is_array(tree):
        return True
    if isinstance(tree, dict):
        return any(_has_array(v) for v in tree.values())
    if isinstance(tree, list):
        return any(_has_array(v) for v in tree)
    return False


def flatten(tree, prefix: str = "", arrays=None, scalars=None):
    """(arrays {path: ndarray or AllRanks}, scalars {path: JSON value}) of a state tree."""
    arrays = {} if arrays is None else arrays
    scalars = {} if scalars is None else scalars
    if _is_array(tree):
        arrays[prefix] = tree
    elif isinstance(tree, dict) and tree and _has_array(tree):
        for k, v in tree.items():
            if "/" in str(k) or str(k).startswith("#"):
                raise ValueError(f"state key {k!r} may not contain '/' or start with '#'")
            flatten(v, f"{prefix}/{k}" if prefix else str(k), arrays, scalars)
    elif isinstance(tree, list) and _has_array(tree):
        for i, v in enumerate(tree):
            flatten(v, f"{prefix}/#{i}" if prefix else f"#{i}", arrays, scalars)
    else:
        scalars[prefix] = tree
    return arrays, scalars


def unflatten(arrays: dict, scalars: dict):
    """The inverse of :func:`flatten`."""
    root: dict = {}
    for path, v in list(scalars.items()) + list(arrays.items()):
        node = root
        parts = path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = v

    def fix(t):
        if isinstance(t, dict):
            t = {k: fix(v) for k, v in t.items()}
            if t and all(k.startswith("#") for k in t):
                return [t[f"#{i}"] for i in range(len(t))]
        return t

    return fix(root)[""] if "" in root else fix(root)


def _put_json(g: h5py.Group, name: str, obj) -> None:
    """JSON text as a (gzip-compressed when large) uint8 dataset; floats as repr: exact."""
    data = np.frombuffer(json.dumps(obj, default=_jsonable).encode(), dtype=np.uint8)
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
        h.update(f"{name}|{d.dtype.str}|{d.shape}|".encode())
        h.update(np.ascontiguousarray(d[()]).tobytes())
    return h.hexdigest()


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------
# Write and read
# ----------------------------------------------------------------------------


def write(path: str, meta: dict, config: dict, history: list, state) -> None:
    """Write a checkpoint to ``path`` atomically (rank 0; ``state`` already gathered).

    TEST ONLY: with ``DISTVMC_TEST_CHECKPOINT_STALL=I`` in the environment the
    write of the checkpoint of iteration I stops halfway (after the data,
    before the digest, ``complete`` and the rename) and sleeps for ten
    minutes, so that a test can kill the process during a write.
    """
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arrays, scalars = flatten(state)
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["iteration"] = int(meta["iteration"])
        _put_json(f, "meta", meta)
        _put_json(f, "config", config)
        _put_json(f, "history", history)
        _put_json(f, "state_json", scalars)
        g = f.create_group("state")
        for k, v in arrays.items():
            d = g.create_dataset(k or "_root", data=np.asarray(v.value if isinstance(v, AllRanks) else v))
            d.attrs["all_ranks"] = int(isinstance(v, AllRanks))
        stall = os.environ.get(STALL_VAR)
        if stall is not None and int(stall) == int(meta["iteration"]):
            f.flush()
            print(f"distvmc: {STALL_VAR}={stall}: stalling in the middle of writing {tmp}", flush=True)
            time.sleep(600)
        f.attrs["sha256"] = _digest(f)
        f.attrs["complete"] = True
    _fsync_path(tmp)
    os.replace(tmp, path)
    try:
        _fsync_path(os.path.dirname(path))
    except OSError:  # some file systems refuse fsync on a directory
        pass


def read(path: str) -> dict:
    """Read and verify a checkpoint: {meta, config, history, state, path}.

    Raises :class:`CheckpointError` saying why the file is unusable.
    """
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
            arrays = {}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    v = obj[()]
                    arrays[name] = AllRanks(v) if obj.attrs.get("all_ranks", 0) else np.asarray(v)

            f["state"].visititems(visit)
            out = {"meta": _get_json(f, "meta"), "config": _get_json(f, "config"),
                   "history": _get_json(f, "history"),
                   "state": unflatten(arrays, _get_json(f, "state_json"))}
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"unreadable ({type(e).__name__}: {' '.join(str(e).split())[:160]})"
                              ) from None
    out["path"] = path
    return out


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
