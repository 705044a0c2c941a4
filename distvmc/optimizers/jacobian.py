"""Per-sample log-derivatives O_k(x) = d log|psi(x)| / d theta_k."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def wavefunction_shape(wavefunction) -> tuple[int, int]:
    """(N, D) of the configurations a wavefunction takes."""
    return wavefunction.config_shape


CHUNK_NUMBERS = 1 << 25  # at most 32M numbers (256 MB in float64) of O per compiled call


class LogDerivatives:
    """Compiled, chunked O matrix of a wavefunction.

    ``__call__(x)`` with x of shape (S, N, D) returns O of shape (S, P) as a
    float64 NumPy array, computing at most ``chunk_size`` rows (and at most
    2^25 numbers) at a time. The
    Jacobian is vectorized over samples (``tf.vectorized_map``) and the function
    is traced once, not per iteration.
    """

    def __init__(self, wavefunction, chunk_size: int = 16384):
        self.wf = wavefunction
        self.chunk_size = chunk_size
        params = wavefunction.parameters
        self.n_parameters = wavefunction.n_parameters

        spec = tf.TensorSpec([None] + list(wavefunction_shape(wavefunction)), params[0].dtype)

        # vectorized_map over samples of a per-sample gradient: the batched backward
        # pass costs O(S P). (tape.jacobian of the batched log|psi| costs O(S^2 P),
        # because each row's backward pass runs over the whole batch.)
        @tf.function(input_signature=[spec])
        def _jac(x):
            def one(xi):
                with tf.GradientTape() as tape:
                    u = wavefunction.log_abs(xi[None])[0]
                g = tape.gradient(u, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return tf.concat([tf.reshape(gk, [-1]) for gk in g], axis=0)

            return tf.vectorized_map(one, x)

        self._jac = _jac

    def __call__(self, x) -> np.ndarray:
        """O (S, P) as a float64 NumPy array that this call owns (writeable, C order).

        Rows are computed ``chunk_size`` at a time straight into the result, so the
        peak memory is O itself plus one chunk (not two copies of O)."""
        x = tf.convert_to_tensor(x)
        s = int(x.shape[0])
        out = np.empty((s, self.n_parameters), dtype=np.float64)
        rows = max(1, min(self.chunk_size, CHUNK_NUMBERS // max(self.n_parameters, 1)))
        for i in range(0, s, rows):
            out[i:i + rows] = self._jac(x[i:i + rows]).numpy()
        return out
