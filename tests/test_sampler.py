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


def make_groups(groups, walkers=300, seed=5, alpha=0.7):
    x0 = np.random.default_rng(seed).standard_normal((walkers, 2, 3))
    return MetropolisSampler(gaussian_log_abs(alpha), x0, 0.6, stream_key(seed, 0),
                             SingleProcess(), walker_groups=groups)


def test_walker_groups_run_the_same_chains_bitwise():
    """Slicing the walkers into groups launched side by side changes no walker's chain."""
    a, b, c = make_groups(1), make_groups(2), make_groups(3)
    outs = [s.sample(5, 7) for s in (a, b, c)]
    for x, acc in outs[1:]:
        np.testing.assert_array_equal(x, outs[0][0])
        np.testing.assert_array_equal(acc, outs[0][1])
    assert b.group_bounds == ((0, 150), (150, 300))


def test_blocks_split_over_several_calls_sample_correctly_and_restore_exactly():
    """A block longer than one compiled call's chunk is run as several calls (the last
    one shorter); the chain still samples |psi|^2, and a restored state continues it
    exactly."""
    alpha = 0.7

    def small(groups):
        s = make_groups(groups, alpha=alpha)
        s.CHUNK_NUMBERS = 7 * (300 * 2 * 3 + 300)  # 7 sweeps per call: blocks of 10 split 4 + 6
        return s

    a = small(2)
    a.thermalize(100)
    state = a.state()
    xs, acc = a.sample(150, 10)
    assert int(a.counter.numpy()) == 100 + 1500 and 0.2 < acc < 0.8
    st = stats.summarize((xs ** 2).mean(axis=(2, 3)))
    assert abs(st.mean - 1 / (4 * alpha)) < 4 * st.error, (st.mean, st.error)
    b = small(1)
    b.set_state(state)
    np.testing.assert_array_equal(b.sample(150, 10)[0], xs)


def test_background_draws_change_no_chain_and_are_used():
    """The next call's random numbers are drawn in a background thread; the chains are
    bitwise those drawn in the foreground, for whole and for split blocks, across
    sample() calls, and after a state restore that makes a prefetch stale."""
    for numbers in (None, 7 * (300 * 2 * 3 + 300)):  # whole blocks; blocks split 4 + 6
        a, b = make_groups(2), make_groups(2)
        b.prefetch = False
        if numbers:
            a.CHUNK_NUMBERS = b.CHUNK_NUMBERS = numbers
        a.thermalize(20)
        b.thermalize(20)
        state = a.state()
        for _ in range(2):
            np.testing.assert_array_equal(a.sample(6, 10)[0], b.sample(6, 10)[0])
        assert a._pending and not b._pending  # the next sample()'s first call is on its way
        a.set_state(state)  # back: the pending draw no longer matches the stream position
        b.set_state(state)
        np.testing.assert_array_equal(a.sample(6, 10)[0], b.sample(6, 10)[0])


def test_auto_walker_groups_follow_cores_ranks_and_walkers(monkeypatch):
    import os

    from distvmc import sampler as sm

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: 0)
    for var in sm.LOCAL_SIZE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert sm.auto_walker_groups(4096)[0] == 4
    assert sm.auto_walker_groups(130)[0] == 2  # at least 64 walkers per group
    assert sm.auto_walker_groups(10)[0] == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    n, why = sm.auto_walker_groups(4096)
    assert n == 2 and "2 rank(s) on this node" in why
    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: 1)
    assert sm.auto_walker_groups(4096)[0] == 1


def test_two_walker_groups_sample_the_hydrogen_ground_state_density():
    """|psi|^2 = exp(-2r) (hydrogen 1s): <r> = 1.5 exactly, sampled by two walker groups."""
    x0 = np.random.default_rng(1).standard_normal((512, 1, 3))
    s = MetropolisSampler(lambda x: -tf.sqrt(tf.reduce_sum(x * x, axis=[1, 2])), x0, 1.0,
                          stream_key(7, 0), SingleProcess(), walker_groups=2)
    s.thermalize(300)
    xs, acc = s.sample(1000, 5)
    st = stats.summarize(np.linalg.norm(xs, axis=-1).mean(axis=2))
    assert abs(st.mean - 1.5) < 4 * st.error and st.error < 0.003, (st.mean, st.error)
    assert 0.4 < acc < 0.6
