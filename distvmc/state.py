"""What a run's state is: a tree that snapshots, rewinds and checkpoints share.

Every object with state (wavefunction parameters, sampler, preconditioner,
objective, driver, the run of several states) has ``state()`` returning a
tree of dicts, lists, NumPy arrays and plain numbers/strings, and
``set_state(tree)`` putting it back. The same tree serves

* a **snapshot** (in memory, one rank): the start of an iteration, for rewinds;
* a **checkpoint** (on disk, all ranks): :func:`gather` collects it on rank 0,
  :mod:`distvmc.checkpoint` writes and reads it, every rank restores it.

Leaves that differ between ranks (walkers, random-stream positions) are
wrapped in :class:`PerRank`. Gathered, they become :class:`AllRanks` holding
every rank's value stacked along a first axis of length R (ranks); a restore
on the same number of ranks gives each rank exactly its own value back
(:func:`local`), a restore on another number of ranks is the owner's choice
(:func:`distvmc.sampler.walkers_for_rank` deals walkers out).

This module imports neither TensorFlow nor MPI.
"""

from __future__ import annotations

import copy

import numpy as np


class PerRank:
    """A state leaf whose value differs between ranks (a NumPy array or an integer)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"PerRank({self.value!r})"


class AllRanks:
    """Every rank's value of a :class:`PerRank` leaf, stacked: shape (R, ...)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = np.asarray(value)

    @property
    def ranks(self) -> int:
        return int(self.value.shape[0])

    def __repr__(self):
        return f"AllRanks(shape={self.value.shape})"


def local(leaf, comm=None):
    """This rank's value of a leaf (plain, :class:`PerRank`, or :class:`AllRanks`
    gathered from the same number of ranks)."""
    if isinstance(leaf, PerRank):
        return leaf.value
    if isinstance(leaf, AllRanks):
        rank = comm.rank if comm is not None else 0
        if comm is not None and leaf.ranks != comm.size:
            raise ValueError(f"state of {leaf.ranks} rank(s) restored on {comm.size}: "
                             "this leaf cannot be redistributed")
        return leaf.value[rank]
    return leaf


def copy_tree(tree):
    """A deep copy (arrays copied), so a snapshot never aliases live state."""
    return copy.deepcopy(tree)


def _map(tree, fn):
    if isinstance(tree, dict):
        return {k: _map(v, fn) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map(v, fn) for v in tree]
    return fn(tree)


def _leaves(tree, out):
    if isinstance(tree, dict):
        for v in tree.values():
            _leaves(v, out)
    elif isinstance(tree, list):
        for v in tree:
            _leaves(v, out)
    elif isinstance(tree, PerRank):
        out.append(tree)
    return out


def gather(tree, comm):
    """Every :class:`PerRank` leaf becomes :class:`AllRanks` (collective; same on
    every rank). One allreduce of a zero-padded buffer in which each rank fills
    its own slot (exact: x + 0 = x), so this works on every communicator. Every
    rank must hold leaves of the same shapes."""
    leaves = _leaves(tree, [])
    if not leaves:
        return copy_tree(tree)
    arrays = [np.asarray(leaf.value) for leaf in leaves]
    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays])
    buf = np.zeros((comm.size, flat.size))
    buf[comm.rank] = flat
    total = comm.allreduce(buf) if comm.size > 1 else buf
    gathered, k = {}, 0
    for leaf, a in zip(leaves, arrays):
        gathered[id(leaf)] = AllRanks(total[:, k:k + a.size].reshape((comm.size,) + a.shape)
                                      .astype(a.dtype))
        k += a.size

    def fn(v):
        return gathered[id(v)] if isinstance(v, PerRank) else copy.deepcopy(v)

    return _map(tree, fn)
