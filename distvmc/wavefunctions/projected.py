"""A trial state with lower states subtracted: psi = phi - sum_j c_j psi_j.

Used by the sampling-mode excited-state search (:mod:`distvmc.excited`). phi is
a fresh :class:`~distvmc.wavefunctions.Wavefunction` (trainable), the psi_j are
the states already found (frozen: not parameters), and the c_j are trainable
scalars. Starting c_j at the Monte Carlo projection coefficients
<psi_j|phi>/<psi_j|psi_j> = <phi/psi_j>_{|psi_j|^2} makes the trial state
(nearly) orthogonal to the lower states from the first iteration; the overlap
penalty keeps it so, and the c_j give the optimizer a direct handle on each
overlap. Without this a nodeless initial phi sits at psi_0, where the
penalized energy E + lambda S^2 is stationary.

log|psi| is evaluated stably: with m = max(log|phi|, log|psi_j|),
psi = e^m (sign_phi e^{log|phi| - m} - sum_j c_j sign_j e^{log|psi_j| - m}).
"""

from __future__ import annotations

import tensorflow as tf

from distvmc.wavefunctions import Wavefunction


class ProjectedWavefunction(Wavefunction):
    """psi(x) = phi(x) - sum_j c_j psi_j(x); parameters: phi's, then c (shape (J,))."""

    _TF_MODULE_IGNORED_PROPERTIES = frozenset(
        Wavefunction._TF_MODULE_IGNORED_PROPERTIES | {"_lower"})

    def __init__(self, trial: Wavefunction, lower: list, coefficients, name="projected"):
        super().__init__(trial.factors, trial.config_shape, name=name)
        self.trial = trial
        self._lower = tuple(lower)  # frozen states, not tracked as parameters
        dtype = trial.parameters[0].dtype
        self.c = tf.Variable(tf.constant(coefficients, dtype=dtype), name="projection")

    @property
    def parameters(self) -> list[tf.Variable]:
        return list(self.trial.trainable_variables) + [self.c]

    def _value(self, x):
        """(psi e^{-m}, m): the scaled amplitude (W,) and the log scale m (W,)."""
        us = [self.trial.log_abs(x)] + [w.log_abs(x) for w in self._lower]
        ss = [self.trial.sign(x)] + [w.sign(x) for w in self._lower]
        m = tf.stop_gradient(tf.reduce_max(tf.stack(us), axis=0))
        val = ss[0] * tf.exp(us[0] - m)
        for j, (u, s) in enumerate(zip(us[1:], ss[1:])):
            val = val - self.c[j] * s * tf.exp(u - m)
        return val, m

    def log_abs(self, x):
        """x: (W, N, D) -> (W,)."""
        val, m = self._value(x)
        return tf.math.log(tf.abs(val)) + m

    def sign(self, x):
        """x: (W, N, D) -> (W,)."""
        return tf.sign(tf.stop_gradient(self._value(x)[0]))  # see SignedMLP.sign
