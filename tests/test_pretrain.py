"""Pretraining of the orbitals (distvmc.pretrain): reference orbitals (UHF by PySCF,
oscillator orbitals), the fit lowering the orbital mismatch, its place in a Job, and
one-line config errors.

The orbital factor here is a small stand-in with the determinant factor's API
(``orbital_matrices(x)`` -> per group (W, n_det, n_g, n_g), ``blocks``), so these
tests do not depend on the slater factor's implementation.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import quiet
from distvmc.comm import SingleProcess
from distvmc.config import ConfigError, validate
from distvmc.pretrain import Oscillator, oscillator_levels, pretrain
from distvmc.schema import Section
from distvmc.systems import build_system
from distvmc.wavefunctions import FACTORS
from distvmc.wavefunctions.wavefunction import Wavefunction

H2 = [[0.0, 0.0, -0.70055], [0.0, 0.0, 0.70055]]  # R = 1.4011 bohr
HAS_SLATER = "slater" in FACTORS


class FakeOrbitals(tf.Module):
    """phi^d_k(r) = MLP_dk(|r - R_I|) * sum_I exp(-a_I |r - R_I|); one MLP for all groups."""

    def __init__(self, blocks, centres, n_det=1, hidden=16, seed=0):
        super().__init__(name="fake_orbitals")
        rng = np.random.default_rng(seed)
        self.blocks, self.n_det = blocks, n_det
        self.centres = tf.constant(centres, tf.float64)
        k = len(centres)
        n_out = n_det * max(n for _, n in blocks)
        self.w1 = tf.Variable(rng.normal(size=(k, hidden)) / np.sqrt(k))
        self.b1 = tf.Variable(rng.normal(size=hidden) * 0.1)
        self.w2 = tf.Variable(rng.normal(size=(hidden, n_out)) / np.sqrt(hidden))
        self.a = tf.Variable(np.full(k, 0.5))

    def orbital_matrices(self, x):
        d = tf.norm(x[:, :, None, :] - self.centres[None, None] + 1e-12, axis=-1)  # (W, N, K)
        env = tf.reduce_sum(tf.exp(-self.a * d), axis=-1)  # (W, N)
        h = tf.tanh(tf.einsum("wnk,kh->wnh", d, self.w1) + self.b1)
        out = tf.einsum("wnh,ho->wno", h, self.w2) * env[..., None]  # (W, N, n_det * n_max)
        mats = []
        for start, n in self.blocks:
            o = out[:, start:start + n, :]
            o = tf.reshape(o[..., :self.n_det * n] if n else o,
                           (-1, n, self.n_det, n))
            mats.append(tf.transpose(o, (0, 2, 1, 3)))  # (W, n_det, n_g (electron), n_g (orbital))
        return mats

    def signed_log(self, x):  # 1 x 1 blocks only (slogdet does not compile under XLA)
        sign, log = 1.0, 0.0
        for m in self.orbital_matrices(x):
            a = m[:, 0, 0, 0]
            sign, log = sign * tf.sign(a), log + tf.math.log(tf.abs(a))
        return sign, log


def h2_config(**pretrain):
    cfg = validate({"system": {"species": [{"count": 1, "spin": "up"}, {"count": 1, "spin": "down"}]},
                    "potential": {"type": "coulomb", "nuclei": H2, "charges": [1.0, 1.0]},
                    "sampler": {"walkers": 128, "thermalization": 40, "step": 0.5},
                    "optimizer": {"type": "adam", "iterations": 1, "lr": 1e-3},
                    "evaluation": {"samples": 128, "thermalization": 1}})
    d = cfg.to_dict()  # pretrain.iterations > 0 needs a slater factor in the config; the
    d["pretrain"].update(pretrain)  # stand-in is passed as the Job's wavefunction instead
    return Section(d)


def fake_wf(cfg, system, seed=0):
    blocks = [(int(s.start), int(s.count)) for s in system.species]
    return Wavefunction([FakeOrbitals(blocks, system.centres, seed=seed)], (system.particles, 3))


def test_oscillator_orbitals_2d_dot_are_orthonormal_eigenfunctions():
    cfg = validate({"system": {"dim": 2, "species": [
                        {"count": 3, "spin": "up", "statistics": "boson"},
                        {"count": 3, "spin": "down", "statistics": "boson"}]},
                    "potential": {"type": "harmonic", "omega": 0.5, "interaction": "coulomb"}})
    system = build_system(cfg)
    target = Oscillator(system, 0.5)
    assert target.levels == [[(0, 0), (1, 0), (0, 1)]] * 2
    h = 0.05
    g = np.arange(-12, 12, h) + h / 2
    r = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    phi = target.orbitals(0, r)
    np.testing.assert_allclose(phi.T @ phi * h * h, np.eye(3), atol=1e-8)
    # -1/2 lap phi + 1/2 omega^2 r^2 phi = omega (n_x + n_y + 1) phi, by finite differences
    pts = np.random.default_rng(0).normal(size=(50, 2)) * 2
    eps = 1e-4
    lap = sum(target.orbitals(0, pts + e) + target.orbitals(0, pts - e)
              for e in (np.array([eps, 0]), np.array([0, eps]))) - 4 * target.orbitals(0, pts)
    lap /= eps ** 2
    p0 = target.orbitals(0, pts)
    hphi = -0.5 * lap + 0.5 * 0.25 * (pts ** 2).sum(1)[:, None] * p0
    np.testing.assert_allclose(hphi, p0 * 0.5 * np.array([1.0, 2.0, 2.0]), atol=2e-6)
    # the target density samples (the Slater determinant is not zero everywhere)
    x = system.initial_walkers(np.random.default_rng(1), 8, 1.0)
    assert np.all(np.isfinite(target.log_density(x)))


def test_oscillator_levels_fill_by_energy_with_a_fixed_order():
    assert oscillator_levels(4, [1.0, 1.0, 1.0]) == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    assert oscillator_levels(3, [1.0, 3.0]) == [(0, 0), (1, 0), (2, 0)]  # y is stiffer
    assert oscillator_levels(6, [1.0, 1.0])[3:] == [(2, 0), (1, 1), (0, 2)]


def test_hartree_fock_target_h2():
    pytest.importorskip("pyscf")
    from distvmc.pretrain import HartreeFock

    system = build_system(h2_config())
    target = HartreeFock(system, "cc-pvdz")
    assert abs(target.energy - (-1.12871)) < 5e-4, target.energy  # UHF/cc-pVDZ at R = 1.4011
    pts = np.random.default_rng(0).normal(size=(20, 3))
    up, down = target.orbitals(0, pts), target.orbitals(1, pts)
    np.testing.assert_allclose(np.abs(up), np.abs(down), rtol=1e-6)  # closed shell: sigma_g
    mirrored = pts * np.array([1, 1, -1])
    np.testing.assert_allclose(target.orbitals(0, mirrored), up, rtol=1e-6)  # gerade


def test_pretraining_lowers_the_orbital_mismatch_on_h2():
    pytest.importorskip("pyscf")
    cfg = h2_config(iterations=60, lr=2e-2, log_every=20)
    system = build_system(cfg)
    wf = fake_wf(cfg, system)
    lines = []
    out = pretrain(wf, system, cfg, SingleProcess(), 0, lines.append)
    assert out["final"] < 0.3 * out["initial"], (out["initial"], out["final"], lines)
    assert out["walkers"].shape == (128, 2, 3) and np.all(np.isfinite(out["walkers"]))
    assert lines[0].startswith("pretrain 1/60: orbital mismatch ")
    assert any(line.startswith("pretrain 20/60: orbital mismatch ") for line in lines)
    assert lines[-1].startswith("pretrain done: orbital mismatch ") and "UHF/cc-pvdz" in lines[-1]


def test_job_pretrains_a_fresh_state_0_only():
    pytest.importorskip("pyscf")
    from distvmc.job import Job

    cfg = h2_config(iterations=3, log_every=1)
    system = build_system(cfg)
    lines = []
    job = Job(cfg, SingleProcess(), system, log=lines.append, wavefunction=fake_wf)
    job.start_state(0)
    assert job.pretrain_pending
    before = job.wf.get_flat()
    job.train()
    assert job.pretrained is not None and not job.pretrain_pending
    assert not np.array_equal(before, job.wf.get_flat())
    text = "\n".join(lines)
    assert text.index("pretrain done") < text.index("thermalized")  # before the first VMC step
    resumed = Job(cfg, SingleProcess(), system, log=quiet, wavefunction=fake_wf)
    resumed.start_state(0, fresh=False)  # what a resume does: no pretraining
    assert not resumed.pretrain_pending


def one_line_error(raw) -> str:
    with pytest.raises(ConfigError) as e:
        validate(raw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_pretraining_needs_a_factor_with_orbitals():
    msg = one_line_error({"pretrain": {"iterations": 10}})
    assert "pretrain.iterations = 10" in msg and "slater" in msg


@pytest.mark.skipif(not HAS_SLATER, reason="needs the slater factor")
def test_pretraining_config_errors_are_one_line(monkeypatch):
    slater = {"wavefunction": {"factors": [{"type": "slater"}]}}
    msg = one_line_error({"pretrain": {"iterations": 5}, "potential": {"type": "coulomb",
                          "charges": [1.5]}, **slater})
    assert "integer nuclear charges" in msg
    msg = one_line_error({"pretrain": {"iterations": 5, "method": "hf"},
                          "potential": {"type": "harmonic"}, **slater})
    assert "needs potential.type = 'coulomb'" in msg
    msg = one_line_error({"pretrain": {"iterations": 5, "method": "oscillator"}, **slater})
    assert "needs potential.type = 'harmonic'" in msg
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyscf" else real(name, *a))
    msg = one_line_error({"pretrain": {"iterations": 5}, **slater})
    assert msg == "pretrain.method = 'hf' needs PySCF: pip install 'distvmc[chem]'"
    assert validate({"pretrain": {"iterations": 5}, "potential": {"type": "harmonic"},
                     **slater}).pretrain.iterations == 5  # oscillator needs no PySCF


@pytest.mark.skipif(not HAS_SLATER, reason="needs the slater factor")
def test_pretraining_the_slater_factor_on_a_2d_dot():
    """The real determinant factor (FermiNet orbitals), 3 + 3 electrons in a 2D trap:
    3x3 oscillator targets per spin, two determinants: the mismatch falls."""
    from distvmc.wavefunctions import build_wavefunction

    cfg = validate({"system": {"dim": 2, "species": [{"count": 3, "spin": "up"},
                                                     {"count": 3, "spin": "down"}]},
                    "potential": {"type": "harmonic", "interaction": "coulomb"},
                    "wavefunction": {"factors": [{"type": "slater", "hidden": [8, 8],
                                                  "pair_hidden": [4], "determinants": 2}]},
                    "sampler": {"walkers": 64, "thermalization": 20},
                    "pretrain": {"iterations": 30, "lr": 1e-2, "log_every": 100}})
    system = build_system(cfg)
    wf = build_wavefunction(cfg, system, 0)
    out = pretrain(wf, system, cfg, SingleProcess(), 0, quiet)
    assert out["final"] < 0.3 * out["initial"], (out["initial"], out["final"])


def test_the_fit_samples_a_mixture_of_reference_and_network_densities():
    """pretrain.reference_fraction f: log(f |Psi_ref|^2 + (1 - f) |Psi_net|^2), the two
    ends being the reference alone and the network alone."""
    from distvmc.pretrain import mixture_density

    target = Oscillator(build_system(validate({"system": {"species": [
        {"count": 1, "spin": "up"}, {"count": 1, "spin": "down"}]}})), 1.0)
    x = np.random.default_rng(3).normal(size=(7, 2, 3))
    ref = target.log_density(x)
    net = lambda y: -0.3 * np.sum(y ** 2, axis=(1, 2))  # noqa: E731  log|psi_net|
    assert np.array_equal(mixture_density(target, net, 1.0)(x), ref)
    assert np.array_equal(mixture_density(target, net, 0.0)(x), 2.0 * net(x))
    want = np.log(0.25 * np.exp(ref) + 0.75 * np.exp(2.0 * net(x)))
    np.testing.assert_allclose(mixture_density(target, net, 0.25)(x), want, rtol=1e-12)


@pytest.mark.parametrize("fraction", [0.0, 1.0])  # 0.5 (the default) is above
def test_pretraining_lowers_the_mismatch_at_either_end_of_the_mixture(fraction):
    pytest.importorskip("pyscf")
    cfg = h2_config(iterations=60, lr=2e-2, log_every=100, reference_fraction=fraction)
    system = build_system(cfg)
    wf = fake_wf(cfg, system)
    out = pretrain(wf, system, cfg, SingleProcess(), 0, quiet)
    assert out["final"] < 0.3 * out["initial"], (out["initial"], out["final"])
    assert np.all(np.isfinite(out["walkers"]))


def test_the_pretraining_chain_follows_a_density_that_changes_between_runs():
    """The fitted network changes the sampling density after every step. A chain that
    kept log p of the old density compared proposals against stale values: after the
    density dropped by e^-50 where the walkers stood, none moved again (LiH pretraining
    ran at acceptance 0.02). With the density re-read at each run, they move and sample
    the new density."""
    from distvmc.pretrain import Metropolis

    centre = {"c": 0.0}
    density = lambda y: -0.5 * np.sum((y - centre["c"]) ** 2, axis=(1, 2))  # noqa: E731
    chain = Metropolis(density, np.random.default_rng(0).normal(size=(2000, 1, 1)), 1.0,
                       np.random.default_rng(1), SingleProcess(), 0.5)
    chain.run(20)
    centre["c"] = 10.0  # the old walkers now sit at log p ~ -50
    rates = [chain.run(1) for _ in range(300)]
    assert min(rates[-50:]) > 0.2, rates[-50:]
    assert abs(np.mean(chain.x) - 10.0) < 0.2, np.mean(chain.x)
