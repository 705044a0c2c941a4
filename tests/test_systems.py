"""Systems: particle species, pair cusps, the Coulomb potential, starting walkers, plug-ins."""

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from distvmc import config
from distvmc.config import ConfigError

from conftest import CONFIGS, cli
from test_wavefunctions import antisymmetric_factor  # noqa: F401  (fixture)

LITHIUM = {  # the configs/-style lithium atom with a bosonic (MLP x envelope) ansatz
    "name": "lithium",
    "reference_energy": -7.47806032,
    "system": {"particles": 3, "dim": 3},
    "potential": {"type": "coulomb", "nuclei": [[0.0, 0.0, 0.0]], "charges": [3.0]},
    "wavefunction": {"factors": [{"type": "mlp", "hidden": [32, 32]},
                                 {"type": "exp_envelope", "trainable": True}]},
}


def _system(overrides):
    from distvmc.systems import build_system
    return build_system(config.load(None, overrides))


# ---------------------------------------------------------------------------
# Species in the config (no TensorFlow)
# ---------------------------------------------------------------------------


def test_legacy_three_electrons_are_two_up_one_down_and_resolve_to_themselves(
        antisymmetric_factor):
    c = config.load(None, ["system.particles=3", "potential.charges=[3]",
                           "wavefunction.factors=[{type: exp_envelope}, {type: vandermonde}]"])
    groups = [(g.count, g.spin, g.statistics, g.charge) for g in c.system.species]
    assert groups == [(2, "up", "fermion", -1.0), (1, "down", "fermion", -1.0)]
    assert c.system.particles == 3 and c.system.mass is None
    again = config.validate(c.to_dict())
    assert again.to_dict() == c.to_dict()
    # and once more through YAML, as config.yaml in a run directory
    assert config.validate(yaml.safe_load(yaml.safe_dump(c.to_dict()))).to_dict() == c.to_dict()


def test_legacy_particles_without_coulomb_are_spinless_bosons():
    c = config.load(None, ["system.particles=4", "system.mass=2.0", "potential.type=harmonic",
                           "wavefunction.factors=[{type: gaussian_envelope}]"])
    assert [(g.count, g.mass, g.spin, g.statistics) for g in c.system.species] == [
        (4, 2.0, None, "boson")]
    # per-particle masses: one group per run of equal masses
    c = config.load(None, ["system.particles=3", "system.mass=[1, 1, 4]", "potential.type=harmonic",
                           "wavefunction.factors=[{type: gaussian_envelope}]"])
    assert [(g.count, g.mass) for g in c.system.species] == [(2, 1.0), (1, 4.0)]
    assert config.validate(c.to_dict()).to_dict() == c.to_dict()


def test_species_statistics_default_from_spin():
    c = config.load(None, ["system.species=[{count: 1, spin: up}, {count: 1, spin: down}, "
                           "{count: 1, mass: 1836.15, charge: 1, name: proton}]",
                           "wavefunction.factors=[{type: exp_envelope}]"])
    assert [g.statistics for g in c.system.species] == ["fermion", "fermion", "boson"]
    assert c.system.particles == 3


@pytest.mark.parametrize("overrides, fragment", [
    (["system.particles=3", "system.species=[{count: 1, spin: up}, {count: 1, spin: down}]"],
     "system.particles = 3 but system.species holds 1 + 1 = 2 particles"),
    (["system.mass=2.0", "system.species=[{count: 1, spin: up}]"],
     "system.mass = 2.0 contradicts the masses in system.species"),
    (["system.species=[{spin: up}]"], "system.species.0.count: required"),
    (["system.species=[{count: 1, spin: sideways}]"],
     "system.species.0.spin = 'sideways': must be one of up, down, null"),
    (["system.species=[{count: 1, colour: red}]"], "system.species.0.colour: unknown key"),
])
def test_species_errors_are_one_line(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        config.load(None, overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_lithium_with_a_bosonic_ansatz_is_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        config.validate(LITHIUM)
    msg = str(e.value)
    assert "\n" not in msg
    assert "system.species.0 (electrons up) holds 2 identical fermions" in msg
    assert "count = 2" in msg and "antisymmetric (determinant)" in msg


def test_two_spinless_fermions_are_refused_but_helium_is_fine():
    with pytest.raises(ConfigError, match="holds 2 identical fermions"):
        config.load(None, ["potential.type=harmonic", "system.dim=1",
                           "system.species=[{count: 2, statistics: fermion}]",
                           "wavefunction.factors=[{type: gaussian_envelope}]"])
    he = config.load(f"{CONFIGS}/helium.yaml")  # one up, one down: a symmetric spatial psi is right
    assert [(g.count, g.spin) for g in he.system.species] == [(1, "up"), (1, "down")]


def test_lithium_through_the_cli_is_one_line_exit_2_without_tensorflow(tmp_path):
    path = tmp_path / "LI.yaml"
    path.write_text(yaml.safe_dump(LITHIUM))
    r = cli("run", str(path), "--out", str(tmp_path / "run"), timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "antisymmetric (determinant)" in lines[0], r.stderr
    code = ("import sys; from distvmc import cli; rc = cli.main(['run', sys.argv[1]]); "
            "print('tensorflow' in sys.modules, rc)")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip() == "False 2", r.stdout + r.stderr


def test_name_defaults_to_the_file_stem_and_reference_energy_to_null(tmp_path):
    p = tmp_path / "my_dot.yaml"
    p.write_text(yaml.safe_dump({"potential": {"type": "harmonic"}, "system": {"dim": 2},
                                 "wavefunction": {"factors": [{"type": "gaussian_envelope"}]}}))
    c = config.load(str(p))
    assert c.name == "my_dot" and c.reference_energy is None
    assert config.load(str(p), ["name=other"]).name == "other"
    assert config.load(None).name == "hydrogen"  # the default job is hydrogen


def test_user_potential_path_is_resolved_against_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump({"potential": {"type": "user", "function": "mypot:v"},
                                 "wavefunction": {"factors": [{"type": "gaussian_envelope"}]}}))
    assert config.load(str(p)).potential.path == str(tmp_path)
    c = config.load(str(p), ["potential.path=sub"])
    assert c.potential.path == str(tmp_path / "sub")
    # the resolved config keeps the absolute path
    assert config.validate(c.to_dict()).potential.path == str(tmp_path / "sub")


# ---------------------------------------------------------------------------
# Built systems (TensorFlow)
# ---------------------------------------------------------------------------


def test_pair_cusps_follow_spins_in_3d(antisymmetric_factor):
    # pairs (0,1), (0,2), (1,2) of up, up, down electrons: 1/4 parallel, 1/2 opposite spins
    s3 = _system(["system.particles=3", "potential.charges=[3]",
                  "wavefunction.factors=[{type: exp_envelope}, {type: vandermonde}]"])
    np.testing.assert_allclose(s3.pair_cusp, [1 / 4, 1 / 2, 1 / 2])
    np.testing.assert_array_equal(s3.spins, [1, 1, -1])
    np.testing.assert_array_equal(s3.groups, [0, 0, 1])
    np.testing.assert_array_equal(s3.particle_charges, [-1, -1, -1])


def test_pair_cusps_2d_and_reduced_mass(antisymmetric_factor):
    # 2D quantum dot, 2 up + 1 down (with a test determinant): 1/3 parallel, 1 opposite spins
    s2 = _system(["system.dim=2", "potential.type=harmonic", "potential.interaction=coulomb",
                  "system.species=[{count: 2, spin: up}, {count: 1, spin: down}]",
                  "wavefunction.factors=[{type: gaussian_envelope}, {type: vandermonde}]"])
    np.testing.assert_allclose(s2.pair_cusp, [1 / 3, 1.0, 1.0])
    # Two distinguishable particles of masses 1 and 4, charges -1 and -1 (3D):
    # mu = 4/5, a = 2 mu q1 q2 / (D - 1) = 0.8; an electron and a positron: a = -1/2.
    s = _system(["system.species=[{count: 1}, {count: 1, mass: 4.0}]",
                 "wavefunction.factors=[{type: exp_envelope}]"])
    np.testing.assert_allclose(s.pair_cusp, [0.8])
    np.testing.assert_allclose(s.kinetic_prefactor, [0.5, 0.125])
    s = _system(["system.species=[{count: 1, spin: up}, {count: 1, charge: 1.0, name: positron}]",
                 "wavefunction.factors=[{type: exp_envelope}]"])
    np.testing.assert_allclose(s.pair_cusp, [-0.5])
    # harmonic coupling replaces q_i q_j: Hooke's atom pair with coupling 2 -> a = 2 * 1/2 * 2 / 2
    s = _system(["system.particles=2", "potential.type=harmonic", "potential.interaction=coulomb",
                 "potential.coupling=2.0", "wavefunction.factors=[{type: gaussian_envelope}]"])
    np.testing.assert_allclose(s.pair_cusp, [1.0])


def test_coulomb_potential_from_species_matches_the_electron_formula():
    import tensorflow as tf
    # helium-like: Z = 2 at the origin, electrons at (1, 0, 0) and (0, 2, 0):
    # V = -2/1 - 2/2 + 1/sqrt(5)
    s = _system(["system.particles=2", "potential.charges=[2]",
                 "wavefunction.factors=[{type: exp_envelope}]"])
    x = tf.constant([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]], tf.float64)
    np.testing.assert_allclose(s.potential(x).numpy(), [-3.0 + 1 / np.sqrt(5)], rtol=1e-14)
    # H2 at R = 1.4: nuclei (0, 0, +-0.7), electrons at (0, 0, 0.7 + 1) and (1, 0, -0.7)
    s = _system(["system.particles=2", "potential.nuclei=[[0, 0, 0.7], [0, 0, -0.7]]",
                 "potential.charges=[1, 1]", "wavefunction.factors=[{type: exp_envelope}]"])
    x = tf.constant([[[0.0, 0.0, 1.7], [1.0, 0.0, -0.7]]], tf.float64)
    r11, r12 = 1.0, 2.4  # electron 1 to nuclei 1 and 2
    r21, r22 = np.sqrt(1 + 1.4 ** 2), 1.0
    r_ee = np.sqrt(1 + 2.4 ** 2)
    want = -(1 / r11 + 1 / r12 + 1 / r21 + 1 / r22) + 1 / r_ee + 1 / 1.4
    np.testing.assert_allclose(s.potential(x).numpy(), [want], rtol=1e-14)
    # an electron and a positron around a proton: -1/r_e + 1/r_p - 1/r_ep
    s = _system(["system.species=[{count: 1, spin: up}, {count: 1, charge: 1.0}]",
                 "wavefunction.factors=[{type: exp_envelope}]"])
    x = tf.constant([[[2.0, 0.0, 0.0], [0.0, 0.0, 4.0]]], tf.float64)
    np.testing.assert_allclose(s.potential(x).numpy(), [-0.5 + 0.25 - 1 / np.sqrt(20)], rtol=1e-14)


def test_initial_walkers_put_both_spins_on_every_nucleus(antisymmetric_factor):
    rng = np.random.default_rng(0)
    # H2: one up, one down electron; each proton gets one
    s = _system(["system.particles=2", "potential.nuclei=[[0, 0, 0.7], [0, 0, -0.7]]",
                 "potential.charges=[1, 1]", "wavefunction.factors=[{type: exp_envelope}]"])
    np.testing.assert_allclose(s.home_positions(), [[0, 0, 0.7], [0, 0, -0.7]])
    x = s.initial_walkers(rng, 500, 0.1)
    assert x.shape == (500, 2, 3)
    np.testing.assert_allclose(x.mean(axis=0), s.home_positions(), atol=0.02)
    assert 0.09 < (x - s.home_positions()).std() < 0.11
    # two helium nuclei, 2 up + 2 down: each nucleus gets one of each spin
    s = _system(["system.particles=4", "potential.nuclei=[[0, 0, 2], [0, 0, -2]]",
                 "potential.charges=[2, 2]",
                 "wavefunction.factors=[{type: exp_envelope}, {type: vandermonde}]"])
    home = s.home_positions()[:, 2]
    for nucleus in (2.0, -2.0):
        assert sorted(s.spins[home == nucleus]) == [-1, 1]


def test_wrong_shape_user_potential_is_a_one_line_config_error(tmp_path):
    from distvmc.systems import build_system
    (tmp_path / "badpot.py").write_text(
        "import tensorflow as tf\n"
        "def per_particle(x):\n"
        "    return tf.reduce_sum(x * x, axis=2)\n")
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"system": {"particles": 2, "dim": 1},
                                 "potential": {"type": "user", "function": "badpot:per_particle"},
                                 "wavefunction": {"factors": [{"type": "gaussian_envelope"}]}}))
    cfg = config.load(str(p))
    with pytest.raises(ConfigError) as e:
        build_system(cfg, os.path.dirname(str(p)))
    msg = str(e.value)
    assert "\n" not in msg
    assert "potential.function = 'badpot:per_particle'" in msg and "(3, 2)" in msg


def test_a_potential_registered_at_run_time_validates_and_builds():
    import tensorflow as tf
    from distvmc.schema import Float
    from distvmc.systems import POTENTIALS, Potential, build_system, register_potential

    def build(p, system, dtype, config_dir):
        k = p.k
        return Potential(lambda x: 0.5 * k * tf.reduce_sum(x * x, axis=[1, 2]))

    register_potential("spring", {"k": Float(1.0, "spring constant", min=0.0)}, build)
    try:
        cfg = config.load(None, ["potential={type: spring, k: 4.0}", "system.dim=1",
                                 "wavefunction.factors=[{type: gaussian_envelope}]"])
        s = build_system(cfg)
        x = tf.constant([[[0.5]]], tf.float64)
        np.testing.assert_allclose(s.potential(x).numpy(), [0.5])
        with pytest.raises(ConfigError, match="potential.k = -1"):
            config.load(None, ["potential={type: spring, k: -1}"])
    finally:
        POTENTIALS.unregister("spring")
