"""The forward Laplacian (distvmc.forward_laplacian) against the reverse-mode Hessian.

Facts checked here:
- every activation's f' and f'' equal TensorFlow's derivatives;
- for every factor with forward rules (random parameters, unequal mass weights),
  the forward pass gives the Hessian method's gradient and mass-weighted
  Laplacian to 1e-10, and central finite differences to ~1e-5;
- the determinant factor (slater: FermiNet and envelope orbitals, one to three
  determinants, 3D atoms and molecules, 2D dots, 1 x 1 blocks) has forward rules
  equal to the Hessian's derivatives, also next to a node where two same-spin
  electrons nearly coincide;
- the local energies of the bundled atom, nucleus and dot ansatzes are those of
  the hessian method, with no factor falling back;
- parameter gradients of the mean local energy through forward equal those
  through hessian;
- the forward local energy compiles with XLA; ``auto`` picks a method and says so.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from distvmc import config
from distvmc import forward_laplacian as fl
from distvmc.hamiltonian import LocalEnergy, grad_and_diag_hessian, local_energy
from distvmc.systems import build_system
from distvmc.wavefunctions import Wavefunction, build_wavefunction
from distvmc.wavefunctions.mlp import ACTIVATIONS

from conftest import CONFIGS


def _build(path, overrides=(), seed=3, jitter=0.3):
    """(system, wavefunction) of a config, every parameter moved by Gaussian noise
    (biases and tails away from their special starting values)."""
    cfg = config.load(path, list(overrides))
    system = build_system(cfg)
    wf = build_wavefunction(cfg, system, seed=seed)
    rng = np.random.default_rng(seed)
    for v in wf.parameters:
        v.assign(v + jitter * rng.standard_normal(v.shape))
    return system, wf


def _forward(wf, x, a):
    """(du/dx (W, ND), sum_i a_i^2 d2u/dx_i^2 (W,)) by the forward Laplacian."""
    u = fl.log_abs_of(wf, fl.coordinates(tf.constant(x), a))
    return u.jac.numpy() / a, u.lap.numpy()


def _hessian(wf, x, a):
    g, h = grad_and_diag_hessian(wf.log_abs, tf.constant(x), "hessian")
    return g.numpy(), (h.numpy() * a ** 2).sum(axis=1)


def _finite_differences(wf, x, a, h=1e-3):
    """Central differences of log|psi|: (grad (W, ND), weighted Laplacian (W,))."""
    w, n, d = x.shape
    f = lambda y: wf.log_abs(tf.constant(y)).numpy()  # noqa: E731
    f0 = f(x)
    g, lap = np.zeros((w, n * d)), np.zeros(w)
    for k in range(n * d):
        e = np.zeros(n * d)
        e[k] = h
        fp, fm = f(x + e.reshape(n, d)), f(x - e.reshape(n, d))
        g[:, k] = (fp - fm) / (2 * h)
        lap += a[k] ** 2 * (fp - 2 * f0 + fm) / h ** 2
    return g, lap


def _exact_gelu_derivatives(h):
    """d/dh and d2/dh2 of h Phi(h) from the standard library's erfc."""
    cdf = 0.5 * np.vectorize(math.erfc)(-h / math.sqrt(2.0))
    pdf = np.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)
    return cdf + h * pdf, pdf * (2.0 - h * h)


def test_activation_derivatives_are_exact():
    h = tf.constant(np.linspace(-3.0, 3.0, 13))
    for name in ACTIVATIONS:
        with tf.GradientTape() as outer:
            outer.watch(h)
            with tf.GradientTape() as inner:
                inner.watch(h)
                y = fl.activation(fl.FwdLap(h[:, None], tf.ones([1, 1, 1], h.dtype), None),
                                  name).value[:, 0]
            d1 = inner.gradient(y, h)
        d2 = outer.gradient(d1, h)
        if name == "gelu":  # TensorFlow's fused Gelu gradient is accurate to ~1e-8 only
            d1, d2 = _exact_gelu_derivatives(h.numpy())
        _, df, d2f = fl._activation_derivatives(name, h)
        np.testing.assert_allclose(df.numpy(), d1, rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(d2f.numpy(), d2, rtol=1e-12, atol=1e-14, err_msg=name)


ATOM = ["system.species=[{count: 3, statistics: boson}]",
        "potential.nuclei=[[0.0, 0.0, 0.0], [1.0, 0.5, -0.5]]",
        "potential.charges=[2.0, 1.0]"]
NUCLEUS = ["system.species=[{count: 3}]", "system.units=nuclear", "potential.type=pionless"]
FACTORS = {
    "exp_envelope, one nucleus": (["system.particles=2", "potential.charges=[2.0]"],
                                  "{type: exp_envelope}"),
    "exp_envelope, two nuclei": (ATOM, "{type: exp_envelope}"),
    "gaussian_envelope": (["potential.type=harmonic", "system.particles=2"],
                          "{type: gaussian_envelope, alpha: 0.3}"),
    "jastrow": (ATOM, "{type: jastrow}"),
    "jastrow, trainable cusp": (["potential.type=harmonic", "system.particles=3"], "{type: jastrow}"),
    **{f"mlp coords, {act}": (ATOM, f"{{type: mlp, hidden: [5, 4], activation: {act}, "
                                   "output_scale: 1.0}") for act in ACTIVATIONS},
    "mlp distances, symmetrized": (ATOM, "{type: mlp, hidden: [6, 5], inputs: distances, "
                                         "symmetrize: true, output_scale: 1.0}"),
    "mlp coords, symmetrized": (ATOM, "{type: mlp, hidden: [6], symmetrize: true, "
                                      "activation: silu, output_scale: 1.0}"),
    "mlp signed": (ATOM, "{type: mlp, hidden: [6], inputs: distances, signed: true}"),
    "deepsets": (ATOM, "{type: deepsets, phi: [5, 4], rho: [3], activation: softplus, "
                       "output_scale: 1.0}"),
    "deepsets_cm": (NUCLEUS, "{type: deepsets_cm, phi: [5, 4], rho: [3], output_scale: 1.0}"),
    "pair_net": (NUCLEUS, "{type: pair_net, hidden: [5, 4], output_scale: 1.0, power: 0.7}"),
    "cm_gaussian": (NUCLEUS, "{type: cm_gaussian}"),
}


@pytest.mark.parametrize("name", list(FACTORS))
def test_each_factor_equals_hessian_and_finite_differences(name, rng):
    overrides, item = FACTORS[name]
    system, wf = _build(None, [*overrides, f"wavefunction.factors=[{item}]"])
    assert all(fl.has_rules(f) for f in wf.factors)
    n, d = system.particles, system.dim
    x = rng.standard_normal((6, n, d)) * 1.2
    a = rng.uniform(0.5, 1.5, n * d)  # unequal mass weights: the seed's weighting is tested
    g, lap = _forward(wf, x, a)
    g_h, lap_h = _hessian(wf, x, a)
    scale = 1.0 + np.abs(lap_h)
    # the hessian method differentiates TensorFlow's Gelu kernels (accurate to ~1e-8)
    tol = 1e-7 if "gelu" in name else 1e-10
    np.testing.assert_allclose(g, g_h, rtol=tol, atol=tol * np.abs(g_h).max())
    np.testing.assert_allclose(lap / scale, lap_h / scale, rtol=0, atol=tol)
    g_fd, lap_fd = _finite_differences(wf, x, a)
    np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lap / scale, lap_fd / scale, rtol=0, atol=1e-5)


class Toy:
    """log f = sum_i [sqrt(1 + |x_i|^2) e^{-x_i1} / (2 + x_i0^2) + log(3 + x_i2)]: products,
    reciprocals, sqrt, exp and log."""

    name = "toy"

    def log_abs(self, x):
        q = tf.sqrt(1.0 + tf.reduce_sum(x * x, axis=-1)) * tf.exp(-x[..., 1])
        return tf.reduce_sum(q / (2.0 + x[..., 0] ** 2) + tf.math.log(3.0 + x[..., 2]), axis=1)

    def forward_laplacian(self, x):
        r = fl.sqrt(fl.shift(fl.reduce_sum(fl.square(x), axis=-1), 1.0))
        x0, x1, x2 = (fl.linear(x, lambda a, k=k: a[..., k]) for k in range(3))
        q = fl.multiply(r, fl.exp(fl.scale(x1, -1.0)))
        q = fl.multiply(q, fl.reciprocal(fl.shift(fl.square(x0), 2.0)))
        return fl.reduce_sum(fl.add(q, fl.log(fl.shift(x2, 3.0))), axis=-1)


def test_product_reciprocal_sqrt_exp_log_rules(rng):
    wf = Wavefunction([Toy()], (3, 3))
    x = rng.uniform(-1.0, 1.0, (5, 3, 3))
    a = rng.uniform(0.5, 1.5, 9)
    g, lap = _forward(wf, x, a)
    g_h, lap_h = _hessian(wf, x, a)
    np.testing.assert_allclose(g, g_h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lap, lap_h, rtol=1e-12, atol=1e-12)


class Plugin:
    """A legacy plug-in factor: only log_abs (no forward rules), one variable."""

    name = "plugin"

    def __init__(self):
        self.k = tf.Variable(0.3, dtype=tf.float64)

    def log_abs(self, x):
        return -self.k * tf.reduce_sum(x ** 4, axis=[1, 2])


BUNDLED = {
    "atom (helium.yaml)": ("helium.yaml", ["wavefunction.factors=[{type: exp_envelope, "
                                           "trainable: false}, {type: jastrow}, {type: mlp, "
                                           "hidden: [8, 8], inputs: distances, symmetrize: true}]"]),
    "nucleus (alpha.yaml)": ("alpha.yaml", []),
    "dot (quantum_dot_6.yaml)": ("quantum_dot_6.yaml", ["wavefunction.factors=[{type: slater, "
                                                        "orbitals: ferminet, hidden: [8], "
                                                        "pair_hidden: [4]}, {type: jastrow}]"]),
}


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_ansatz_local_energy_equals_hessian_compiled(name, rng):
    path, overrides = BUNDLED[name]
    system, wf = _build(f"{CONFIGS}/{path}", overrides, jitter=0.1)
    x = system.initial_walkers(rng, 9, 1.0)
    notes = []
    fwd = LocalEnergy(wf, system, "forward", log=notes.append)
    e_f = fwd(x)
    e_h = local_energy(wf.log_abs, system.potential, system.kinetic_prefactor, tf.constant(x),
                       "hessian")[0].numpy()  # eager: compiling it too would double the time
    np.testing.assert_allclose(e_f, e_h, rtol=1e-10, atol=1e-10 * np.abs(e_h).max())
    assert notes == []  # every factor, slater included, has forward rules
    # jit_compile: the function has an XLA (HLO) form
    assert "HloModule" in fwd._eloc.experimental_get_compiler_ir(tf.constant(x))(stage="hlo")


LI = f"{CONFIGS}/lithium.yaml"
DOT = f"{CONFIGS}/quantum_dot_6.yaml"
TWO_CENTRES = ["potential.nuclei=[[0.0, 0.0, 0.0], [1.0, 0.5, -0.5]]", "potential.charges=[2.0, 1.0]"]
FERMIONS = {
    "atom 2 up + 1 down, ferminet": (LI, "{type: slater, hidden: [6, 5], pair_hidden: [4]}"),
    "molecule, two centres, 3 determinants, silu": (
        None, ["system.species=[{count: 2, spin: up}, {count: 1, spin: down}]", *TWO_CENTRES],
        "{type: slater, hidden: [5, 5, 4], pair_hidden: [3, 3], determinants: 3, "
        "activation: silu}"),
    "2D dot 3 + 3, 2 determinants": (DOT, "{type: slater, hidden: [6, 6], pair_hidden: [4], "
                                          "determinants: 2}"),
    "H2, 1 x 1 blocks, 2 determinants": (
        None, ["system.species=[{count: 1, spin: up}, {count: 1, spin: down}]", *TWO_CENTRES],
        "{type: slater, hidden: [5], pair_hidden: [], determinants: 2}"),
    "envelope orbitals, atom, 2 determinants": (LI, "{type: slater, orbitals: envelope, "
                                                    "determinants: 2}"),
    "envelope orbitals, 2D dot, degree 2": (DOT, "{type: slater, orbitals: envelope, degree: 2}"),
}


def _fermions(name):
    path, *overrides, item = FERMIONS[name]
    overrides = overrides[0] if overrides else []
    return _build(path, [*overrides, f"wavefunction.factors=[{item}]"], jitter=0.1)


@pytest.mark.parametrize("name", list(FERMIONS))
def test_slater_factor_equals_hessian_and_finite_differences(name, rng):
    system, wf = _fermions(name)
    assert fl.without_rules(wf) == []
    n, d = system.particles, system.dim
    x = rng.standard_normal((5, n, d)) * 1.2
    a = rng.uniform(0.5, 1.5, n * d)
    g, lap = _forward(wf, x, a)
    g_h, lap_h = _hessian(wf, x, a)
    scale = 1.0 + np.abs(lap_h)
    np.testing.assert_allclose(g, g_h, rtol=1e-10, atol=1e-10 * np.abs(g_h).max())
    np.testing.assert_allclose(lap / scale, lap_h / scale, rtol=0, atol=1e-10)
    g_fd, lap_fd = _finite_differences(wf, x, a, h=2e-4)  # the orbitals' cusps: a small step
    np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lap / scale, lap_fd / scale, rtol=0, atol=1e-5)


@pytest.mark.parametrize("orbitals", ["ferminet", "envelope"])
def test_slater_next_to_a_node_is_finite_and_equals_hessian(orbitals, rng):
    """Two same-spin electrons 1e-3 .. 1e-7 apart: the orbital matrix is nearly singular
    (condition ~ 1/distance), log|psi| ~ log(distance), gradient ~ 1/distance."""
    system, wf = _build(DOT, [f"wavefunction.factors=[{{type: slater, orbitals: {orbitals}, "
                              "hidden: [6, 6], pair_hidden: [4], determinants: 2}]"], jitter=0.1)
    x = np.repeat(rng.standard_normal((1, 6, 2)), 5, axis=0)
    gaps = np.array([1e-3, 1e-4, 1e-5, 1e-6, 1e-7])
    x[:, 1] = x[:, 0] + gaps[:, None] * np.array([0.6, 0.8])
    a = np.full(12, np.sqrt(0.5))
    g, lap = _forward(wf, x, a)
    g_h, lap_h = _hessian(wf, x, a)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(lap))
    assert np.all(np.abs(lap) > 0.1 / gaps ** 2)  # -|grad|^2 ~ -1/distance^2 dominates
    # the matrix entries carry rounding errors ~1e-16 that the two methods make
    # differently (matmul vs tensordot); near the node they are amplified by the
    # condition number ~ 1/distance in both: agreement to ~1e-16 / distance
    tol = 1e-14 / gaps
    np.testing.assert_array_less(np.abs(g - g_h).max(axis=1) / np.abs(g_h).max(axis=1), tol)
    np.testing.assert_array_less(np.abs(lap - lap_h) / np.abs(lap_h), tol)


SMALL = {
    "nucleus": ("alpha.yaml", ["wavefunction.factors=[{type: deepsets_cm, phi: [6, 4], rho: [4]}, "
                               "{type: pair_net, hidden: [5]}, {type: cm_gaussian}]"]),
    "atom": ("helium.yaml", ["wavefunction.factors=[{type: exp_envelope}, {type: jastrow, "
                             "cusp: 0.3}, {type: mlp, hidden: [6], inputs: distances, symmetrize: "
                             "true}, {type: mlp, hidden: [5], activation: silu, signed: true}]"]),
    "dot": ("quantum_dot_6.yaml", ["wavefunction.factors=[{type: slater, hidden: [6, 5], "
                                   "pair_hidden: [3], determinants: 2}, {type: jastrow}]"]),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_parameter_gradients_through_forward_equal_hessian(name, rng):
    path, overrides = SMALL[name]
    system, wf = _build(f"{CONFIGS}/{path}", overrides, jitter=0.1)
    x = tf.constant(system.initial_walkers(rng, 8, 1.0))
    grads = {}
    for method, target in [("forward", wf), ("hessian", wf.log_abs)]:
        with tf.GradientTape() as tape:
            e = local_energy(target, system.potential, system.kinetic_prefactor, x, method)[0]
            loss = tf.reduce_mean(e)
        g = tape.gradient(loss, wf.parameters, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads[method] = np.concatenate([t.numpy().ravel() for t in g])
    ref = grads["hessian"]
    assert np.mean(ref != 0) > 0.9  # all but the output biases (a constant in log psi) matter
    np.testing.assert_allclose(grads["forward"], ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


def test_plugin_factor_falls_back_is_logged_and_auto_chooses(rng):
    system, wf = _build(None, ATOM + ["wavefunction.factors=[{type: exp_envelope}, "
                                      "{type: jastrow}]"])
    wf = Wavefunction([*wf.factors, Plugin()], wf.config_shape)
    x = rng.standard_normal((5, 3, 3))
    notes = []
    e_auto = LocalEnergy(wf, system, "auto", log=notes.append)
    e = e_auto(x)
    np.testing.assert_allclose(e, LocalEnergy(wf, system, "hessian")(x), rtol=1e-10)
    assert notes[0] == "laplacian forward: factor 'plugin' has no forward rules, using hessian for it"
    assert len(notes) == 2 and notes[1].startswith(f"laplacian auto: {e_auto.method} (hessian ")
    assert e_auto.method in ("hessian", "forward")


def test_projected_excited_state_equals_hessian(rng):
    from distvmc.wavefunctions.projected import ProjectedWavefunction

    items = "wavefunction.factors=[{type: gaussian_envelope}, {type: mlp, hidden: [5], signed: true}]"
    system, lower = _build(None, ["potential.type=harmonic", "system.particles=2", items], seed=1)
    _, trial = _build(None, ["potential.type=harmonic", "system.particles=2", items], seed=2)
    wf = ProjectedWavefunction(trial, [lower], [0.4])
    x = rng.standard_normal((6, 2, 3))
    a = np.full(6, 0.8)
    g, lap = _forward(wf, x, a)
    g_h, lap_h = _hessian(wf, x, a)
    np.testing.assert_allclose(g, g_h, rtol=1e-10, atol=1e-10 * np.abs(g_h).max())
    np.testing.assert_allclose(lap, lap_h, rtol=1e-10, atol=1e-10 * np.abs(lap_h).max())
    notes = []
    e = LocalEnergy(wf, system, "forward", log=notes.append)(x)  # XLA
    np.testing.assert_allclose(e, LocalEnergy(wf, system, "hessian")(x), rtol=1e-10)
    assert notes == []
