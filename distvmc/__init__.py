"""distvmc: variational Monte Carlo with neural-network wavefunctions in TensorFlow."""

__version__ = "0.1.0"
