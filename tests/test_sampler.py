"""Metropolis sampling of known distributions, and reproducible random streams."""

import numpy as np
import tensorflow as tf

from distvmc import stats
from distvmc.comm import SingleProcess
from distvmc.sampler import MetropolisSampler, stream_key


def gaussian_log_abs(alpha):
    # |psi|^2 = exp(-2 alpha x^2): <x_d^2> = 1 / (4 alpha) per coordinate.
    return lambda x: -alpha * tf.reduce_sum(x * x, axis=[1, 2])


def make(alpha=0.5, walkers=512, n=2, d=3, seed=0, rank=0, step=0.5):
    x0 = np.random.default_rng(seed).standard_normal((walkers, n, d)) * 3.0
    return MetropolisSampler(gaussian_log_abs(alpha), x0, step, stream_key(seed, rank),
                             SingleProcess(), target_acceptance=0.5)


def test_metropolis_reproduces_gaussian_second_moment():
    alpha = 0.8
    s = make(alpha)
    acc = s.thermalize(300)
    assert 0.35 < acc < 0.65  # adapted toward the 0.5 target
    xs, _ = s.sample(200, 5)  # (200, W, N, D)
    x2 = (xs ** 2).mean(axis=(2, 3))  # per-sample average of x_d^2
    st = stats.summarize(x2)
    exact = 1.0 / (4 * alpha)
    assert abs(st.mean - exact) < 4 * st.error, (st.mean, st.error, exact)
    assert st.error < 0.01 * exact
    # The autocorrelation-aware error is no smaller than the naive one here.
    assert st.error >= 0.9 * np.sqrt(st.variance / st.n)


def test_step_width_adapts_toward_target():
    s = make(alpha=0.5, step=10.0)
    s.thermalize(200)
    _, acc = s.sample(10, 5)
    assert abs(acc - 0.5) < 0.1
    assert float(s.step.numpy()) < 5.0


def test_same_seed_same_chain_and_state_restore_is_exact():
    a, b = make(seed=3), make(seed=3)
    xa, _ = a.sample(4, 3)
    xb, _ = b.sample(4, 3)
    np.testing.assert_array_equal(xa, xb)
    state = a.state()
    after_a, _ = a.sample(2, 3)
    c = make(seed=3)
    c.set_state(state)
    after_c, _ = c.sample(2, 3)
    np.testing.assert_array_equal(after_a, after_c)


def test_ranks_draw_independent_streams():
    assert stream_key(0, 0) != stream_key(0, 1) != stream_key(1, 0)
    a, b = make(seed=0, rank=0), make(seed=0, rank=1)
    xa, _ = a.sample(1, 1)
    xb, _ = b.sample(1, 1)
    # Same start, different random numbers.
    assert not np.allclose(xa, xb)


def test_nan_proposals_are_rejected():
    def log_abs(x):
        r = tf.reduce_sum(x * x, axis=[1, 2])
        return tf.where(r > 4.0, tf.constant(np.nan, x.dtype), -0.5 * r)
    x0 = np.zeros((256, 1, 2))
    s = MetropolisSampler(log_abs, x0, 1.0, stream_key(0, 0), SingleProcess())
    xs, _ = s.sample(50, 2)
    assert np.all(np.isfinite(xs))
    assert np.all((xs ** 2).sum(axis=(2, 3)) <= 4.0)
