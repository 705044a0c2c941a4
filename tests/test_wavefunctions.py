"""Wavefunctions return (sign, log|psi|); factors register themselves with their schemas."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from distvmc import config  # noqa: E402
from distvmc.config import ConfigError  # noqa: E402
from distvmc.systems import build_system  # noqa: E402
from distvmc.wavefunctions import (FACTORS, Factor, Wavefunction, build_wavefunction,  # noqa: E402
                                   is_antisymmetric, register_factor)
from distvmc.wavefunctions.projected import ProjectedWavefunction  # noqa: E402


class Vandermonde(Factor):
    """prod over same-group fermion pairs i < j of (x_j - x_i) along the first axis.

    Antisymmetric under the exchange of two particles of the same fermion group
    (a Vandermonde determinant): a stand-in for a Slater determinant.
    """

    def __init__(self, system, cfg, rng, dtype, name="vandermonde"):
        fermion = np.array([system.species[g].statistics == "fermion" for g in system.groups])
        i, j = np.triu_indices(system.particles, k=1)
        keep = (system.groups[i] == system.groups[j]) & fermion[i]
        self.i, self.j = i[keep], j[keep]
        self.scale = tf.Variable(cfg.scale, dtype=dtype, name="scale")

    def signed_log(self, x):
        d = self.scale * (tf.gather(x[..., 0], self.j, axis=1) - tf.gather(x[..., 0], self.i, axis=1))
        sign = tf.reduce_prod(tf.sign(tf.stop_gradient(d)), axis=1)
        return sign, tf.reduce_sum(tf.math.log(tf.abs(d)), axis=1)


@pytest.fixture
def antisymmetric_factor():
    """Registers the 'vandermonde' factor (antisymmetric) for the duration of a test."""
    from distvmc.schema import Float
    register_factor("vandermonde", {"scale": Float(1.0, "scale of the differences")},
                    Vandermonde, antisymmetric=True)
    yield Vandermonde
    FACTORS.unregister("vandermonde")


def _build(overrides, seed=0):
    cfg = config.load(None, overrides)
    system = build_system(cfg)
    return cfg, system, build_wavefunction(cfg, system, seed=seed)


def test_signed_mlp_times_envelope_gives_sign_and_log_of_the_product(rng):
    cfg, system, wf = _build(["system.dim=1", "system.particles=2", "potential.type=harmonic",
                              "wavefunction.factors=[{type: mlp, signed: true, hidden: [8], "
                              "output_scale: 3.0}, {type: gaussian_envelope, alpha: 0.7}]"])
    x = tf.constant(rng.standard_normal((400, 2, 1)) * 2)
    sign, log_abs = wf(x)
    assert sign.shape == (400,) and log_abs.shape == (400,)
    mlp, env = wf.factors
    f = mlp.amplitude(x).numpy()  # 1 + network(x)
    psi = f * np.exp(-0.7 * np.sum(x.numpy() ** 2, axis=(1, 2)))
    assert (f < 0).any() and (f > 0).any()  # the test exercises both signs
    np.testing.assert_array_equal(sign.numpy(), np.sign(psi))
    np.testing.assert_allclose(log_abs.numpy(), np.log(np.abs(psi)), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(wf.sign(x).numpy(), sign.numpy())
    np.testing.assert_allclose(wf.log_abs(x).numpy(), log_abs.numpy(), rtol=1e-15)


def test_positive_ansatz_has_sign_one_and_the_gradient_of_log_psi(rng):
    cfg, system, wf = _build([])  # hydrogen: mlp x exp envelope
    x = tf.constant(rng.standard_normal((5, 1, 3)))
    sign, log_abs = wf(x)
    np.testing.assert_array_equal(sign.numpy(), np.ones(5))
    with tf.GradientTape() as tape:
        u = tf.reduce_sum(wf(x)[1])
    grads = tape.gradient(u, wf.parameters)
    assert len(grads) == len(wf.parameters) and all(g is not None for g in grads)


class LegacyGaussian(tf.Module):
    """A plug-in from before (sign, log|psi|): a tf.Module with log_abs only."""

    def __init__(self, a):
        super().__init__()
        self.a = tf.Variable(a, dtype=tf.float64)

    def log_abs(self, x):
        return -self.a * tf.reduce_sum(x * x, axis=[1, 2])


class LegacyOdd(tf.Module):
    """log_abs and sign: psi = x (the oscillator's first excited state without its Gaussian)."""

    def log_abs(self, x):
        return tf.math.log(tf.abs(x[:, 0, 0]))

    def sign(self, x):
        return tf.sign(tf.stop_gradient(x[:, 0, 0]))


def test_legacy_factors_keep_working_with_their_variables(rng):
    _, system, built = _build(["system.dim=1", "potential.type=harmonic",
                               "wavefunction.factors=[{type: gaussian_envelope, alpha: 0.3}]"])
    legacy = LegacyGaussian(0.2)
    wf = Wavefunction([LegacyOdd(), legacy, built.factors[0]], (1, 1))
    assert wf.n_parameters == 2 and any(v is legacy.a for v in wf.parameters)
    x = tf.constant(rng.standard_normal((50, 1, 1)))
    sign, log_abs = wf(x)
    xv = x.numpy()[:, 0, 0]
    np.testing.assert_array_equal(sign.numpy(), np.sign(xv))
    np.testing.assert_allclose(log_abs.numpy(), np.log(np.abs(xv)) - 0.5 * xv ** 2, rtol=1e-12)
    theta = wf.get_flat()
    wf.set_flat(theta + 1.0)
    np.testing.assert_allclose(wf.get_flat(), theta + 1.0)
    assert float(legacy.a.numpy()) in (theta + 1.0)


def test_parameters_are_deterministic_for_a_seed():
    a = _build(["system.particles=2", "potential.charges=[2]",
                "wavefunction.factors=[{type: exp_envelope}, {type: jastrow}, "
                "{type: mlp, hidden: [4], inputs: distances}, {type: deepsets, phi: [3], rho: [2]}]"],
               seed=5)[2]
    b = _build(["system.particles=2", "potential.charges=[2]",
                "wavefunction.factors=[{type: exp_envelope}, {type: jastrow}, "
                "{type: mlp, hidden: [4], inputs: distances}, {type: deepsets, phi: [3], rho: [2]}]"],
               seed=5)[2]
    np.testing.assert_array_equal(a.get_flat(), b.get_flat())
    assert list(a.named_parameters()) == list(b.named_parameters())
    assert list(a.named_parameters())[:2] == ["000_log_decay", "001_log_b"]


def test_projected_wavefunction_is_phi_minus_c_psi0(rng):
    overrides = ["system.dim=1", "potential.type=harmonic",
                 "wavefunction.factors=[{type: mlp, signed: true, hidden: [6], output_scale: 2.0}, "
                 "{type: gaussian_envelope, alpha: 0.5}]"]
    _, _, psi0 = _build(overrides, seed=1)
    _, _, phi = _build(overrides, seed=2)
    proj = ProjectedWavefunction(phi, [psi0], [0.8])
    x = tf.constant(rng.standard_normal((100, 1, 1)) * 2)
    amp = lambda w: (w(x)[0] * tf.exp(w(x)[1])).numpy()  # noqa: E731
    want = amp(phi) - 0.8 * amp(psi0)
    sign, log_abs = proj(x)
    np.testing.assert_array_equal(sign.numpy(), np.sign(want))
    np.testing.assert_allclose(log_abs.numpy(), np.log(np.abs(want)), rtol=1e-10)
    assert proj.parameters[-1] is proj.c and proj.trial is phi
    assert proj.n_parameters == phi.n_parameters + 1  # psi0 is frozen


def test_built_in_factors_are_registered_and_only_slater_is_antisymmetric():
    assert {"mlp", "deepsets", "jastrow", "gaussian_envelope", "exp_envelope", "slater"} <= set(FACTORS)
    assert {t for t in FACTORS if is_antisymmetric({"type": t})} == {"slater"}


def test_a_factor_registered_at_run_time_is_used_from_a_config(antisymmetric_factor, rng):
    # lithium-like: 2 up + 1 down electrons; the registered antisymmetric factor lets it validate
    overrides = ["system.particles=3", "potential.charges=[3]",
                 "wavefunction.factors=[{type: exp_envelope}, {type: vandermonde, scale: 2.0}]"]
    cfg, system, wf = _build(overrides)
    assert is_antisymmetric(cfg.wavefunction.factors[1])
    assert float(wf.factors[1].scale.numpy()) == 2.0
    assert wf.n_parameters == 2  # log_decay and scale
    x = rng.standard_normal((20, 3, 3))
    swapped = x[:, [1, 0, 2]]  # exchange the two up electrons
    s, u = wf(tf.constant(x))
    s2, u2 = wf(tf.constant(swapped))
    np.testing.assert_array_equal(s2.numpy(), -s.numpy())
    np.testing.assert_allclose(u2.numpy(), u.numpy(), rtol=1e-13)
    with pytest.raises(ConfigError, match="wavefunction.factors.1.scale = 'big'"):
        config.load(None, overrides + ["wavefunction.factors.1.scale=big"])
    # without it, the same system is refused
    with pytest.raises(ConfigError, match="antisymmetric"):
        config.load(None, overrides[:2] + ["wavefunction.factors=[{type: exp_envelope}]"])


def test_registering_a_name_twice_or_without_fields_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_factor("mlp", {}, lambda *a, **k: None)
    with pytest.raises(TypeError, match="must be a distvmc.schema Field"):
        register_factor("bad_fields", {"width": 3}, lambda *a, **k: None)
