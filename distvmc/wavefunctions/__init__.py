"""Wavefunctions: psi as a product of factors, returned as (sign, log|psi|).

Each factor type lives in its own module, declares the fields of its config
item and registers itself (:func:`register_factor`); importing this package
registers the built-in ones (the import line below is the registry). No
TensorFlow at import time: the config imports this package for the factors'
schemas.

Factor types: ``mlp`` and ``deepsets`` (:mod:`.mlp`, :mod:`.signed`),
``jastrow`` (:mod:`.jastrow`), ``gaussian_envelope`` and ``exp_envelope``
(:mod:`.envelopes`). ``slater`` (:mod:`.slater`, orbitals from :mod:`.ferminet` or
fixed-form basis functions) is antisymmetric: Slater determinants for fermions.
"""

from __future__ import annotations

import numpy as np

from distvmc.schema import Section
from distvmc.wavefunctions import envelopes, ferminet, jastrow, mlp, nuclear, slater  # noqa: F401  (register the factors)
from distvmc.wavefunctions.base import (FACTORS, Factor, Module, changes_sign, is_antisymmetric,
                                        register_factor)
from distvmc.wavefunctions.wavefunction import Wavefunction

__all__ = ["FACTORS", "Factor", "Module", "Wavefunction", "build_wavefunction", "changes_sign",
           "is_antisymmetric", "register_factor"]


def build_wavefunction(cfg: Section, system, seed: int = 0) -> Wavefunction:
    """The wavefunction that ``wavefunction.factors`` describes, initialised from ``seed``.

    Factor k is built by its registered builder as
    ``builder(system, item, rng, dtype, name=f"f{k}_{type}")``; ``rng`` is one NumPy
    generator shared by the factors in order, the same on every rank.
    """
    from distvmc.lazytf import tf

    dtype = tf.float64 if cfg.precision == "float64" else tf.float32
    rng = np.random.default_rng([seed, 7919])  # same on every rank
    factors = [FACTORS.entry(f.type).builder(system, f, rng, dtype, name=f"f{i}_{f.type}")
               for i, f in enumerate(cfg.wavefunction.factors)]
    return Wavefunction(factors, (system.particles, system.dim))
