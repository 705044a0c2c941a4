"""Configs: defaults, overrides, and one-line errors before TensorFlow starts."""

import pytest
import yaml

from distvmc import config
from distvmc.config import ConfigError

from conftest import CONFIGS, cli


def test_default_job_is_hydrogen():
    c = config.load(None)
    assert c.name == "hydrogen"
    assert c.system.particles == 1 and c.system.dim == 3
    assert c.potential.type == "coulomb" and c.potential.charges == [1.0]
    # no reference energy unless the config gives one (configs/hydrogen.yaml does: -0.5)
    assert c.reference_energy is None


@pytest.mark.parametrize("name", ["hydrogen", "helium", "harmonic_oscillator",
                                  "harmonic_oscillator_3d"])
def test_bundled_configs_validate(name):
    c = config.load(f"{CONFIGS}/{name}.yaml")
    assert c.name == name


def test_dotted_overrides_parse_yaml_values():
    c = config.load(None, ["sampler.walkers=2048", "optimizer.lr=0.02",
                           "wavefunction.factors.0.hidden=[8, 8]", "seed=3"])
    assert c.sampler.walkers == 2048
    assert c.optimizer.lr == 0.02
    assert c.wavefunction.factors[0].hidden == [8, 8]
    assert c.seed == 3


def test_override_on_config_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"sampler": {"walkers": 10}}))
    c = config.load(str(p), ["sampler.walkers=20"])
    assert c.sampler.walkers == 20


@pytest.mark.parametrize("overrides, fragment", [
    (["sampler.walkers=-5"], "sampler.walkers = -5: must be an integer >= 1"),
    (["sampler.target_acceptance=1.2"], "sampler.target_acceptance = 1.2"),
    (["sampler.target_acceptance=0"], "sampler.target_acceptance = 0"),
    (["sampler.walkerz=5"], "sampler.walkerz: unknown key"),
    (["optimizer.type=lbfgs"], "optimizer.type = 'lbfgs': must be one of sr, adam"),
    (["optimizer.lr=fast"], "optimizer.lr = 'fast'"),
    (["potential.type=user"], "potential.function: required for type 'user'"),
    (["potential.charges=[1, 2]"], "potential.charges has 2 entries but potential.nuclei has 1"),
    (["system.mass=[1, 2]"], "system.mass has 2 entries"),
    (["potential.type=harmonic", "potential.charges=[1]"], "unknown key for type 'harmonic'"),
    (["wavefunction.factors.0.type=transformer"], "wavefunction.factors.0.type = 'transformer'"),
    (["sampler.walkers"], "expected key=value"),
])
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        config.load(None, overrides)
    msg = str(e.value)
    assert fragment in msg
    assert "\n" not in msg


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(str(bad))


def test_cli_config_error_is_one_line_exit_2():
    r = cli("run", "sampler.walkers=-1", timeout=60)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == ["distvmc: error: sampler.walkers = -1: must be an integer >= 1"]
    assert "Traceback" not in r.stderr


def test_cli_missing_config_file_exit_2(tmp_path):
    r = cli("run", str(tmp_path / "missing.yaml"), timeout=60)
    assert r.returncode == 2
    assert "not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_config_error_does_not_import_tensorflow():
    import subprocess
    import sys
    code = ("import sys; from distvmc import cli; rc = cli.main(['run', 'sampler.walkers=0']); "
            "print('tensorflow' in sys.modules, rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False 2"


def test_reference_documents_every_key():
    lines = "\n".join(config.reference())
    for key in ["sampler.walkers", "optimizer.shift", "hamiltonian.laplacian",
                "potential.omega", "wavefunction.factors.N.hidden"]:
        assert f"`{key}" in lines


def test_scientific_notation_without_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 1e-8 as a string; the config accepts it as the number it means.
    c = config.load(None, ["optimizer.shift=1e-8", "potential.charges=[2E0]"])
    assert c.optimizer.shift == 1e-8 and c.potential.charges == [2.0]
    p = tmp_path / "c.yaml"
    p.write_text("optimizer: {lr: 5e-3}\n")
    assert config.load(str(p)).optimizer.lr == 5e-3


def test_options_may_precede_overrides(tmp_path):
    from distvmc import cli as cli_mod
    args, extra = cli_mod._parser().parse_known_args(
        ["run", f"{CONFIGS}/hydrogen.yaml", "--out", str(tmp_path), "sampler.walkers=3"])
    assert args.out == str(tmp_path) and extra == ["sampler.walkers=3"]


def test_readme_configuration_reference_is_current():
    # Regenerate with: distvmc config --reference (between the README markers).
    import os
    from conftest import ROOT
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("<!-- config-reference:start -->")[1].split("<!-- config-reference:end -->")[0]
    for line in config.reference():
        assert line in block, f"README reference lacks: {line}"
