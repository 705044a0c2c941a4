"""Grid mode: quadrature energies, both kinetic forms, exact projection, configuration."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from numpy.polynomial import hermite

from distvmc import config
from distvmc.config import ConfigError
from distvmc.grid import Grid, GridEnergy, edge_ratio, finish_state
from distvmc.systems import build_system
from distvmc.wavefunctions import Wavefunction, build_wavefunction


class HermiteFunction(tf.Module):
    """psi = prod_k H_{n_k}(x_k) exp(-a x_k^2) over the N*D coordinates; a is a parameter.

    At a = 1/2 this is the oscillator eigenstate with E = sum_k (n_k + 1/2) (m = hbar = omega = 1).
    """

    def __init__(self, ns, a=0.5):
        super().__init__()
        self.polys = []
        for n in ns:
            c = np.zeros(n + 1)
            c[n] = 1.0
            self.polys.append(hermite.herm2poly(c))  # power-series coefficients, low first
        self.a = tf.Variable(a, dtype=tf.float64)

    def amplitude(self, x):
        z = tf.reshape(x, [-1, len(self.polys)])
        out = 0.0 * z[:, 0] + 1.0
        for k, p in enumerate(self.polys):
            zk = z[:, k]
            out = out * tf.math.polyval([tf.constant(v, tf.float64) for v in p[::-1]], zk)
        return out * tf.exp(-self.a * tf.reduce_sum(z * z, axis=1))

    def log_abs(self, x):
        return tf.math.log(tf.abs(self.amplitude(x)))

    def sign(self, x):
        return tf.sign(tf.stop_gradient(self.amplitude(x)))


def oscillator(particles=1, dim=1, box=7.0, spacing=0.05, extra=()):
    cfg = config.load(None, [f"system.particles={particles}", f"system.dim={dim}",
                             "potential.type=harmonic", "integrator=grid",
                             f"grid.box={box}", f"grid.spacing={spacing}",
                             "wavefunction.factors=[{type: mlp, signed: true, hidden: [8]}, "
                             "{type: gaussian_envelope, alpha: 0.4}]", *extra])
    return cfg, build_system(cfg), Grid.from_config(cfg)


def test_grid_points_are_cell_centres_and_avoid_the_origin():
    g = Grid([3.0, 2.0], 0.1, particles=1, dim=2)
    assert g.shape == (60, 40)
    assert np.allclose(g.spacing, [0.1, 0.1])
    assert g.points.shape == (2400, 1, 2)
    assert np.min(np.abs(g.points)) == pytest.approx(0.05)  # no point on a node at x = 0
    assert g.integrate(np.ones(g.size)) == pytest.approx(4 * 3.0 * 2.0)  # box area
    assert g.edge.sum() == 2 * 60 + 2 * 40 - 4


@pytest.mark.parametrize("kinetic", ["parts", "laplacian"])
def test_hermite_functions_have_energy_n_plus_half(kinetic):
    cfg, system, grid = oscillator()
    for n in range(6):
        wf = Wavefunction([HermiteFunction([n])], (1, 1))
        e = GridEnergy(wf, system, grid, kinetic).value_and_grad()[0]
        assert abs(e - (n + 0.5)) < 1e-8, (n, e)


@pytest.mark.parametrize("particles,dim", [(1, 2), (2, 1)])
def test_two_dimensional_hermite_products(particles, dim):
    """One particle in 2D and two particles in 1D: E = n_1 + n_2 + 1 for both kinetic forms."""
    cfg, system, grid = oscillator(particles, dim, box=6.5, spacing=0.1)
    for ns in [(0, 0), (1, 0), (2, 1)]:
        wf = Wavefunction([HermiteFunction(ns)], (particles, dim))
        for kinetic in ("parts", "laplacian"):
            e = GridEnergy(wf, system, grid, kinetic).value_and_grad()[0]
            assert abs(e - (sum(ns) + 1.0)) < 1e-8, (ns, kinetic, e)


def test_eigenstates_are_stationary_and_gradients_match_finite_differences():
    cfg, system, grid = oscillator()
    h = HermiteFunction([1])
    wf = Wavefunction([h], (1, 1))
    for kinetic in ("parts", "laplacian"):
        ge = GridEnergy(wf, system, grid, kinetic)
        h.a.assign(0.5)
        assert abs(ge.value_and_grad()[1][0]) < 1e-10  # dE/da = 0 at the eigenstate
        h.a.assign(0.4)
        e, g, *_ = ge.value_and_grad()
        # x exp(-a x^2): <T> = 3a/2, <V> = <x^2>/2 = 3/(8a); dE/da = 3/2 - 3/(8 a^2)
        assert e == pytest.approx(1.5 * 0.4 + 3 / (8 * 0.4), abs=1e-10)
        assert g[0] == pytest.approx(1.5 - 3 / (8 * 0.16), abs=1e-8)


def test_parts_and_laplacian_agree_for_a_network_and_its_gradient():
    """A random signed network (not an eigenstate): both kinetic forms give the same energy
    and the same parameter gradient, which matches finite differences."""
    cfg, system, grid = oscillator(box=8.0)
    wf = build_wavefunction(cfg, system, seed=3)
    parts = GridEnergy(wf, system, grid, "parts")
    lap = GridEnergy(wf, system, grid, "laplacian")
    e1, g1, *_ = parts.value_and_grad()
    e2, g2, *_ = lap.value_and_grad()
    assert e1 > 0.5 + 1e-3  # not the ground state, so the test is not trivial
    assert abs(e1 - e2) < 1e-9
    assert np.max(np.abs(g1 - g2)) < 1e-7
    theta = wf.get_flat()
    for i in [0, len(theta) // 2, len(theta) - 1]:
        d = np.zeros_like(theta)
        d[i] = 1e-5
        wf.set_flat(theta + d)
        ep = parts.value_and_grad()[0]
        wf.set_flat(theta - d)
        em = parts.value_and_grad()[0]
        wf.set_flat(theta)
        assert (ep - em) / 2e-5 == pytest.approx(g1[i], abs=1e-6)


def test_projecting_out_the_ground_state_bounds_the_energy_by_the_first_excited():
    """Rayleigh quotient on the complement of the exact ground state: >= E_1 = 1.5 for any
    trial function, and exactly orthogonal to the ground state on the grid."""
    cfg, system, grid = oscillator()
    ground = GridEnergy(Wavefunction([HermiteFunction([0])], (1, 1)), system, grid, "parts")
    st0 = finish_state(ground, 1e-8, log=lambda *a: None)
    for seed in range(3):
        wf = build_wavefunction(cfg, system, seed=seed)
        ge = GridEnergy(wf, system, grid, "parts", max_lower=1)
        free = ge.value_and_grad()[0]
        ge.set_lower([st0])
        projected = ge.value_and_grad()[0]
        assert free < 1.5 < projected  # the free trial lies below E_1; projected, above
        st = finish_state(ge, 1e-8, log=lambda *a: None)
        assert abs(grid.integrate(st.psi * st0.psi)) < 1e-12
        assert st.energy_parts == pytest.approx(st.energy_laplacian, abs=1e-9)


def test_box_edge_warning_is_one_line():
    cfg, system, grid = oscillator(box=2.0)
    lines = []
    ge = GridEnergy(Wavefunction([HermiteFunction([0])], (1, 1)), system, grid, "parts")
    st = finish_state(ge, 1e-8, log=lines.append)
    # |psi|^2 = exp(-x^2): outer cell centre 1.975, peak at the innermost centre 0.025
    assert st.edge_ratio == pytest.approx(np.exp(-(1.975 ** 2 - 0.025 ** 2)), rel=1e-9)
    assert len(lines) == 1 and "\n" not in lines[0] and "grid.box" in lines[0]
    cfg, system, grid = oscillator(box=7.0)
    lines = []
    ge = GridEnergy(Wavefunction([HermiteFunction([0])], (1, 1)), system, grid, "parts")
    finish_state(ge, 1e-8, log=lines.append)
    assert lines == []
    assert edge_ratio(grid, np.ones(grid.size)) == 1.0


@pytest.mark.parametrize("overrides,message", [
    (["integrator=grid"], "N*D = 3"),
    (["integrator=grid", "system.dim=1", "potential.type=harmonic", "grid.box=[5, 5]"],
     "grid.box has 2 entries"),
    (["excited.states=2"], "signed: true"),
    (["system.dim=1", "potential.type=harmonic", "excited.states=2",
      "wavefunction.factors=[{type: mlp, signed: true}]", "excited.reference_energies=[0.5]"],
     "at least one per state"),
])
def test_config_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        config.load(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
