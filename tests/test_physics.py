"""Optimization reaches exact ground states (zero-variance principle)."""

import numpy as np

from distvmc import config

from conftest import CONFIGS, ground_state


def test_sr_finds_the_exact_gaussian_width_in_a_trap():
    # 2 particles in 2D, omega = 1.5, m = 1: exact alpha = m omega / 2 = 0.75, E = N D omega / 2 = 3.
    cfg = config.load(None, ["system.particles=2", "system.dim=2", "potential.type=harmonic",
                             "potential.omega=1.5",
                             "wavefunction.factors=[{type: gaussian_envelope, alpha: 0.3}]",
                             "sampler.walkers=256", "optimizer.lr=0.2", "reference_energy=3.0"])
    job = ground_state(cfg, 60)
    alpha = float(np.exp(job.wf.factors[0].log_alpha.numpy()))
    assert abs(alpha - 0.75) < 1e-6
    out = job.driver.objective.evaluate(samples=20000)
    assert abs(out["energy"] - 3.0) < 1e-9
    assert out["variance"] < 1e-12


def test_sr_finds_the_hydrogen_decay():
    # psi = exp(-a r): SR drives a from 0.6 to the exact 1, where E_L = -0.5 everywhere.
    cfg = config.load(None, ["wavefunction.factors=[{type: exp_envelope, decay: 0.6}]",
                             "sampler.walkers=512", "optimizer.lr=0.5"])
    job = ground_state(cfg, 60)
    a = float(np.exp(job.wf.factors[0].log_decay.numpy()[0]))
    assert abs(a - 1.0) < 1e-5
    out = job.driver.objective.evaluate(samples=20000)
    assert abs(out["energy"] + 0.5) < 1e-8 and out["variance"] < 1e-9


def test_helium_jastrow_ansatz_is_variational_and_below_hartree_fock():
    # exp(-2 r1 - 2 r2) * Pade Jastrow with the e-e cusp: E between the exact -2.9037
    # and the hydrogenic-product energy -2.75 (it is ~ -2.88 after a few iterations).
    cfg = config.load(f"{CONFIGS}/helium.yaml", [
        "wavefunction.factors=[{type: exp_envelope, trainable: true}, {type: jastrow}]",
        "sampler.walkers=1024", "optimizer.lr=0.1"])
    out = ground_state(cfg, 40).driver.objective.evaluate(samples=40000)
    assert -2.9037 - 4 * out["energy_err"] < out["energy"] < -2.85, out["energy"]


def test_hookes_atom_with_exact_cusp_jastrow():
    # Hooke's atom (3D, 2 electrons, omega = 1/2): psi = (1 + r12/2) exp(-r1^2/4 - r2^2/4),
    # E = 2 exactly. A Pade Jastrow with the cusp 1/2 and a Gaussian envelope get close.
    cfg = config.load(None, ["system.particles=2", "potential.type=harmonic",
                             "potential.omega=0.5", "potential.interaction=coulomb",
                             "wavefunction.factors=[{type: gaussian_envelope, alpha: 0.25}, "
                             "{type: jastrow, b: 0.5}]",
                             "sampler.walkers=1024", "optimizer.lr=0.1", "reference_energy=2.0"])
    out = ground_state(cfg, 60).driver.objective.evaluate(samples=40000)
    assert 2.0 - 4 * out["energy_err"] < out["energy"] < 2.002, out
