"""Error bars that account for autocorrelation, computed from rank-summable sums.

Convention under test: tau = 1 + 2 sum_{t>=1} rho_t (statistical inefficiency),
so var(mean) = tau sigma^2 / n; tau = 1 for independent samples and
(1 + phi) / (1 - phi) for an AR(1) process with coefficient phi.
"""

import numpy as np
import pytest

from distvmc import stats


def ar1_chains(m, w, phi, rng):
    """w independent AR(1) chains of length m with unit stationary variance."""
    x = np.zeros((m, w))
    x[0] = rng.standard_normal(w)
    c = np.sqrt(1 - phi ** 2)
    for t in range(1, m):
        x[t] = phi * x[t - 1] + c * rng.standard_normal(w)
    return x


def ar1_tau(phi):
    return (1 + phi) / (1 - phi)


def test_independent_samples_give_naive_error(rng):
    e = rng.standard_normal((1, 10000)) * 2.0 + 1.0
    st = stats.summarize(e)
    assert abs(st.mean - 1.0) < 4 * st.error
    np.testing.assert_allclose(st.error, 2.0 / 100, rtol=0.05)
    np.testing.assert_allclose(st.variance, 4.0, rtol=0.05)
    # M = 1: independent chains, the naive error exactly, and tau exactly 1.
    np.testing.assert_allclose(st.error, e.std(ddof=1) / np.sqrt(e.size), rtol=1e-12)
    assert st.tau == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(st.rhat)


def test_independent_samples_along_chains_give_tau_one(rng):
    sigma = 1.5
    e = rng.standard_normal((200, 400)) * sigma
    st = stats.summarize(e)
    np.testing.assert_allclose(st.tau, 1.0, rtol=0.15)
    np.testing.assert_allclose(st.error, sigma / np.sqrt(e.size), rtol=0.15)
    assert abs(st.rhat - 1.0) < 0.02


@pytest.mark.parametrize("phi", [0.5, 0.8])
def test_ar1_tau_is_the_statistical_inefficiency(phi):
    rng = np.random.default_rng(7)
    e = ar1_chains(1000, 2000, phi, rng)  # one block (= one chain) of 1000 >> tau each
    st = stats.summarize(e)
    tau_exact = ar1_tau(phi)  # 3 for phi = 0.5, 9 for phi = 0.8
    np.testing.assert_allclose(st.tau, tau_exact, rtol=0.15)
    # var(mean) = tau sigma^2 / n with sigma = 1
    np.testing.assert_allclose(st.error, np.sqrt(tau_exact / e.size), rtol=0.1)
    # and the reported pair is self-consistent: error^2 = tau sigma^2 / n
    np.testing.assert_allclose(st.error ** 2, st.tau * e.var(ddof=1) / e.size, rtol=1e-9)
    assert st.rhat < 1.05


def test_ar1_tau_with_several_blocks_per_chain():
    # Few walkers: each chain is cut into 8 blocks of 2000 measurements.
    rng = np.random.default_rng(11)
    phi = 0.8
    e = ar1_chains(16000, 4, phi, rng)
    assert stats.blocks_per_chain(16000, 4) == 8
    st = stats.summarize(e)
    # Only 32 blocks, so tau is known to ~25% (relative sd sqrt(2/31)); the
    # point is that blocks within one chain still see the correlation.
    assert 0.6 * ar1_tau(phi) < st.tau < 1.6 * ar1_tau(phi)


def test_error_is_standard_error_of_chain_means(rng):
    # With >= 32 walkers, each chain is one block.
    e = ar1_chains(300, 64, 0.7, rng)
    st = stats.summarize(e)
    chain_means = e.mean(axis=0)
    np.testing.assert_allclose(st.error, chain_means.std(ddof=1) / np.sqrt(64), rtol=1e-12)


def test_unconverged_chains_have_large_rhat(rng):
    e = rng.standard_normal((100, 64)) + np.linspace(-3, 3, 64)
    assert stats.summarize(e).rhat > 1.5


def test_sums_over_ranks_equal_the_whole():
    rng = np.random.default_rng(0)
    e = ar1_chains(64, 40, 0.5, rng)
    e[10, 3] = np.nan  # a bad chain on "rank 0"
    e[20, 30] = -np.inf  # and one on "rank 1"
    blocks = stats.blocks_per_chain(64, 40)
    whole = stats.from_sums(stats.local_sums(e, blocks), 64)
    parts = stats.local_sums(e[:, :25], blocks) + stats.local_sums(e[:, 25:], blocks)
    split = stats.from_sums(parts, 64)
    keys = ("mean", "error", "variance", "tau", "rhat")
    np.testing.assert_allclose([getattr(split, k) for k in keys],
                               [getattr(whole, k) for k in keys], rtol=1e-12)
    assert (split.n, split.nonfinite, split.bad_chains) == (whole.n, 2, 2)
    assert np.isfinite(whole.error) and np.isfinite(whole.tau)


class _TwoRanks:
    """A communicator whose other rank holds a given sums vector."""

    size = 2

    def __init__(self, other):
        self.other = other

    def allreduce(self, s):
        return np.asarray(s) + self.other


def test_summarize_with_a_communicator_equals_the_whole():
    rng = np.random.default_rng(3)
    e = ar1_chains(50, 20, 0.6, rng)
    mine, theirs = e[:, :10], e[:, 10:]
    blocks = stats.blocks_per_chain(50, 20)  # the global walker count decides
    st = stats.summarize(mine, _TwoRanks(stats.local_sums(theirs, blocks)))
    whole = stats.summarize(e)
    np.testing.assert_allclose([st.mean, st.error, st.tau, st.rhat],
                               [whole.mean, whole.error, whole.tau, whole.rhat], rtol=1e-12)


def test_nonfinite_values_are_counted_not_averaged():
    e = np.ones((1, 100))
    e[0, 5] = np.nan
    e[0, 7] = np.inf
    st = stats.summarize(e)
    assert st.nonfinite == 2
    assert st.bad_chains == 2
    assert st.n == 98 and st.mean == 1.0
    assert st.error == 0.0  # constant data: exactly no uncertainty


def test_one_nan_drops_that_sample_from_the_mean_and_that_chain_from_the_error():
    rng = np.random.default_rng(5)
    phi = 0.8
    clean = ar1_chains(500, 256, phi, rng) + 2.0
    e = clean.copy()
    e[123, 17] = np.nan
    st, ref = stats.summarize(e), stats.summarize(clean)
    assert (st.nonfinite, st.bad_chains, st.n) == (1, 1, clean.size - 1)
    # the mean keeps every finite sample, including the rest of chain 17
    np.testing.assert_allclose(st.mean, np.nanmean(e), rtol=1e-12)
    # the error and tau come from the 255 complete chains
    others = np.delete(clean, 17, axis=1)
    np.testing.assert_allclose(st.error, others.mean(axis=0).std(ddof=1) / np.sqrt(255),
                               rtol=1e-12)
    np.testing.assert_allclose(st.error, ref.error, rtol=0.03)
    np.testing.assert_allclose(st.tau, ref.tau, rtol=0.03)
    assert np.isfinite(st.rhat)
    # and it is still the correlated error (~3x naive), not a naive fallback
    assert st.error > 2.5 * np.sqrt(st.variance / st.n)


def test_one_nan_with_few_walkers_keeps_the_other_chains_blocks():
    rng = np.random.default_rng(9)
    phi = 0.5
    e = ar1_chains(4000, 4, phi, rng)
    e[5, 0] = np.nan
    st = stats.summarize(e)  # 3 good chains x 8 blocks = 24 blocks
    assert st.bad_chains == 1
    assert np.isfinite(st.error) and st.tau > 2.0
    assert st.error > 1.25 * np.sqrt(st.variance / st.n)  # sqrt(3) ~ 1.7 expected


def test_all_nan_gives_nan_not_zero():
    st = stats.summarize(np.full((10, 8), np.nan))
    assert st.n == 0 and st.nonfinite == 80 and st.bad_chains == 8
    assert np.isnan(st.mean) and np.isnan(st.error) and np.isnan(st.tau)


def test_nan_in_every_chain_gives_nan_error_not_naive():
    rng = np.random.default_rng(2)
    e = ar1_chains(100, 8, 0.9, rng)
    e[50] = np.nan  # every chain has one bad value: no block survives
    st = stats.summarize(e)
    assert st.n == 800 - 8 and np.isfinite(st.mean)
    assert np.isnan(st.error) and np.isnan(st.tau) and np.isnan(st.rhat)


def test_fewer_than_two_samples_give_nan_error():
    assert np.isnan(stats.summarize(np.array([[1.0, np.nan]])).error)
    assert np.isnan(stats.summarize(np.array([[1.0]])).error)


def test_zero_variance_gives_zero_error_and_unit_tau():
    st = stats.summarize(np.full((20, 40), -0.5))
    assert st.mean == -0.5 and st.error == 0.0 and st.tau == 1.0
