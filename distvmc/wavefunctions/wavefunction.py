"""The wavefunction: psi = prod_k factor_k, returned as (sign, log|psi|).

``Wavefunction(x)`` with x of shape (walkers, N, D) returns ``(sign, log_abs)``,
each of shape (walkers,), as FermiNet's networks do: log|psi| is the sum of the
factors' logs and sign(psi) the product of their signs. ``log_abs(x)`` and
``sign(x)`` return one of the two (the Laplacian and the sampler need only
log|psi|).

Factors are :class:`~distvmc.wavefunctions.base.Factor` objects
(``signed_log(x)``), or legacy plug-ins: any object (typically a ``tf.Module``)
with ``log_abs(x)`` and optionally ``sign(x)``; its tf.Variables are parameters
too.
"""

from __future__ import annotations

import numpy as np

from distvmc.wavefunctions.base import Factor, Module


def factor_signed_log(f, x):
    """(sign or None, log_abs) of one factor, new-style or legacy."""
    if isinstance(f, Factor) or hasattr(f, "signed_log"):
        return f.signed_log(x)
    return (f.sign(x) if hasattr(f, "sign") else None), f.log_abs(x)


def factor_log_abs(f, x):
    """log|factor| of one factor, shape (W,)."""
    if isinstance(f, Factor) or hasattr(f, "signed_log"):
        return f.signed_log(x)[1]
    return f.log_abs(x)


def positive(x):
    """A sign of +1 for every walker, shape (W,).

    Not tf.ones(tf.shape(x)...) or ones_like: both break under nested forward accumulators.
    """
    return 0.0 * x[:, 0, 0] + 1.0


class Wavefunction(Module):
    """psi = prod_k factor_k; ``__call__(x) -> (sign, log|psi|)``, each of shape (walkers,).

    Args:
      factors: the factors, in order.
      config_shape: (N, D), the shape of one configuration.
    """

    def __init__(self, factors: list, config_shape: tuple[int, int], name: str = "wavefunction"):
        self.name = name
        self.factors = list(factors)
        self.config_shape = tuple(config_shape)  # (N, D)

    def __call__(self, x):
        """x: (W, N, D) -> (sign (W,), log|psi| (W,)).

        The sign is computed from stop_gradient values (sign has derivative 0, and a
        tangent reaching tf.sign breaks nested forward accumulators).
        """
        sign, log_abs = None, None
        for f in self.factors:
            s, u = factor_signed_log(f, x)
            log_abs = u if log_abs is None else log_abs + u
            if s is not None:
                sign = s if sign is None else sign * s
        return (positive(x) if sign is None else sign), log_abs

    def log_abs(self, x):
        """log|psi| for x of shape (W, N, D); returns (W,)."""
        out = factor_log_abs(self.factors[0], x)
        for f in self.factors[1:]:
            out = out + factor_log_abs(f, x)
        return out

    def sign(self, x):
        """Sign of psi, shape (W,): the product of the factors' signs."""
        return self(x)[0]

    @property
    def parameters(self) -> list:
        """Trainable variables in a fixed order (the order of the flat parameter vector)."""
        return self.trainable_variables

    @property
    def n_parameters(self) -> int:
        return int(sum(int(np.prod(v.shape)) for v in self.parameters))

    def get_flat(self) -> np.ndarray:
        """All trainable parameters as one float64 vector, shape (P,)."""
        params = self.parameters
        if not params:
            return np.zeros(0)
        return np.concatenate([v.numpy().ravel().astype(np.float64) for v in params])

    def set_flat(self, theta: np.ndarray) -> None:
        """Assign all trainable parameters from one vector of shape (P,)."""
        k = 0
        for v in self.parameters:
            n = int(np.prod(v.shape))
            v.assign(np.asarray(theta[k:k + n]).reshape(v.shape).astype(v.dtype.as_numpy_dtype))
            k += n

    def named_parameters(self) -> dict[str, np.ndarray]:
        """Parameter arrays keyed by a stable, unique name (for files)."""
        return {f"{i:03d}_{v.name.replace('/', '.').split(':')[0]}": v.numpy()
                for i, v in enumerate(self.parameters)}


__all__ = ["Wavefunction", "factor_signed_log", "factor_log_abs", "positive"]
