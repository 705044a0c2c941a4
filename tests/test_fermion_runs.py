"""A short lithium VMC run (CI-sized): pretraining on UHF, then SR.

configs/lithium.yaml (FermiNet-style orbitals in one determinant, cusp Jastrow,
4.4k parameters) with 512 walkers: 1000 pretraining steps on UHF/cc-pVDZ orbitals,
150 SR iterations, 50k evaluation samples. Measured: -7.4752 +- 0.0009 Ha (2.9 mHa
above exact) in 143 s on two busy cores; without the pretraining the same run ends at
-7.4102 +- 0.0031 Ha. The issue asks for -7.50 < E < -7.40 and no lower than the
exact -7.47806 by more than the error bar allows.
"""

from __future__ import annotations

import pytest

from conftest import CONFIGS

EXACT_LI = -7.47806


@pytest.mark.slow
def test_short_lithium_run_is_variational_and_within_the_window(tmp_path):
    pytest.importorskip("pyscf")
    import distvmc

    res = distvmc.run(f"{CONFIGS}/lithium.yaml",
                      {"optimizer.iterations": 150, "sampler.walkers": 512,
                       "evaluation.samples": 50000, "checkpoint.every": 0,
                       "output.log_every": 50, "pretrain.log_every": 500},
                      out=str(tmp_path / "li"))
    e, err = res.energy, res.energy_err
    print(f"lithium VMC: {e:.5f} +- {err:.5f} Ha, exact {EXACT_LI}")
    assert 0.0 < err < 0.01
    assert e > EXACT_LI - 3.0 * err  # variational
    assert -7.50 < e < -7.40
