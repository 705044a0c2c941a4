"""MPI communicator (mpi4py): buffer-based collectives on float64 NumPy arrays.

Launch with any MPI launcher, e.g. (as root on a small machine)::

    mpirun -np 2 --oversubscribe --allow-run-as-root distvmc run CONFIG distributed.backend=mpi

``Allreduce``/``Bcast``/``Allgatherv``/``Alltoallv`` use mpi4py's
upper-case, buffer-based calls on contiguous arrays (no pickling of data;
only the few block shapes of an all-to-all are pickled). MPI counts are
32-bit: one message holds fewer than 2^31 numbers. The local rank (position among the ranks on
the same node, used to pick a GPU) comes from a shared-memory split of
``COMM_WORLD``. ``abort`` is ``MPI_Abort`` on ``COMM_WORLD``: the launcher
kills every rank, including ranks blocked in a collective.
"""

from __future__ import annotations

import numpy as np

from distvmc.comm.base import Communicator


class MPIComm(Communicator):
    """``COMM_WORLD`` of mpi4py.

    Attributes:
      rank, size: position in and size of COMM_WORLD.
      local_rank, local_size: position in and size of this node's ranks.
    """

    name = "mpi"

    def __init__(self):
        from mpi4py import MPI  # initializes MPI (MPI_Init_thread) on first import

        self._MPI = MPI
        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        node = self._comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = node.Get_rank()
        self.local_size = node.Get_size()
        node.Free()

    def allreduce(self, x) -> np.ndarray:
        send = np.ascontiguousarray(x, dtype=np.float64)
        if self.size == 1:
            return send.copy().reshape(np.shape(x))
        recv = np.empty_like(send)
        self._comm.Allreduce(send, recv, op=self._MPI.SUM)
        return recv.reshape(np.shape(x))

    def bcast(self, x) -> np.ndarray:
        arr = np.asarray(x)
        buf = np.array(arr, copy=True, order="C")  # writable, contiguous, own memory
        if self.size > 1:
            self._comm.Bcast(buf, root=0)
        return buf.reshape(arr.shape)

    def allgather(self, x) -> np.ndarray:
        send = np.ascontiguousarray(x, dtype=np.float64)
        if self.size == 1:
            return send.copy()
        rows = self._comm.allgather(int(send.shape[0]) if send.ndim else 1)
        tail = send.shape[1:]
        width = int(np.prod(tail)) if tail else 1
        counts = [r * width for r in rows]
        recv = np.empty((sum(rows),) + tail, dtype=np.float64)
        self._comm.Allgatherv(send, [recv, counts, self._MPI.DOUBLE])
        return recv

    def alltoall(self, blocks) -> list[np.ndarray]:
        if len(blocks) != self.size:
            raise ValueError(f"alltoall needs {self.size} blocks, got {len(blocks)}")
        blocks = [np.ascontiguousarray(b, dtype=np.float64) for b in blocks]
        if self.size == 1:
            return [blocks[0].copy()]
        shapes = self._comm.alltoall([b.shape for b in blocks])  # small, pickled
        scount = [b.size for b in blocks]
        rcount = [int(np.prod(s)) for s in shapes]
        sdisp = np.concatenate([[0], np.cumsum(scount)[:-1]]).astype(int).tolist()
        rdisp = np.concatenate([[0], np.cumsum(rcount)[:-1]]).astype(int).tolist()
        send = np.concatenate([b.ravel() for b in blocks])
        recv = np.empty(sum(rcount), dtype=np.float64)
        self._comm.Alltoallv([send, scount, sdisp, self._MPI.DOUBLE],
                             [recv, rcount, rdisp, self._MPI.DOUBLE])
        return [recv[d:d + c].reshape(s) for d, c, s in zip(rdisp, rcount, shapes)]

    def bcast_object(self, obj):
        return self._comm.bcast(obj, root=0)

    def barrier(self) -> None:
        self._comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self._comm.Abort(code)
