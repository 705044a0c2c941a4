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
import tensorflow as tf

from distvmc.ecg import HBAR2_OVER_M, SVM, PionlessECG, internal_basis, save
from distvmc.systems.pionless import CONSTANTS, default_alpha, potential
from test_nuclei import deuteron_radial

CONFIGS = __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "configs")


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


def _factor(path):
    """The gaussian_sum factor of a saved basis."""
    from distvmc.wavefunctions.nuclear import GaussianSum

    class Item:
        file, trainable = path, True

    return GaussianSum(None, Item())


def test_energy_never_rises_as_the_basis_grows_and_the_factor_is_the_gaussian_sum(tmp_path):
    import itertools

    ecg = PionlessECG(3)
    svm = SVM(ecg, trials=6, seed=3)
    energies = [svm.grow(k) for k in (4, 8, 12)]
    assert energies[0] >= energies[1] >= energies[2]
    assert energies[2] < -7.0  # the triton is bound by about 7.8 MeV
    save(str(tmp_path / "b.npz"), svm, 4)
    factor = _factor(str(tmp_path / "b.npz"))
    mats, coef = svm.state()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 3))

    def log_psi(y):
        return factor.signed_log(tf.constant(y))[1].numpy()

    # log|psi| is invariant under a common shift and under swapping two nucleons
    lp = log_psi(x)
    assert np.allclose(log_psi(x + np.array([0.3, -1.0, 2.0])), lp, atol=1e-12)
    assert np.allclose(log_psi(x[:, [1, 0, 2]]), lp, atol=1e-12)
    # and, up to the factor's constant normalization, equals the explicit sum over
    # Gaussians and permutations
    u = internal_basis(3)
    psi = np.zeros(5)
    for k in range(len(mats)):
        m = u.T @ mats[k] @ u  # particle-space form
        for p in itertools.permutations(range(3)):
            xp = x[:, list(p)]
            psi += coef[k] * np.linalg.det(2 * mats[k]) ** 0.75 * np.exp(
                -0.5 * np.einsum("wac,ab,wbc->w", xp, m, xp))
    offset = np.log(np.abs(psi)) - lp
    assert np.allclose(offset, offset[0], rtol=0, atol=1e-10)


def _triton_basis(tmp_path, k=12):
    svm = SVM(PionlessECG(3), trials=16, seed=0)
    svm.grow(k)
    svm.refine(1)
    path = str(tmp_path / "triton.npz")
    save(path, svm, 4)
    return svm, path


def test_vmc_of_the_gaussian_sum_factor_equals_its_analytic_energy(tmp_path):
    """The whole engine (re-centred Metropolis, E_L with the exact Laplacian, the
    pionless potential, the evaluation's error bar) on a correlated-Gaussian triton:
    its energy is known in closed form."""
    import distvmc

    svm, path = _triton_basis(tmp_path)
    res = distvmc.run(f"{CONFIGS}/triton.yaml",
                      {"wavefunction.factors": [{"type": "gaussian_sum", "file": path}],
                       "optimizer.iterations": 0, "sampler.walkers": 1024,
                       "evaluation.samples": 300000, "checkpoint.every": 0},
                      out=str(tmp_path / "t"))
    print(f"VMC {res.energy:.4f} +- {res.energy_err:.4f}, analytic {svm.energy:.4f} MeV")
    assert abs(res.energy - svm.energy) < 4 * res.energy_err
    assert res.energy_err < 0.02


def test_gaussian_sum_factor_refuses_a_missing_file_and_the_wrong_nucleus(tmp_path):
    from distvmc import config
    from distvmc.schema import ConfigError

    with pytest.raises(ConfigError, match="no such file"):
        config.load(f"{CONFIGS}/triton.yaml",
                    ["wavefunction.factors=[{type: gaussian_sum, file: /nonexistent.npz}]"])
    _, path = _triton_basis(tmp_path, k=3)
    with pytest.raises(ConfigError, match="holds Gaussians for 3 nucleons"):
        config.load(f"{CONFIGS}/alpha.yaml",
                    [f"wavefunction.factors=[{{type: gaussian_sum, file: {path}}}]"])


def test_gaussian_sum_forward_laplacian_equals_hessian(tmp_path):
    """The factor's forward rule (quadratic exponents, signed log-sum-exp) against the
    Hessian of its log, with unequal mass weights; and parameter gradients agree."""
    from distvmc import forward_laplacian as fl
    from distvmc.hamiltonian import grad_and_diag_hessian
    _, path = _triton_basis(tmp_path, k=5)
    f = _factor(path)
    f.coefficients.assign(f.coefficients * np.array([1.0, -0.3, 0.5, 2.0, -0.1]))  # signs
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(7, 3, 3)))
    a = rng.uniform(0.5, 1.5, 9)
    with tf.GradientTape(persistent=True) as tape:
        u = f.forward_laplacian(fl.coordinates(x, a))
        kin_f = tf.reduce_sum(u.lap + tf.reduce_sum(u.jac ** 2, axis=1))
        g, h = grad_and_diag_hessian(lambda z: f.signed_log(z)[1], x, "hessian")
        kin_h = tf.reduce_sum(tf.reduce_sum(h * a ** 2, axis=1) + tf.reduce_sum((g * a) ** 2, axis=1))
    np.testing.assert_allclose(u.value, f.signed_log(x)[1], rtol=1e-12)
    np.testing.assert_allclose(u.jac.numpy(), g.numpy() * a, rtol=1e-10)
    np.testing.assert_allclose(kin_f.numpy(), kin_h.numpy(), rtol=1e-10)
    np.testing.assert_allclose(tape.gradient(kin_f, f.coefficients),
                               tape.gradient(kin_h, f.coefficients), rtol=1e-9)
