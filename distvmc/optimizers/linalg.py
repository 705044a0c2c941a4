"""Where SR's linear algebra runs: the host (NumPy) or the device (TensorFlow).

The SR solvers (:mod:`distvmc.optimizers.sr`) are written once against the small
set of operations below and run where the objective left O:

``host``
    O is a NumPy array; products go to NumPy/OpenBLAS. On CPUs this is the
    fastest path: OpenBLAS's float64 GEMM and GEMV beat TensorFlow's here
    (see ``optimizer.linear_algebra`` in the README for the measured ratios).

``device``
    O is a ``tf.Tensor`` on the rank's device (a GPU when there is one) and
    never leaves it: O^T O, O O^T, S v, O^T E and the CG vectors are
    TensorFlow operations there, and the Cholesky factorisation of the dense
    or sample-space system is ``tf.linalg.cholesky`` on rank 0's device (with
    the host fallbacks of :func:`~distvmc.optimizers.sr.solve_shifted` if it
    fails). The host sees scalars (CG's dot products and stop votes) and the
    final direction delta (P numbers: the parameter update and what a
    checkpoint keeps). Collectives: a communicator with ``device_tensors``
    (Horovod: NCCL on GPUs) reduces the device tensors directly; the others
    (mpi4py, single) need host buffers, so the summed arrays are copied
    device -> host -> device around the collective. The sample-space reshard
    (all-to-all) always goes through host buffers.

``operator`` (``optimizer.o_matrix: recompute``, solver ``cg`` only)
    O is never formed: O v and O^T u are forward- and reverse-mode passes of
    log|psi| through the network (:class:`~distvmc.optimizers.jacobian.JacobianProducts`),
    on the device; the CG vectors are device tensors as above. Memory
    O(S x width) instead of 8 S P bytes.

The same Python code runs on CPUs (tested there against the host path) and on
GPUs.
"""

from __future__ import annotations

import numpy as np

from distvmc.lazytf import import_tensorflow_quietly


def is_device(o) -> bool:
    """Whether ``o`` is a TensorFlow tensor (the device path)."""
    return o is not None and not isinstance(o, np.ndarray) and hasattr(o, "device") \
        and hasattr(o, "numpy")


class HostOps:
    """NumPy float64 operations on host arrays."""

    name = "host"

    def array(self, x):
        return np.asarray(x, dtype=np.float64)

    def host(self, x) -> np.ndarray:
        return np.asarray(x)

    def zeros(self, n: int):
        return np.zeros(n)

    def copy(self, x):
        return np.array(x, copy=True)

    def dot(self, a, b) -> float:
        return float(a @ b)

    def norm(self, a) -> float:
        return float(np.linalg.norm(a))

    def all_finite(self, a) -> bool:
        return bool(np.all(np.isfinite(a)))

    def concat(self, parts):
        return np.concatenate(parts)

    def where_positive_inverse(self, d):
        """1/d where d > 0, else 1 (a parameter no sample moves is left unscaled)."""
        return np.where(d > 0.0, 1.0 / np.where(d > 0.0, d, 1.0), 1.0)

    # products with O (S, P)
    def rmatvec(self, o, v):
        """O^T v (P,)."""
        return o.T @ v

    def matvec(self, o, v):
        """O v (S,)."""
        return o @ v

    def s_times(self, o, v):
        """O^T (O v): two GEMVs, each a pass over O from memory (row-blocked variants
        that keep blocks in cache were 1.5-4x slower here)."""
        return o.T @ (o @ v)

    def gram_params(self, o):
        """O^T O (P, P)."""
        return o.T @ o

    def gram_samples(self, o):
        """O O^T (S, S)."""
        return o @ o.T

    def column_squares(self, o):
        """sum_s O_sk^2 (P,)."""
        return np.einsum("ij,ij->j", o, o)

    def columns(self, o, lo: int, hi: int):
        return o[:, lo:hi]

    def stack_rows(self, blocks):
        return np.vstack(blocks)

    # collectives
    def allreduce_many(self, comm, arrays):
        return comm.allreduce_many(arrays)

    def bcast(self, comm, x):
        return comm.bcast(x)

    def solve_shifted(self, a, b, shift):
        from distvmc.optimizers.sr import solve_shifted

        return solve_shifted(a, b, shift)


class DeviceOps(HostOps):
    """TensorFlow float64 operations on device tensors (see the module docstring)."""

    name = "device"

    def __init__(self):
        self.tf = import_tensorflow_quietly()

    def array(self, x):
        return self.tf.convert_to_tensor(np.asarray(x, dtype=np.float64)) \
            if isinstance(x, (np.ndarray, list, tuple, float, int)) else x

    def host(self, x) -> np.ndarray:
        return x.numpy() if hasattr(x, "numpy") else np.asarray(x)

    def zeros(self, n: int):
        return self.tf.zeros([n], dtype=self.tf.float64)

    def copy(self, x):
        return self.tf.identity(x)

    def dot(self, a, b) -> float:
        return float(self.tf.tensordot(a, b, 1))

    def norm(self, a) -> float:
        return float(self.tf.norm(a))

    def all_finite(self, a) -> bool:
        return bool(self.tf.reduce_all(self.tf.math.is_finite(a)))

    def concat(self, parts):
        return self.tf.concat([self.array(p) for p in parts], axis=0)

    def where_positive_inverse(self, d):
        tf = self.tf
        pos = d > 0.0
        return tf.where(pos, 1.0 / tf.where(pos, d, tf.ones_like(d)), tf.ones_like(d))

    def rmatvec(self, o, v):
        return self.tf.linalg.matvec(o, self.array(v), transpose_a=True)

    def matvec(self, o, v):
        return self.tf.linalg.matvec(o, self.array(v))

    def s_times(self, o, v):
        return self.rmatvec(o, self.matvec(o, v))

    def gram_params(self, o):
        return self.tf.linalg.matmul(o, o, transpose_a=True)

    def gram_samples(self, o):
        return self.tf.linalg.matmul(o, o, transpose_b=True)

    def column_squares(self, o):
        return self.tf.reduce_sum(o * o, axis=0)

    def stack_rows(self, blocks):
        return self.tf.concat([self.array(b) for b in blocks], axis=0)

    def allreduce_many(self, comm, arrays):
        """Sums over ranks, as device tensors. Device-capable communicators (Horovod)
        reduce the tensors where they are; the others go through the communicator's
        own (host-buffer) ``allreduce_many``."""
        tf = self.tf
        arrays = [self.array(a) for a in arrays]
        if comm.size == 1:
            return arrays
        if not getattr(comm, "device_tensors", False):
            return [tf.convert_to_tensor(a)
                    for a in comm.allreduce_many([self.host(a) for a in arrays])]
        flat = comm.allreduce(tf.concat([tf.reshape(a, [-1]) for a in arrays], axis=0))
        out, k = [], 0
        for a in arrays:
            n = int(np.prod(a.shape))
            out.append(tf.reshape(flat[k:k + n], a.shape))
            k += n
        return out

    def bcast(self, comm, x):
        if comm.size == 1:
            return self.array(x)
        if getattr(comm, "device_tensors", False):
            return comm.bcast(self.array(x))
        return self.tf.convert_to_tensor(comm.bcast(self.host(x)))

    def solve_shifted(self, a, b, shift):
        """(a + shift 1) x = b by Cholesky on the device; on failure (not positive
        definite, or non-finite) the host fallbacks of ``sr.solve_shifted``."""
        tf = self.tf
        try:
            m = a + shift * tf.eye(int(a.shape[0]), dtype=a.dtype)
            c = tf.linalg.cholesky(m)
            x = tf.linalg.cholesky_solve(c, tf.reshape(self.array(b), [-1, 1]))[:, 0]
            if self.all_finite(x):
                return x, "cholesky"
        except tf.errors.InvalidArgumentError:  # CPU kernels raise when not positive definite
            pass
        x, how = HostOps.solve_shifted(self, self.host(a), self.host(b), shift)
        return self.array(x), how + " (host)"


class OperatorOps(DeviceOps):
    """O as an operator that is never formed (``optimizer.o_matrix: recompute``,
    :class:`~distvmc.optimizers.jacobian.ImplicitO`): O v and O^T u are network passes
    on the device. Only what CG needs exists; the dense and sample-space products
    (and the Jacobi diagonal) would need O itself."""

    name = "operator"

    def rmatvec(self, o, v):
        return o.rmatvec(self.array(v))

    def matvec(self, o, v):
        return o.matvec(self.array(v))

    def s_times(self, o, v):
        return o.rmatvec(o.matvec(self.array(v)))

    def _needs_o(self, what):
        raise ValueError(f"{what} needs the matrix O, which optimizer.o_matrix = recompute "
                         "never forms; use optimizer.solver = cg (cg_precondition none) or "
                         "optimizer.o_matrix = stored")

    def gram_params(self, o):
        self._needs_o("O^T O (solver dense)")

    def gram_samples(self, o):
        self._needs_o("O O^T (solver samplespace)")

    def column_squares(self, o):
        self._needs_o("diag(S) (cg_precondition jacobi)")

    def columns(self, o, lo, hi):
        self._needs_o("the all-to-all of O's columns (solver samplespace)")


def is_operator(o) -> bool:
    """Whether ``o`` is an implicit O (products only)."""
    return hasattr(o, "matvec") and hasattr(o, "rmatvec") and not isinstance(o, np.ndarray)


HOST = HostOps()
_DEVICE: DeviceOps | None = None
_OPERATOR: OperatorOps | None = None


def ops_for(o) -> HostOps:
    """The operations for where ``o`` lives (or what it is)."""
    global _DEVICE, _OPERATOR
    if is_operator(o):
        if _OPERATOR is None:
            _OPERATOR = OperatorOps()
        return _OPERATOR
    if is_device(o):
        if _DEVICE is None:
            _DEVICE = DeviceOps()
        return _DEVICE
    return HOST
