"""Physical systems: particles, masses and the potential energy.

A :class:`System` holds everything the Hamiltonian needs apart from the
wavefunction: the number of particles N, the dimension D, the kinetic
prefactor hbar^2/(2 m_i) per particle (energy x length^2, e.g. Hartree bohr^2
or MeV fm^2) and the potential, a function from positions of shape
(walkers, N, D) to energies of shape (walkers,).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tensorflow as tf

from distvmc.config import Section


@dataclass
class System:
    particles: int
    dim: int
    kinetic_prefactor: np.ndarray  # hbar^2 / (2 m_i), shape (N,)
    potential: Callable[[tf.Tensor], tf.Tensor]  # (walkers, N, D) -> (walkers,)
    centres: np.ndarray = field(default_factory=lambda: np.zeros((1, 1)))  # (K, D)
    charges: np.ndarray | None = None  # (K,) nuclear charges for Coulomb systems
    pair_cusp: np.ndarray | None = None  # (N(N-1)/2,) Kato cusp of each pair with a 1/r repulsion
    name: str = ""

    def initial_walkers(self, rng: np.random.Generator, walkers: int, width: float) -> np.ndarray:
        """Starting positions, shape (walkers, N, D): particles spread around the centres."""
        n, d = self.particles, self.dim
        if self.charges is not None and len(self.charges) > 0:
            # Place particles on nuclei in proportion to their charge (round robin).
            order = np.argsort(-self.charges, kind="stable")
            slots = np.concatenate([np.full(int(max(1, round(z))), i) for i, z in
                                    zip(order, self.charges[order])])
            owner = np.resize(slots, n)
            base = self.centres[owner]
        else:
            base = np.zeros((n, d))
        return base[None] + width * rng.standard_normal((walkers, n, d))


def _pair_cusp(mass: np.ndarray, hbar: float, dim: int, coupling: float) -> np.ndarray | None:
    """Kato cusp du/dr at r_ij = 0 for a repulsion coupling/r: 2 mu_ij coupling / ((D-1) hbar^2).

    Electrons in 3D (mu = 1/2): 1/2. Undefined in one dimension (returns None).
    """
    if dim < 2 or len(mass) < 2:
        return None
    i, j = np.triu_indices(len(mass), k=1)
    mu = mass[i] * mass[j] / (mass[i] + mass[j])
    return 2.0 * mu * coupling / ((dim - 1) * hbar ** 2)


def build_system(cfg: Section, config_dir: str | None = None) -> System:
    """The :class:`System` that the ``system`` and ``potential`` sections describe."""
    from distvmc.systems import coulomb, harmonic, user

    s, p = cfg.system, cfg.potential
    n, d = s.particles, s.dim
    mass = np.broadcast_to(np.asarray(s.mass, dtype=np.float64), (n,)).copy()
    prefactor = s.hbar ** 2 / (2.0 * mass)
    common = dict(particles=n, dim=d, kinetic_prefactor=prefactor, name=cfg.name)
    dtype = tf.float64 if cfg.precision == "float64" else tf.float32
    if p.type == "coulomb":
        nuclei = np.asarray(p.nuclei, dtype=np.float64)
        charges = np.asarray(p.charges, dtype=np.float64)
        return System(potential=coulomb.potential(nuclei, charges, p.electron_electron, dtype),
                      centres=nuclei, charges=charges,
                      pair_cusp=_pair_cusp(mass, s.hbar, d, 1.0) if p.electron_electron else None,
                      **common)
    if p.type == "harmonic":
        omega = np.broadcast_to(np.asarray(p.omega, dtype=np.float64), (d,)).copy()
        return System(potential=harmonic.potential(mass, omega, p.interaction, p.coupling, dtype),
                      centres=np.zeros((1, d)),
                      pair_cusp=(_pair_cusp(mass, s.hbar, d, p.coupling)
                                 if p.interaction == "coulomb" and p.coupling > 0 else None),
                      **common)
    if p.type == "user":
        fn = user.load(p.function, p.params, p.path or config_dir)
        return System(potential=fn, centres=np.zeros((1, d)), **common)
    if p.type == "none":
        return System(potential=lambda x: tf.zeros(tf.shape(x)[:1], dtype=x.dtype),
                      centres=np.zeros((1, d)), **common)
    raise ValueError(f"unknown potential type {p.type!r}")  # config validation prevents this
