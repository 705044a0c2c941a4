"""One process, no launcher: collectives are identities. Imports no MPI."""

from __future__ import annotations

import os

import numpy as np

from distvmc.comm.base import Communicator


class SingleProcess(Communicator):
    name = "single"
    rank = 0
    size = 1
    local_rank = 0

    def allreduce(self, x):
        return np.asarray(x, dtype=np.float64)

    def bcast(self, x):
        return x

    def allgather(self, x):
        return np.array(x, dtype=np.float64, copy=True)

    def alltoall(self, blocks):
        (block,) = blocks
        return [np.array(block, dtype=np.float64, copy=True)]

    def bcast_object(self, obj):
        return obj

    def barrier(self):
        pass

    def abort(self, code: int = 1):
        os._exit(code)
