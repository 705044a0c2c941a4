"""Physical systems: particles (species), masses and the potential energy.

:func:`build_system` turns the validated ``system`` and ``potential`` sections
into a :class:`System`. Potential types live one per module and register
themselves (:func:`register_potential`); importing this package registers the
built-in ones. No TensorFlow at import time: the config imports this package
for the potentials' schemas.
"""

from __future__ import annotations

import numpy as np

from distvmc.schema import ConfigError, Section
from distvmc.systems import coulomb, free, harmonic, pionless, user  # noqa: F401  (register the potentials)
from distvmc.systems.base import POTENTIALS, Potential, System, register_potential
from distvmc.systems.species import Species, pair_cusp

__all__ = ["POTENTIALS", "Potential", "Species", "System", "build_system", "register_potential"]


def build_system(cfg: Section, config_dir: str | None = None) -> System:
    """The :class:`System` that the ``system`` and ``potential`` sections describe.

    ``config_dir`` is where a user potential's module is looked for when
    ``potential.path`` is null. The potential is tried on 3 random walkers: a
    result that is not of shape (walkers,) raises ConfigError (one line).
    """
    from distvmc.lazytf import tf

    s, p = cfg.system, cfg.potential
    species = tuple(Species.from_dicts(s.to_dict()["species"]))
    masses = np.repeat([g.mass for g in species], [g.count for g in species]).astype(np.float64)
    system = System(particles=s.particles, dim=s.dim, kinetic_prefactor=s.hbar ** 2 / (2.0 * masses),
                    name=cfg.name, species=species, hbar=s.hbar)
    dtype = tf.float64 if cfg.precision == "float64" else tf.float32
    pot = POTENTIALS.entry(p.type).builder(p, system, dtype, config_dir)
    system.potential = pot.energy
    system.centres = np.zeros((1, s.dim)) if pot.centres is None else np.asarray(pot.centres)
    system.charges = pot.nuclear_charges
    system.omega = None if pot.trap_omega is None else np.asarray(pot.trap_omega, np.float64)
    if pot.pair_coupling is not None:
        system.pair_cusp = pair_cusp(list(species), s.dim, s.hbar, pot.pair_coupling)
    _check_potential(system, p, dtype)
    return system


def _check_potential(system: System, p: Section, dtype) -> None:
    """Evaluate V on 3 random walkers; a wrong shape is a ConfigError naming the potential."""
    from distvmc.lazytf import tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((3, system.particles, system.dim)) + 0.1, dtype=dtype)
    what = f"potential.function = {p.function!r}" if p.type == "user" else f"potential.type = {p.type!r}"
    try:
        v = system.potential(x)
        shape = tuple(np.shape(v))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of user code becomes one line
        msg = " ".join(str(e).split())[:300]
        raise ConfigError(f"{what}: evaluating it on 3 walkers of shape (3, {system.particles}, "
                          f"{system.dim}) failed: {type(e).__name__}: {msg}") from None
    if shape != (3,):
        raise ConfigError(f"{what}: returned shape {shape} for 3 walkers of shape (3, "
                          f"{system.particles}, {system.dim}); must return one energy per "
                          f"walker, shape (3,)")
