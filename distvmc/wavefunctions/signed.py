"""A signed network factor: the MLP's output f is the amplitude, not its logarithm.

With ``signed: true`` an ``mlp`` factor contributes log|f(x)| to log|psi| and
sign(f(x)) to the sign of psi, so psi can change sign (nodes): the factor that
excited states need. Everything else (inputs, permutation sum, initialisation)
is the plain :class:`~distvmc.wavefunctions.mlp.MLP`; with ``symmetrize`` the
network outputs are summed over permutations (a symmetric amplitude).

The amplitude is f = 1 + network(x): with the small initial last layer
(``output_scale``) it starts nodeless. A ground-state search therefore never
starts in another symmetry sector (a random signed network with a node can sit
for hundreds of iterations at the odd eigenstate, a stationary point of the
energy), and excited states get their nodes from the orthogonality to the
states below (:mod:`distvmc.excited`), not from the luck of the initialisation.

The hidden layers' biases start uniform in [-1, 1] instead of 0: with zero
biases a tanh network of the coordinates is an exactly odd function of x, so
1 + network(x) would contain no even function besides the constant, and the
search for an even excited state (the oscillator's n = 2) would start without
any overlap with it.
"""

from __future__ import annotations

from distvmc.lazytf import tf
from distvmc.wavefunctions.mlp import MLP


class SignedMLP(MLP):
    """f(x) = 1 + MLP(features(x)); signed_log = (sign(f), log|f|), each of shape (walkers,)."""

    def __init__(self, system, cfg, rng, dtype, name="signed_mlp"):
        super().__init__(system, cfg, rng, dtype, name=name)
        for layer in self.net.layers[:-1]:
            layer.b.assign(rng.uniform(-1.0, 1.0, size=layer.b.shape))

    def amplitude(self, x):
        """f(x) for x of shape (W, N, D); returns (W,)."""
        return 1.0 + self.network(x)

    def signed_log(self, x):
        """x: (W, N, D) -> (sign in {-1, 0, +1} (W,), log|f| (W,), -inf exactly on a node)."""
        f = self.amplitude(x)
        # stop_gradient: sign has derivative 0, and a tangent reaching tf.sign breaks
        # nested forward accumulators (the fwd_over_fwd Laplacian) in TF 2.21
        return tf.sign(tf.stop_gradient(f)), tf.math.log(tf.abs(f))

    def forward_laplacian(self, x):
        """log|f| as a FwdLap (:mod:`distvmc.forward_laplacian`): value (W, N, D) -> (W,).

        grad log|f| = grad f / f, Laplacian log|f| = (Laplacian f) / f - |grad f / f|^2."""
        from distvmc import forward_laplacian as fl

        return fl.log_abs(fl.shift(self.network_forward(x), 1.0))

    def sign(self, x):
        """x: (W, N, D) -> (W,) in {-1, 0, +1}."""
        return self.signed_log(x)[0]
