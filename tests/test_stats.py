"""Error bars that account for autocorrelation, computed from rank-summable sums."""

import numpy as np

from distvmc import stats


def ar1_chains(m, w, rho, rng):
    """w independent AR(1) chains of length m with unit stationary variance."""
    x = np.zeros((m, w))
    x[0] = rng.standard_normal(w)
    for t in range(1, m):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho ** 2) * rng.standard_normal(w)
    return x


def test_independent_samples_give_naive_error(rng):
    e = rng.standard_normal((1, 10000)) * 2.0 + 1.0
    st = stats.summarize(e)
    assert abs(st.mean - 1.0) < 4 * st.error
    np.testing.assert_allclose(st.error, 2.0 / 100, rtol=0.05)
    np.testing.assert_allclose(st.variance, 4.0, rtol=0.05)


def test_correlated_chains_error_and_tau(rng):
    rho = 0.8
    e = ar1_chains(400, 256, rho, rng)
    st = stats.summarize(e)
    # Exact: tau_int = (1 + rho) / (2 (1 - rho)) = 4.5 (so 2 tau = 9 samples per independent one).
    tau_exact = (1 + rho) / (2 * (1 - rho))
    naive = np.sqrt(1.0 / e.size)
    true_err = naive * np.sqrt(2 * tau_exact)
    np.testing.assert_allclose(st.error, true_err, rtol=0.15)
    np.testing.assert_allclose(st.tau, tau_exact - 0.5, rtol=0.25, atol=0.5)
    assert st.rhat < 1.05


def test_unconverged_chains_have_large_rhat(rng):
    e = rng.standard_normal((100, 64)) + np.linspace(-3, 3, 64)
    assert stats.summarize(e).rhat > 1.5


def test_sums_over_ranks_equal_the_whole():
    rng = np.random.default_rng(0)
    e = ar1_chains(64, 40, 0.5, rng)
    blocks = stats.blocks_per_chain(64, 40)
    whole = stats.from_sums(stats.local_sums(e, blocks), 64)
    parts = stats.local_sums(e[:, :25], blocks) + stats.local_sums(e[:, 25:], blocks)
    split = stats.from_sums(parts, 64)
    np.testing.assert_allclose([split.mean, split.error, split.variance, split.tau],
                               [whole.mean, whole.error, whole.variance, whole.tau], rtol=1e-12)


def test_nonfinite_values_are_counted_not_averaged():
    e = np.ones((1, 100))
    e[0, 5] = np.nan
    e[0, 7] = np.inf
    st = stats.summarize(e)
    assert st.nonfinite == 2
    assert st.n == 98 and st.mean == 1.0
