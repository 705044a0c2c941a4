"""Wavefunctions: log|psi(x; theta)| as a sum of factors' logs.

Every factor is a ``tf.Module`` with explicit float64 (or float32) variables
and a method ``log_abs(x)`` taking positions of shape (walkers, N, D) and
returning log|factor| of shape (walkers,). :class:`Wavefunction` multiplies
factors (adds their logs); ``sign(x)`` is +1 for the bosonic and nodeless
states built here and is the hook where determinants will return their sign.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from distvmc.config import Section
from distvmc.systems import System
from distvmc.wavefunctions.envelopes import ExpEnvelope, GaussianEnvelope
from distvmc.wavefunctions.jastrow import PadeJastrow
from distvmc.wavefunctions.mlp import MLP, DeepSets
from distvmc.wavefunctions.signed import SignedMLP


class Wavefunction(tf.Module):
    """psi = prod_k factor_k; ``log_abs`` returns sum_k log|factor_k|, shape (walkers,)."""

    def __init__(self, factors: list[tf.Module], config_shape: tuple[int, int],
                 name: str = "wavefunction"):
        super().__init__(name=name)
        self.factors = list(factors)
        self.config_shape = tuple(config_shape)  # (N, D)

    def log_abs(self, x: tf.Tensor) -> tf.Tensor:
        """log|psi| for x of shape (walkers, N, D); returns (walkers,)."""
        out = self.factors[0].log_abs(x)
        for f in self.factors[1:]:
            out = out + f.log_abs(x)
        return out

    def sign(self, x: tf.Tensor) -> tf.Tensor:
        """Sign of psi, shape (walkers,): the product of the factors' signs
        (factors without a ``sign`` method, all but signed MLPs, are positive)."""
        s = None
        for f in self.factors:
            if hasattr(f, "sign"):
                s = f.sign(x) if s is None else s * f.sign(x)
        # not tf.ones(tf.shape(x)...) or ones_like: both break under nested forward accumulators
        return s if s is not None else 0.0 * x[:, 0, 0] + 1.0

    @property
    def parameters(self) -> list[tf.Variable]:
        """Trainable variables in a fixed order (the order of the flat parameter vector)."""
        return list(self.trainable_variables)

    @property
    def n_parameters(self) -> int:
        return int(sum(int(np.prod(v.shape)) for v in self.parameters))

    def get_flat(self) -> np.ndarray:
        """All trainable parameters as one float64 vector, shape (P,)."""
        if not self.parameters:
            return np.zeros(0)
        return np.concatenate([v.numpy().ravel().astype(np.float64) for v in self.parameters])

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


def build_wavefunction(cfg: Section, system: System, seed: int = 0) -> Wavefunction:
    """The wavefunction that ``wavefunction.factors`` describes, initialised from ``seed``."""
    dtype = tf.float64 if cfg.precision == "float64" else tf.float32
    rng = np.random.default_rng([seed, 7919])  # same on every rank
    factors = []
    for i, f in enumerate(cfg.wavefunction.factors):
        name = f"f{i}_{f.type}"
        if f.type == "mlp":
            factors.append((SignedMLP if f.signed else MLP)(system, f, rng, dtype, name=name))
        elif f.type == "deepsets":
            factors.append(DeepSets(system, f, rng, dtype, name=name))
        elif f.type == "jastrow":
            factors.append(PadeJastrow(system, f, dtype, name=name))
        elif f.type == "gaussian_envelope":
            factors.append(GaussianEnvelope(system, f, dtype, name=name))
        elif f.type == "exp_envelope":
            factors.append(ExpEnvelope(system, f, dtype, name=name))
        else:  # validation prevents this
            raise ValueError(f"unknown factor type {f.type!r}")
    return Wavefunction(factors, (system.particles, system.dim))
