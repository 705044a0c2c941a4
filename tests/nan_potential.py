"""A user potential that goes bad on purpose (tests/test_checkpoint.py).

The hydrogen atom's -1/r, except that call number ``nan_call`` (counting every
call, the eager shape check at start-up included) returns NaN for the first
walker, and with ``persistent: true`` every later call too. The call counter
is a TensorFlow variable, so it counts inside compiled graphs as well.
"""

import tensorflow as tf

_calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="nan_potential_calls")


def coulomb_with_nan(x, nan_call=5, persistent=False):
    n = _calls.assign_add(1)
    v = -1.0 / tf.norm(x[:, 0, :], axis=-1)
    hit = tf.greater_equal(n, nan_call) if persistent else tf.equal(n, nan_call)
    first = tf.equal(tf.range(tf.shape(v)[0]), 0)
    return tf.where(tf.logical_and(hit, first), tf.constant(float("nan"), v.dtype), v)
