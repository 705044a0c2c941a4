"""Horovod communicator (``horovod.tensorflow``).

Launch the ranks with ``mpirun`` (or ``horovodrun`` with an Open MPI 4 /
Gloo build), e.g.::

    mpirun -np 2 --oversubscribe --allow-run-as-root --bind-to none \\
        distvmc run CONFIG distributed.backend=horovod

Collectives are Horovod ops on TensorFlow tensors: ``allreduce`` is
``hvd.allreduce(op=hvd.Sum)`` (NCCL on GPUs, so a ``tf.Tensor`` that lives
on a GPU is reduced there and returned as a tensor on the device), ``bcast``
is ``hvd.broadcast`` from rank 0. NumPy inputs come back as NumPy float64
arrays, as the :class:`~distvmc.comm.base.Communicator` interface promises.

Horovod 0.28.1 (the last release) builds against TensorFlow <= 2.18 only:
``launch/setup_horovod.sh`` builds and caches it.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from distvmc.comm.base import Communicator, split_flat


class HorovodComm(Communicator):
    """All ranks of ``hvd.init()``."""

    name = "horovod"
    device_tensors = True

    def __init__(self):
        import horovod.tensorflow as hvd
        import tensorflow as tf

        hvd.init()
        self._hvd = hvd
        self._tf = tf
        self.rank = hvd.rank()
        self.size = hvd.size()
        self.local_rank = hvd.local_rank()
        self.local_size = hvd.local_size()

    def allreduce(self, x):
        """Sum over ranks. A ``tf.Tensor`` in gives a ``tf.Tensor`` out (on its
        device); anything else gives a float64 NumPy array."""
        tf = self._tf
        if isinstance(x, tf.Tensor):
            return self._hvd.allreduce(x, op=self._hvd.Sum, name="distvmc_allreduce")
        arr = np.ascontiguousarray(x, dtype=np.float64)
        if self.size == 1:
            return arr.copy().reshape(np.shape(x))
        out = self._hvd.allreduce(tf.constant(arr), op=self._hvd.Sum, name="distvmc_allreduce")
        return out.numpy().reshape(np.shape(x))

    def bcast(self, x):
        tf = self._tf
        if isinstance(x, tf.Tensor):
            return self._hvd.broadcast(x, root_rank=0, name="distvmc_bcast")
        arr = np.asarray(x)
        if self.size == 1:
            return arr.copy()
        out = self._hvd.broadcast(tf.constant(np.ascontiguousarray(arr)), root_rank=0,
                                  name="distvmc_bcast")
        return out.numpy().reshape(arr.shape)

    def allgather(self, x):
        arr = np.ascontiguousarray(x, dtype=np.float64)
        if self.size == 1:
            return arr.copy()
        out = self._hvd.allgather(self._tf.constant(arr), name="distvmc_allgather")
        return out.numpy()

    def alltoall(self, blocks):
        if len(blocks) != self.size:
            raise ValueError(f"alltoall needs {self.size} blocks, got {len(blocks)}")
        blocks = [np.ascontiguousarray(b, dtype=np.float64) for b in blocks]
        if self.size == 1:
            return [blocks[0].copy()]
        shapes = self._hvd.alltoall(
            self._tf.constant(np.array([list(b.shape) + [0] * (3 - b.ndim) + [b.ndim]
                                        for b in blocks], dtype=np.int64)),
            name="distvmc_alltoall_shapes")
        shapes = shapes[0] if isinstance(shapes, (tuple, list)) else shapes
        shapes = [tuple(int(v) for v in row[:int(row[3])]) for row in shapes.numpy()]
        send = np.concatenate([b.ravel() for b in blocks])
        out = self._hvd.alltoall(self._tf.constant(send),
                                 splits=self._tf.constant([b.size for b in blocks],
                                                          dtype=self._tf.int32),
                                 name="distvmc_alltoall")
        out = (out[0] if isinstance(out, (tuple, list)) else out).numpy()
        return split_flat(out, shapes)

    def bcast_object(self, obj):
        if self.size == 1:
            return obj
        return self._hvd.broadcast_object(obj, root_rank=0, name="distvmc_bcast_object")

    def barrier(self) -> None:
        if self.size > 1:
            self.allreduce(np.zeros(1))

    def abort(self, code: int = 1) -> None:
        """End every rank now.

        With Horovod's MPI controller, ``MPI_Abort`` through mpi4py (when it is
        installed) makes the launcher kill every rank at once. Otherwise this
        process exits with ``code`` without clean-up; the launcher (mpirun,
        horovodrun, srun) then ends the other ranks because one exited non-zero.
        """
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            if self._hvd.mpi_enabled():
                from mpi4py import MPI

                MPI.COMM_WORLD.Abort(code)
        except Exception:  # noqa: BLE001 - fall through to the hard exit
            pass
        os._exit(code)
