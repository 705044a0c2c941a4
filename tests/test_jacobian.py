"""The per-sample log-derivatives O (distvmc.optimizers.jacobian).

Facts checked here:
- the outer-product route equals the vectorized_map route to 1e-10 (relative to
  max |O|) for every bundled kind of ansatz (MLPs plain, symmetrized and signed,
  envelopes, Jastrow, FermiNet and envelope-orbital Slater determinants with one or
  more determinants, deepsets_cm, pair_net, cm_gaussian, the projected excited
  state with a frozen lower state), with every parameter captured (no per-sample
  gradient left over), and equals central finite differences of log|psi|;
- the self-check of ``auto`` falls back to vectorized_map, logs one line, and still
  returns the right O, when a layer is called on a non-sample-major layout, when a
  layer's weights are also read outside it, and when the capture is made wrong;
- parameters outside captured layers (a plug-in factor) take the general route;
- chunking, tracing once, the methods' names;
- ``tensor()`` (O as a float64 tf.Tensor) equals ``__call__`` to 1e-12 on every case
  above, for both routes and in chunks (bitwise for vmap), puts the general-route
  columns interleaved between captured ones in place, decides ``auto`` by itself and
  falls back like ``__call__``.
"""

import numpy as np
import pytest
import tensorflow as tf

from distvmc import config
from distvmc.optimizers import jacobian
from distvmc.optimizers.jacobian import LogDerivatives
from distvmc.systems import build_system
from distvmc.wavefunctions import Module, Wavefunction, build_wavefunction
from distvmc.wavefunctions.capture import linear
from distvmc.wavefunctions.mlp import Dense
from distvmc.wavefunctions.projected import ProjectedWavefunction

from conftest import CONFIGS


def _build(path, overrides=(), seed=3, jitter=0.1):
    """(system, wavefunction, cfg) of a config file (None: the defaults), every parameter
    moved by Gaussian noise."""
    cfg = config.load(path and f"{CONFIGS}/{path}", list(overrides))
    system = build_system(cfg)
    wf = build_wavefunction(cfg, system, seed=seed)
    rng = np.random.default_rng(seed)
    for v in wf.parameters:
        v.assign(v + jitter * rng.standard_normal(v.shape))
    return system, wf, cfg


def _walkers(system, cfg, n=11, seed=0):
    return system.initial_walkers(np.random.default_rng(seed), n, cfg.sampler.init_width)


def _assert_same(o, ref, tol=1e-10):
    assert o.shape == ref.shape and o.dtype == np.float64
    np.testing.assert_allclose(o, ref, rtol=0, atol=tol * np.abs(ref).max())


SMALL_FERMINET = "hidden: [8, 8], pair_hidden: [4]"
CASES = {
    "helium": ("helium.yaml", []),
    "hydrogen": ("hydrogen.yaml", []),
    "harmonic_oscillator": ("harmonic_oscillator.yaml", []),
    "harmonic_oscillator_3d": ("harmonic_oscillator_3d.yaml", []),
    "harmonic_oscillator_excited (signed mlp)": ("harmonic_oscillator_excited.yaml", []),
    "hydrogen_excited (signed mlp, distances)": ("hydrogen_excited.yaml", []),
    "lithium (ferminet slater, jastrow)": ("lithium.yaml", []),
    "quantum_dot_2": ("quantum_dot_2.yaml", []),
    "quantum_dot_6, small": ("quantum_dot_6.yaml", [
        f"wavefunction.factors=[{{type: slater, orbitals: ferminet, {SMALL_FERMINET}}}, "
        "{type: jastrow}]"]),
    "beryllium, small, 2 determinants": ("beryllium.yaml", [
        f"wavefunction.factors=[{{type: slater, orbitals: ferminet, {SMALL_FERMINET}, "
        "determinants: 2}, {type: jastrow}]"]),
    "lih, small (two nuclei, 2 determinants)": ("lih.yaml", [
        f"wavefunction.factors=[{{type: slater, orbitals: ferminet, {SMALL_FERMINET}, "
        "determinants: 2}, {type: jastrow}]"]),
    "lithium, envelope orbitals, 2 determinants": ("lithium.yaml", [
        "wavefunction.factors=[{type: slater, orbitals: envelope, determinants: 2}, "
        "{type: jastrow}]"]),
    "dot, gaussian envelope orbitals": ("quantum_dot_2.yaml", [
        "wavefunction.factors=[{type: slater, orbitals: envelope, degree: 1}, {type: jastrow}]"]),
    "deuteron (pair_net)": ("deuteron.yaml", []),
    "alpha (deepsets_cm, pair_net, cm_gaussian)": ("alpha.yaml", []),
    "deepsets, exp_envelope with two nuclei, 3-particle symmetrized mlp": (None, [
        "system.species=[{count: 3, statistics: boson}]",
        "potential.nuclei=[[0.0, 0.0, 0.0], [1.0, 0.5, -0.5]]", "potential.charges=[2.0, 1.0]",
        "wavefunction.factors=[{type: deepsets, phi: [5, 4], rho: [3]}, {type: exp_envelope}, "
        "{type: jastrow}, {type: mlp, hidden: [4], inputs: distances, symmetrize: true}]"]),
    "trap: jastrow with a trainable cusp, gaussian envelope": (None, [
        "potential.type=harmonic", "system.particles=3",
        "wavefunction.factors=[{type: jastrow}, {type: gaussian_envelope}, "
        "{type: mlp, hidden: [4], symmetrize: true}]"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_outer_equals_vectorized_map_for_bundled_ansatzes(name):
    path, overrides = CASES[name]
    system, wf, cfg = _build(path, overrides)
    x = _walkers(system, cfg)
    notes = []
    fast = LogDerivatives(wf, log=notes.append)
    o = fast(x)
    assert fast.method == "outer" and fast.fallback is None and notes == []
    assert fast._outer.rest == []  # every parameter in a captured layer or per_sample read
    _assert_same(o, LogDerivatives(wf, method="vmap")(x))


@pytest.mark.parametrize("name", ["helium", "lithium (ferminet slater, jastrow)",
                                  "alpha (deepsets_cm, pair_net, cm_gaussian)",
                                  "beryllium, small, 2 determinants"])
def test_outer_equals_finite_differences(name):
    path, overrides = CASES[name]
    system, wf, cfg = _build(path, overrides)
    x = _walkers(system, cfg, n=8)
    o = LogDerivatives(wf, method="outer")(x)
    # walkers next to a node (|O| in the thousands) make differences inaccurate: skip them
    keep = np.abs(o).max(axis=1) < 100.0
    assert keep.sum() >= 4
    x, o = x[keep], o[keep]
    theta = wf.get_flat()
    rng = np.random.default_rng(1)
    # a few columns of every variable (weights, biases, envelope and Jastrow parameters)
    cols, k = [], 0
    for v in wf.parameters:
        n = int(np.prod(v.shape))
        cols += list(k + rng.choice(n, size=min(n, 2), replace=False))
        k += n
    h = 1e-5

    def at(c, step):
        t = theta.copy()
        t[c] += step
        wf.set_flat(t)
        return wf.log_abs(tf.constant(x)).numpy()

    for c in cols:  # five-point central differences (error O(h^4))
        fd = (8 * (at(c, h) - at(c, -h)) - (at(c, 2 * h) - at(c, -2 * h))) / (12 * h)
        np.testing.assert_allclose(o[:, c], fd, rtol=1e-6, atol=1e-6, err_msg=f"column {c}")
    wf.set_flat(theta)


def test_projected_excited_state_with_frozen_lower_state():
    system, trial, cfg = _build("hydrogen_excited.yaml", seed=1)
    _, lower, _ = _build("hydrogen_excited.yaml", seed=2)
    wf = ProjectedWavefunction(trial, [lower], [0.4])
    x = _walkers(system, cfg)
    fast = LogDerivatives(wf)
    o = fast(x)
    assert fast.method == "outer" and fast._outer.rest == []
    assert o.shape == (len(x), trial.n_parameters + 1)  # the lower state's are not parameters
    _assert_same(o, LogDerivatives(wf, method="vmap")(x))


# -- fallbacks --------------------------------------------------------------------------

class PermutationMajorMLP(Module):
    """log f = sum over the two particle orders of an MLP of the coordinates, the orders
    stacked order-major (rows p * W + w): a layout the capture reads wrongly."""

    def __init__(self, rng):
        self.l1 = Dense(6, 5, rng, tf.float64)
        self.l2 = Dense(5, 1, rng, tf.float64, scale=0.5)

    def log_abs(self, x):
        xp = tf.concat([x, x[:, ::-1]], axis=0)  # (2 W, 2, 3), order-major
        out = self.l2(tf.tanh(self.l1(tf.reshape(xp, [-1, 6]))))[:, 0]
        return tf.reduce_sum(tf.reshape(out, [2, -1]), axis=0)


class WeightsReadTwice(Module):
    """An MLP plus a term reading the first layer's weights directly (not through linear)."""

    def __init__(self, rng):
        self.l1 = Dense(6, 4, rng, tf.float64)
        self.l2 = Dense(4, 1, rng, tf.float64)

    def log_abs(self, x):
        h = tf.reshape(x, [-1, 6])
        return (self.l2(tf.tanh(self.l1(h)))[:, 0]
                + tf.reduce_sum(tf.matmul(h * h, self.l1.w), axis=1))


class Plugin(Module):
    """A legacy plug-in: a linear layer plus a variable read directly (general route)."""

    def __init__(self, rng):
        self.layer = Dense(6, 3, rng, tf.float64)
        self.k = tf.Variable(0.3, dtype=tf.float64)

    def log_abs(self, x):
        h = tf.reshape(x, [-1, 6])
        return -self.k * tf.reduce_sum(x ** 4, axis=[1, 2]) + tf.reduce_sum(
            tf.tanh(self.layer(h)), axis=1)


def _plugin_wavefunction(factor_class):
    return Wavefunction([factor_class(np.random.default_rng(0))], (2, 3))


@pytest.mark.parametrize("factor_class", [PermutationMajorMLP, WeightsReadTwice])
def test_self_check_falls_back_and_stays_correct(factor_class, rng):
    wf = _plugin_wavefunction(factor_class)
    x = rng.standard_normal((13, 2, 3))
    ref = LogDerivatives(wf, method="vmap")(x)
    wrong = LogDerivatives(wf, method="outer")(x)  # unchecked: the capture is wrong here
    assert np.abs(wrong - ref).max() > 1e-3 * np.abs(ref).max()
    notes = []
    auto = LogDerivatives(wf, log=notes.append)
    _assert_same(auto(x), ref)
    assert auto.method == "vmap" and auto.fallback is not None
    assert len(notes) == 1 and "vectorized_map" in notes[0] and "self-check" in notes[0]
    _assert_same(auto(x[:4]), ref[:4])  # later calls: still vmap, no new note
    assert len(notes) == 1


def test_self_check_catches_a_wrong_capture(monkeypatch, rng):
    """A capture producing wrong values (its x scaled by 1.5) is caught, helium's O stays right."""
    system, wf, cfg = _build("helium.yaml")
    x = _walkers(system, cfg)
    ref = LogDerivatives(wf, method="vmap")(x)
    from distvmc.wavefunctions import capture

    record = capture.Recording.record
    monkeypatch.setattr(capture.Recording, "record",
                        lambda self, xi, w, b, y: record(self, 1.5 * xi, w, b, y))
    notes = []
    auto = LogDerivatives(wf, log=notes.append)
    _assert_same(auto(x), ref)
    assert auto.method == "vmap" and len(notes) == 1 and "self-check" in notes[0]


def test_plugin_variable_takes_the_general_route(rng):
    wf = _plugin_wavefunction(Plugin)
    x = rng.standard_normal((9, 2, 3))
    auto = LogDerivatives(wf)
    o = auto(x)
    assert auto.method == "outer"
    assert [v.name for v in auto._outer.rest] == [wf.factors[0].k.name]
    _assert_same(o, LogDerivatives(wf, method="vmap")(x))


class Quartic(Module):
    """A legacy plug-in with one variable read directly: nothing to capture."""

    def __init__(self, rng):
        self.k = tf.Variable(0.3, dtype=tf.float64)

    def log_abs(self, x):
        return -self.k * tf.reduce_sum(x ** 4, axis=[1, 2])


def test_nothing_captured_uses_vectorized_map(rng):
    wf = _plugin_wavefunction(Quartic)
    x = rng.standard_normal((5, 2, 3))
    notes = []
    auto = LogDerivatives(wf, log=notes.append)
    _assert_same(auto(x), LogDerivatives(wf, method="vmap")(x))
    assert auto.method == "vmap" and auto.fallback is None and notes == []


def test_envelope_alone_is_captured(rng):
    system, wf, cfg = _build(None, ["wavefunction.factors=[{type: gaussian_envelope}]"])
    x = rng.standard_normal((5,) + wf.config_shape)
    auto = LogDerivatives(wf)
    _assert_same(auto(x), LogDerivatives(wf, method="vmap")(x))
    assert auto.method == "outer"  # log_alpha is a per_sample read


# -- the call contract ------------------------------------------------------------------

def test_chunks_trace_once_and_methods(monkeypatch):
    system, wf, cfg = _build("alpha.yaml")
    x = _walkers(system, cfg, n=23)
    ref = LogDerivatives(wf, method="vmap")(x)
    ld = LogDerivatives(wf, chunk_size=5)
    for n in (23, 7, 23):
        o = ld(x[:n])
        assert o.flags.c_contiguous and o.flags.writeable
        _assert_same(o, ref[:n])
    assert ld._outer.fn.experimental_get_tracing_count() == 1
    monkeypatch.setattr(jacobian, "CHUNK_NUMBERS", 3 * wf.n_parameters)  # 3 rows per call
    _assert_same(LogDerivatives(wf)(x), ref)
    with pytest.raises(ValueError, match="vmap"):
        LogDerivatives(wf, method="pfor")


def test_float32_wavefunction():
    system, wf, cfg = _build("helium.yaml", ["precision=float32"])
    x = _walkers(system, cfg).astype(np.float32)
    auto = LogDerivatives(wf)
    o = auto(x)
    assert o.dtype == np.float64 and auto.method == "outer"
    _assert_same(o, LogDerivatives(wf, method="vmap")(x), tol=1e-4)
    _assert_same_tensor(auto.tensor(x), o, tol=1e-6)  # float64, cast from float32


# -- tensor(): O as a device-resident tf.Tensor -----------------------------------------

def _assert_same_tensor(t, ref, tol=1e-12):
    assert isinstance(t, tf.Tensor) and t.dtype == tf.float64
    assert tuple(t.shape) == ref.shape
    _assert_same(t.numpy(), ref, tol=tol)


def _check_tensor_routes(wf, x, chunk_size=3):
    """tensor(x) against __call__(x) for both routes, chunks smaller than the batch."""
    outer = LogDerivatives(wf, chunk_size=chunk_size, method="outer")
    _assert_same_tensor(outer.tensor(x), outer(x))
    vmap = LogDerivatives(wf, chunk_size=chunk_size, method="vmap")
    t = vmap.tensor(x)
    _assert_same_tensor(t, vmap(x))
    np.testing.assert_array_equal(t.numpy(), vmap(x))  # the same compiled function: bitwise
    assert outer.method == "outer" and vmap.method == "vmap"
    return outer


@pytest.mark.parametrize("name", list(CASES))
def test_tensor_equals_call_for_bundled_ansatzes(name):
    path, overrides = CASES[name]
    system, wf, cfg = _build(path, overrides)
    _check_tensor_routes(wf, _walkers(system, cfg, n=8))


def test_tensor_projected_excited_state():
    system, trial, cfg = _build("hydrogen_excited.yaml", seed=1)
    _, lower, _ = _build("hydrogen_excited.yaml", seed=2)
    wf = ProjectedWavefunction(trial, [lower], [0.4])
    _check_tensor_routes(wf, _walkers(system, cfg, n=8))


def test_tensor_puts_interleaved_general_route_columns_in_place(rng):
    """Two plug-ins: their directly read k's (general route, one "rest" block at the end
    of the plan) sit before and between the captured layers' columns."""
    wf = Wavefunction([Plugin(np.random.default_rng(0)), Plugin(np.random.default_rng(1))],
                      (2, 3))
    x = rng.standard_normal((8, 2, 3))
    outer = _check_tensor_routes(wf, x)
    plan, columns = outer._outer.plan, outer._outer.columns
    assert plan[-1][0] == "rest" and len(plan[-1][1]) == 2
    starts = [columns[id(v)][0] for kind, v in plan[:-1]]
    between = [columns[id(v)][0] for v in plan[-1][1]]
    assert any(min(starts) < a < max(starts) for a in between)  # really interleaved
    assert between[0] == 0  # and one before all captured columns
    ref = LogDerivatives(wf, method="vmap")(x)
    _assert_same(outer.tensor(x).numpy(), ref)
    auto = LogDerivatives(wf, chunk_size=3)  # auto decides on tensor() alone
    _assert_same_tensor(auto.tensor(x), ref, tol=1e-10)
    assert auto.method == "outer" and auto.fallback is None

    def host(*_):
        raise AssertionError("tensor() took the host route")

    auto._outer.fill = host  # after the self-check: no NumPy assembly, no vmap
    auto._jac = host
    _assert_same_tensor(auto.tensor(x[:2]), ref[:2], tol=1e-10)  # a single chunk
    assert auto._outer.fn_tensor.experimental_get_tracing_count() == 1


def test_tensor_self_check_and_fallback(rng):
    wf = _plugin_wavefunction(PermutationMajorMLP)
    x = rng.standard_normal((7, 2, 3))
    ref = LogDerivatives(wf, method="vmap")(x)
    notes = []
    auto = LogDerivatives(wf, chunk_size=3, log=notes.append)
    _assert_same_tensor(auto.tensor(x), ref, tol=1e-10)
    assert auto.method == "vmap" and len(notes) == 1 and "self-check" in notes[0]

    system, wf, cfg = _build("helium.yaml")
    x = _walkers(system, cfg, n=7)
    ref = LogDerivatives(wf, method="vmap")(x)
    notes = []
    auto = LogDerivatives(wf, chunk_size=3, log=notes.append)
    _assert_same_tensor(auto.tensor(x[:3]), ref[:3], tol=1e-10)
    assert auto.method == "outer"

    def fails(_):
        raise tf.errors.InvalidArgumentError(None, None, "a layout that stops reshaping")

    auto._outer.fn_tensor = fails  # as __call__: fall back to vmap for good, one note
    _assert_same_tensor(auto.tensor(x), ref, tol=1e-10)
    assert auto.method == "vmap" and len(notes) == 1 and "stops reshaping" in notes[0]
    assert tuple(auto.tensor(np.zeros((0, 2, 3))).shape) == (0, wf.n_parameters)
