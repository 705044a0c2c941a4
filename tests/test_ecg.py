"""The correlated-Gaussian reference (distvmc.ecg) for the pionless nuclei.

- its matrix elements equal Monte Carlo averages over exactly sampled Gaussians,
  with the potential evaluated by the production code (distvmc.systems.pionless),
  so the two share the Hamiltonian's definition and nothing else;
- the deuteron from a small basis equals the exact radial solve;
- the energy is variational: it never rises as the basis grows, and its
  wavefunction's log|psi| is that of the sum of the Gaussians.
"""

from __future__ import annotations

import numpy as np
import pytest

from distvmc.ecg import HBAR2_OVER_M, SVM, PionlessECG, internal_basis, log_psi
from distvmc.systems.pionless import CONSTANTS, default_alpha, potential
from test_nuclei import deuteron_radial


def _random_gaussian(ecg, rng):
    return ecg.matrix(1.0 / rng.uniform(0.4, 1.5, len(ecg.pairs)) ** 2)


@pytest.mark.parametrize("a", [3, 4])
def test_matrix_elements_equal_monte_carlo_with_the_production_potential(a):
    rng = np.random.default_rng(a)
    ecg = PionlessECG(a, cutoff=4)
    ga, gb = _random_gaussian(ecg, rng), _random_gaussian(ecg, rng)
    s, h = ecg.elements(ga, gb[None])
    v = potential(a, 4.0, *CONSTANTS[4], default_alpha(a))
    u = internal_basis(a)
    n, samples = a - 1, 100_000
    num, var = 0.0, 0.0
    for q in ecg.perms:  # sum over permutations of B, each weighted by its overlap
        bq = q.T @ gb @ q
        c = ga + bq
        s_q = (np.sqrt(np.linalg.det(2 * ga) * np.linalg.det(2 * bq)) / np.linalg.det(c)) ** 1.5
        # exp(-x^T C x / 2) per Cartesian component: x ~ N(0, C^-1) exactly
        y = rng.multivariate_normal(np.zeros(n), np.linalg.inv(c), size=(samples, 3))
        r = np.einsum("ia,wci->wac", u, y)  # particle positions (centre of mass at 0)
        pot = np.asarray(v(r))
        kin = 1.5 * HBAR2_OVER_M * np.trace(ga @ np.linalg.inv(c) @ bq)
        num += s_q * (kin + pot.mean())
        var += (s_q * pot.std()) ** 2 / samples
    assert s[0] > 0
    assert h[0] / s[0] == pytest.approx(num / s[0], abs=5 * np.sqrt(var) / s[0])


@pytest.mark.parametrize("lam", [2, 4, 6])
def test_deuteron_from_18_gaussians_equals_the_radial_solve(lam):
    svm = SVM(PionlessECG(2, cutoff=lam), b_max=40.0, trials=40, seed=0)
    svm.grow(18)
    e = svm.refine(4)
    exact = deuteron_radial(lam)
    assert exact - 1e-6 < e < exact + 1e-4  # above the exact energy, within 0.1 keV


def test_energy_never_rises_as_the_basis_grows_and_psi_is_the_gaussian_sum():
    ecg = PionlessECG(3)
    svm = SVM(ecg, trials=6, seed=3)
    energies = [svm.grow(k) for k in (4, 8, 12)]
    assert energies[0] >= energies[1] >= energies[2]
    assert energies[2] < -7.0  # the triton is bound by about 7.8 MeV
    mats, coef = svm.state()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 3))
    # log|psi| is invariant under a common shift and under swapping two nucleons
    lp = log_psi(ecg, mats, coef, x)
    assert np.allclose(log_psi(ecg, mats, coef, x + np.array([0.3, -1.0, 2.0])), lp, atol=1e-12)
    assert np.allclose(log_psi(ecg, mats, coef, x[:, [1, 0, 2]]), lp, atol=1e-12)
    # and equals the explicit sum over Gaussians and permutations
    u = internal_basis(3)
    import itertools
    psi = np.zeros(5)
    for k in range(len(mats)):
        m = u.T @ mats[k] @ u  # particle-space form
        for p in itertools.permutations(range(3)):
            xp = x[:, list(p)]
            psi += coef[k] * np.linalg.det(2 * mats[k]) ** 0.75 * np.exp(
                -0.5 * np.einsum("wac,ab,wbc->w", xp, m, xp))
    assert np.allclose(np.log(np.abs(psi)), lp, atol=1e-10)
