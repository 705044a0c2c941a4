"""The exact Laplacian and local energies of known states."""

import numpy as np
import pytest
import tensorflow as tf

from distvmc import config
from distvmc.hamiltonian import METHODS, LocalEnergy, grad_and_diag_hessian
from distvmc.systems import build_system
from distvmc.wavefunctions import build_wavefunction


def fd_grad_and_diag(f, x, h=1e-4):
    """Central finite differences of f (numpy in (W, N, D) -> (W,)) per coordinate."""
    w, n, d = x.shape
    g = np.zeros((w, n * d))
    dd = np.zeros((w, n * d))
    f0 = f(x)
    for k in range(n * d):
        e = np.zeros(n * d)
        e[k] = h
        e = e.reshape(n, d)
        fp, fm = f(x + e), f(x - e)
        g[:, k] = (fp - fm) / (2 * h)
        dd[:, k] = (fp - 2 * f0 + fm) / h ** 2
    return g, dd


def gaussian(alpha):
    return lambda x: -alpha * tf.reduce_sum(x * x, axis=[1, 2])


def exp_r(x):
    return -tf.reduce_sum(tf.norm(x, axis=-1), axis=1)


@pytest.mark.parametrize("method", METHODS)
def test_gaussian_exact(method, rng):
    x = tf.constant(rng.standard_normal((50, 3, 2)))
    g, h = grad_and_diag_hessian(gaussian(0.7), x, method)
    np.testing.assert_allclose(g.numpy(), -1.4 * x.numpy().reshape(50, 6), atol=1e-12)
    np.testing.assert_allclose(h.numpy(), -1.4 * np.ones((50, 6)), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_exp_r_analytic_and_finite_differences(method, rng):
    xn = rng.standard_normal((40, 2, 3))
    x = tf.constant(xn)
    g, h = grad_and_diag_hessian(exp_r, x, method)
    r = np.linalg.norm(xn, axis=-1, keepdims=True)
    g_exact = (-xn / r).reshape(40, 6)
    h_exact = (-(1.0 / r) + xn ** 2 / r ** 3).reshape(40, 6)
    np.testing.assert_allclose(g.numpy(), g_exact, atol=1e-12)
    np.testing.assert_allclose(h.numpy(), h_exact, atol=1e-12)
    # Laplacian of -r in 3D is -2/r per particle.
    lap = h.numpy().reshape(40, 2, 3).sum(-1)
    np.testing.assert_allclose(lap, -2.0 / r[..., 0], atol=1e-12)
    g_fd, h_fd = fd_grad_and_diag(lambda y: exp_r(tf.constant(y)).numpy(), xn)
    np.testing.assert_allclose(g.numpy(), g_fd, atol=1e-7)
    np.testing.assert_allclose(h.numpy(), h_fd, atol=1e-4)


def helium_like_wavefunction(rng_seed=3):
    cfg = config.load(None, [
        "system.particles=2", "potential.charges=[2]",
        "wavefunction.factors=[{type: exp_envelope}, {type: jastrow}, "
        "{type: mlp, hidden: [8, 8], inputs: distances, symmetrize: true, output_scale: 1.0},"
        "{type: mlp, hidden: [6], activation: softplus, output_scale: 1.0}, "
        "{type: deepsets, phi: [5, 4], rho: [3], output_scale: 1.0}]"])
    system = build_system(cfg)
    return system, build_wavefunction(cfg, system, seed=rng_seed)


def test_methods_agree_with_each_other_and_finite_differences(rng):
    system, wf = helium_like_wavefunction()
    xn = rng.standard_normal((30, 2, 3))
    x = tf.constant(xn)
    results = {m: grad_and_diag_hessian(wf.log_abs, x, m) for m in METHODS}
    ref_g, ref_h = results["hessian"]
    for m, (g, h) in results.items():
        np.testing.assert_allclose(g.numpy(), ref_g.numpy(), rtol=1e-10, atol=1e-12, err_msg=m)
        np.testing.assert_allclose(h.numpy(), ref_h.numpy(), rtol=1e-10, atol=1e-12, err_msg=m)
    g_fd, h_fd = fd_grad_and_diag(lambda y: wf.log_abs(tf.constant(y)).numpy(), xn)
    np.testing.assert_allclose(ref_g.numpy(), g_fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ref_h.numpy(), h_fd, rtol=1e-4, atol=1e-4)


def test_hessian_diagonal_is_not_the_row_sum_pitfall(rng):
    """A function with cross terms: the gradient-of-sum shortcut would be wrong."""
    f = lambda x: tf.reduce_sum(x[:, :, 0] * x[:, :, 1] + x[:, :, 0] ** 2, axis=1)  # noqa: E731
    x = tf.constant(rng.standard_normal((5, 1, 2)))
    for m in METHODS:
        _, h = grad_and_diag_hessian(f, x, m)
        np.testing.assert_allclose(h.numpy(), np.tile([2.0, 0.0], (5, 1)), atol=1e-12,
                                   err_msg=f"eager {m}")
        # as the local energy runs it: a traced graph
        _, h = tf.function(lambda y, m=m: grad_and_diag_hessian(f, y, m))(x)
        np.testing.assert_allclose(h.numpy(), np.tile([2.0, 0.0], (5, 1)), atol=1e-12,
                                   err_msg=f"graph {m}")


def _local_energy(overrides, x, method="fwd_over_fwd"):
    cfg = config.load(None, overrides)
    system = build_system(cfg)
    wf = build_wavefunction(cfg, system)
    return LocalEnergy(wf, system, method)(x)


@pytest.mark.parametrize("method", METHODS)
def test_gaussian_in_harmonic_trap_has_zero_variance(method, rng):
    # 3 particles in 2D, m = omega = 1: psi = exp(-x^2/2) is exact, E = N D / 2 = 3.
    x = rng.standard_normal((200, 3, 2)) * 1.5
    e = _local_energy(["system.particles=3", "system.dim=2", "potential.type=harmonic",
                       "wavefunction.factors=[{type: gaussian_envelope, alpha: 0.5}]"], x, method)
    np.testing.assert_allclose(e, 3.0, atol=1e-10)


def test_gaussian_with_mass_and_frequency(rng):
    # m = 2, omega = 3 in 1D: exact alpha = m omega / (2 hbar) = 3, E = omega / 2 = 1.5.
    x = rng.standard_normal((100, 1, 1))
    e = _local_energy(["system.dim=1", "system.mass=2.0", "potential.type=harmonic",
                       "potential.omega=3.0",
                       "wavefunction.factors=[{type: gaussian_envelope, alpha: 3.0}]"], x)
    np.testing.assert_allclose(e, 1.5, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_hydrogen_exp_minus_r_is_exact(method, rng):
    x = rng.standard_normal((300, 1, 3)) * 2.0
    e = _local_energy(["wavefunction.factors=[{type: exp_envelope, decay: 1.0}]"], x, method)
    np.testing.assert_allclose(e, -0.5, atol=1e-10)


def test_hydrogen_nuclear_cusp_default_and_off_centre_nucleus(rng):
    # Nucleus at (1, -2, 0.5): the envelope's default decay is Z = 1.
    x = rng.standard_normal((100, 1, 3)) + np.array([1.0, -2.0, 0.5])
    e = _local_energy(["potential.nuclei=[[1.0, -2.0, 0.5]]",
                       "wavefunction.factors=[{type: exp_envelope}]"], x)
    np.testing.assert_allclose(e, -0.5, atol=1e-10)


def test_hydrogen_like_ion_and_2d_hydrogen(rng):
    # He+ (Z = 2): psi = exp(-2r), E = -Z^2/2 = -2.
    x = rng.standard_normal((100, 1, 3))
    e = _local_energy(["potential.charges=[2.0]", "wavefunction.factors=[{type: exp_envelope}]"], x)
    np.testing.assert_allclose(e, -2.0, atol=1e-10)
    # 2D hydrogen: psi = exp(-2r) (cusp 2Z/(D-1)), E = -2.
    x2 = rng.standard_normal((100, 1, 2))
    e2 = _local_energy(["system.dim=2", "potential.nuclei=[[0.0, 0.0]]",
                        "wavefunction.factors=[{type: exp_envelope}]"], x2)
    np.testing.assert_allclose(e2, -2.0, atol=1e-10)


def test_local_energy_chunking_matches_single_batch(rng):
    cfg = config.load(None)
    system = build_system(cfg)
    wf = build_wavefunction(cfg, system)
    x = rng.standard_normal((103, 1, 3))
    full = LocalEnergy(wf, system, "hessian", chunk_size=1000)(x)
    chunked = LocalEnergy(wf, system, "hessian", chunk_size=10)(x)
    np.testing.assert_allclose(chunked, full, rtol=1e-13, atol=1e-13)


def test_user_potential_plugin(tmp_path, rng):
    (tmp_path / "mypot.py").write_text(
        "import tensorflow as tf\n"
        "def quartic(x, k=1.0):\n"
        "    return k * tf.reduce_sum(x ** 4, axis=[1, 2])\n")
    cfg = config.load(None, ["system.dim=1", "potential.type=user",
                             "potential.function=mypot:quartic", "potential.params={k: 2.0}",
                             "wavefunction.factors=[{type: gaussian_envelope, alpha: 0.5}]"])
    system = build_system(cfg, config_dir=str(tmp_path))
    x = rng.standard_normal((20, 1, 1))
    v = system.potential(tf.constant(x)).numpy()
    np.testing.assert_allclose(v, 2.0 * x[:, 0, 0] ** 4)
    wf = build_wavefunction(cfg, system)
    e = LocalEnergy(wf, system)(x)
    # T_loc of exp(-x^2/2) is 1/2 - x^2/2.
    np.testing.assert_allclose(e, 0.5 - 0.5 * x[:, 0, 0] ** 2 + 2.0 * x[:, 0, 0] ** 4, atol=1e-12)


def test_user_potential_missing_module_is_a_config_error(tmp_path):
    from distvmc.config import ConfigError
    cfg = config.load(None, ["potential.type=user", "potential.function=nosuchmod:v"])
    with pytest.raises(ConfigError, match="cannot import module 'nosuchmod'"):
        build_system(cfg, config_dir=str(tmp_path))


def test_compiled_local_energy_of_every_bundled_ansatz_agrees_across_methods(rng):
    """The compiled LocalEnergy (XLA where used) works for the bundled configs'
    wavefunctions, e.g. helium's symmetrized MLP on distances, and all methods agree."""
    from conftest import CONFIGS
    for name in ["helium", "hydrogen", "harmonic_oscillator_3d"]:
        cfg = config.load(f"{CONFIGS}/{name}.yaml")
        system = build_system(cfg)
        wf = build_wavefunction(cfg, system)
        x = rng.standard_normal((37, system.particles, system.dim))
        es = [LocalEnergy(wf, system, m)(x) for m in METHODS]
        for e in es[1:]:
            np.testing.assert_allclose(e, es[0], rtol=1e-10, atol=1e-10, err_msg=name)


def test_auto_takes_the_agreed_choice_of_rank_0(rng):
    """``auto`` times the methods on each process, but every rank must use the same one:
    ``agree`` (the communicator's bcast_object in a run) overrides the local choice."""
    system, wf = helium_like_wavefunction()
    x = tf.constant(rng.normal(size=(16, 2, 3)))
    calls = []

    def agree(local):
        calls.append(local)
        return "forward" if local == "hessian" else "hessian"  # never the local choice

    e = LocalEnergy(wf, system, "auto", log=lambda *a: None, agree=agree)
    values = e(x)
    assert len(calls) == 1 and e.method != calls[0]
    np.testing.assert_allclose(values, LocalEnergy(wf, system, "hessian")(x), rtol=1e-10)
    e(x)
    assert len(calls) == 1  # chosen once
