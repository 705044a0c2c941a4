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

from distvmc.lazytf import tf
from distvmc.wavefunctions.capture import per_sample
from distvmc.wavefunctions.wavefunction import Wavefunction


class ProjectedWavefunction(Wavefunction):
    """psi(x) = phi(x) - sum_j c_j psi_j(x); parameters: phi's, then c (shape (J,))."""

    _untracked = ("_lower",)  # frozen states, not parameters

    def __init__(self, trial: Wavefunction, lower: list, coefficients, name="projected"):
        super().__init__(trial.factors, trial.config_shape, name=name)
        self.trial = trial
        self._lower = tuple(lower)
        dtype = trial.parameters[0].dtype
        self.c = tf.Variable(tf.constant(coefficients, dtype=dtype), name="projection")

    @property
    def parameters(self) -> list:
        return list(self.trial.parameters) + [self.c]

    @property
    def variables(self) -> list:
        return list(self.trial.variables) + [self.c]

    def _value(self, x):
        """(psi e^{-m}, m): the scaled amplitude (W,) and the log scale m (W,)."""
        parts = [self.trial(x)] + [w(x) for w in self._lower]
        m = tf.stop_gradient(tf.reduce_max(tf.stack([u for _, u in parts]), axis=0))
        s0, u0 = parts[0]
        val = s0 * tf.exp(u0 - m)
        c = per_sample(self.c, x)  # (J,), or (W, J) for O
        for j, (s, u) in enumerate(parts[1:]):
            val = val - c[..., j] * s * tf.exp(u - m)
        return val, m

    def __call__(self, x):
        """x: (W, N, D) -> (sign (W,), log|psi| (W,))."""
        val, m = self._value(x)
        return tf.sign(tf.stop_gradient(val)), tf.math.log(tf.abs(val)) + m

    def log_abs(self, x):
        """x: (W, N, D) -> (W,)."""
        return self(x)[1]

    def forward_parts(self) -> list:
        """The wavefunctions combined here (for the forward Laplacian's fallback notes)."""
        return [self.trial, *self._lower]

    def forward_laplacian(self, x):
        """log|psi| as a FwdLap (:mod:`distvmc.forward_laplacian`): value (W, N, D) -> (W,).

        Each part's log|psi_j| by its own rules, psi e^{-m} as a linear combination of
        exp(log|psi_j| - m) (m held constant, as in :meth:`_value`), then log|.|."""
        from distvmc import forward_laplacian as fl

        parts = [self.trial, *self._lower]
        logs = [fl.log_abs_of(w, x) for w in parts]
        signs = [w.sign(x.value) for w in parts]
        m = tf.stop_gradient(tf.reduce_max(tf.stack([u.value for u in logs]), axis=0))
        val = fl.scale(fl.exp(fl.shift(logs[0], -m)), signs[0])
        for j, (s, u) in enumerate(zip(signs[1:], logs[1:])):
            val = fl.sub(val, fl.scale(fl.exp(fl.shift(u, -m)), self.c[j] * s))
        return fl.shift(fl.log_abs(val), m)

    def sign(self, x):
        """x: (W, N, D) -> (W,)."""
        return self(x)[0]
