"""The communicator interface."""

from __future__ import annotations

import numpy as np


class Communicator:
    """Collective operations over ranks. All arrays are NumPy float64."""

    name = "base"
    # whether allreduce/bcast take tf.Tensors and return them on their device (Horovod:
    # NCCL on GPUs); without it the device path copies through host buffers
    device_tensors = False
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce(self, x: np.ndarray) -> np.ndarray:
        """Elementwise sum of ``x`` over ranks (same shape on every rank)."""
        raise NotImplementedError

    def allreduce_many(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Sum several arrays over ranks in as few collectives as practical."""
        if self.size == 1:
            return [np.asarray(a, dtype=np.float64) for a in arrays]
        flat = self.allreduce(np.concatenate([np.ravel(a).astype(np.float64) for a in arrays]))
        return split_flat(flat, [np.shape(a) for a in arrays])

    def bcast(self, x: np.ndarray) -> np.ndarray:
        """Rank 0's ``x`` on every rank (same shape and dtype on every rank)."""
        raise NotImplementedError

    def allgather(self, x: np.ndarray) -> np.ndarray:
        """Every rank's float64 ``x`` concatenated along axis 0, in rank order.

        The first dimension may differ between ranks; the others must agree.
        Shape (sum_r x_r.shape[0], ...), identical (bitwise) on every rank.
        """
        raise NotImplementedError

    def alltoall(self, blocks: list[np.ndarray]) -> list[np.ndarray]:
        """Personalized exchange: ``blocks[s]`` (float64, any shape) goes to rank s.

        Returns the R blocks this rank received, ``out[r]`` from rank r, with
        the shapes the senders gave them. Sends sum_s blocks[s].size numbers.
        """
        raise NotImplementedError

    def bcast_object(self, obj):
        """Rank 0's picklable object on every rank."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now."""
        raise NotImplementedError


def split_flat(flat: np.ndarray, shapes: list[tuple]) -> list[np.ndarray]:
    """Cut a flat array into consecutive pieces of the given shapes."""
    out, k = [], 0
    for shp in shapes:
        n = int(np.prod(shp))
        out.append(flat[k:k + n].reshape(shp))
        k += n
    return out
