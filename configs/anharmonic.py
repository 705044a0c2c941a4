"""A user-defined potential for distvmc: the quartic anharmonic oscillator.

Loaded by ``potential: {type: user, function: "anharmonic:quartic", params: {...}}``
in configs/anharmonic_1d.yaml; the module is found next to the config file.
"""

import tensorflow as tf


def quartic(x, a=0.5, b=0.1):
    """V = sum over every coordinate of a x^2 + b x^4.

    Args:
      x: positions, shape (walkers, N, D).
      a, b: coefficients (energy / length^2 and energy / length^4).

    Returns:
      potential energies, shape (walkers,).
    """
    x2 = x * x
    return tf.reduce_sum(a * x2 + b * x2 * x2, axis=[1, 2])
