"""Parameter updates from an explicit gradient and metric.

The sampling driver's optimizers (:mod:`.sr`, :mod:`.adam`) build their
gradient from local energies. Grid mode (:mod:`distvmc.grid`) and the
penalized excited-state search (:mod:`distvmc.excited`) build the gradient
themselves (a quadrature energy differentiated by TensorFlow, or an energy
plus overlap penalty), so they hand this class the half-gradient F = (1/2)
dL/dtheta and, for SR, the metric S of the normalized state:

    sr:    (S + eps 1) delta = F   (``solve_shifted``), theta <- theta - lr delta
    adam:  Adam on g = 2 F,        theta <- theta - lr m_hat / (sqrt(v_hat) + eps)

Both read the ``optimizer`` config section (lr, lr_decay, shift,
max_update_norm, beta1, beta2, epsilon).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from distvmc.optimizers import learning_rate
from distvmc.optimizers.sr import solve_shifted


@tf.function(reduce_retracing=True)
def _tf_cholesky_solve(a, b, shift):
    m = a + shift * tf.eye(tf.shape(a)[0], dtype=a.dtype)
    return tf.linalg.cholesky_solve(tf.linalg.cholesky(m), b[:, None])[:, 0]


def solve_metric(a, b, shift: float) -> tuple[np.ndarray, str]:
    """Solve (a + shift 1) x = b: TensorFlow's Cholesky first, else :func:`solve_shifted`.

    TensorFlow's Cholesky runs in its own thread pool; NumPy's OpenBLAS with two
    threads was measured 20-50x slower for P ~ 300 on a loaded 2-core machine.
    """
    try:
        x = _tf_cholesky_solve(tf.cast(tf.convert_to_tensor(a), tf.float64),
                               tf.cast(tf.convert_to_tensor(b), tf.float64),
                               tf.constant(float(shift), tf.float64)).numpy()
        if np.all(np.isfinite(x)):
            return x, "cholesky"
    except tf.errors.InvalidArgumentError:
        pass
    return solve_shifted(np.asarray(a, np.float64), np.asarray(b, np.float64), shift)


class ParameterUpdate:
    """theta <- theta - step applied in TensorFlow, without a NumPy round trip per variable."""

    def __init__(self, variables):
        self.variables = list(variables)
        self.sizes = [int(np.prod(v.shape)) for v in self.variables]

        @tf.function
        def _sub(step):
            for v, part in zip(self.variables, tf.split(step, self.sizes)):
                v.assign_sub(tf.reshape(part, v.shape))

        self._sub = _sub

    def __call__(self, step: np.ndarray) -> None:
        self._sub(tf.constant(step, dtype=self.variables[0].dtype))


class DirectStep:
    """Optimizer state for one parameter vector of size ``n_parameters``."""

    def __init__(self, cfg, n_parameters: int):
        self.cfg = cfg
        self.type = cfg.type
        self.m = np.zeros(n_parameters)
        self.v = np.zeros(n_parameters)
        self.t = 0

    @property
    def needs_metric(self) -> bool:
        return self.type == "sr"

    def update(self, half_grad: np.ndarray, metric=None, lr_scale: float = 1.0) -> tuple[np.ndarray, dict]:
        """The step to subtract from theta, shape (P,), and info (solve method, norm).

        Args:
          half_grad: F = (1/2) dL/dtheta, shape (P,).
          metric: S, shape (P, P) (NumPy or tensor); required for SR.
          lr_scale: multiplies the scheduled learning rate (grid mode's step control).
        """
        c = self.cfg
        lr = learning_rate(c, self.t) * lr_scale
        self.t += 1
        if self.type == "sr":
            delta, how = solve_metric(metric, half_grad, c.shift)
        else:
            g = 2.0 * half_grad
            self.m = c.beta1 * self.m + (1 - c.beta1) * g
            self.v = c.beta2 * self.v + (1 - c.beta2) * g * g
            mhat = self.m / (1 - c.beta1 ** self.t)
            vhat = self.v / (1 - c.beta2 ** self.t)
            delta, how = mhat / (np.sqrt(vhat) + c.epsilon), "adam"
        step = lr * delta
        info = {"solve": how, "lr": lr}
        norm = float(np.linalg.norm(step))
        if c.max_update_norm is not None and norm > c.max_update_norm:
            step *= c.max_update_norm / norm
            info["clipped"] = True
        if not np.all(np.isfinite(step)):
            info["skipped"] = "non-finite update"
            return np.zeros_like(step), info
        info["update_norm"] = float(np.linalg.norm(step))
        return step, info
