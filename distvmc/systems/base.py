"""The System (particles and potential) and the registry of potentials.

A :class:`System` holds everything the Hamiltonian needs apart from the
wavefunction: the particles (N, grouped into species), the dimension D, the
kinetic prefactor hbar^2/(2 m_i) per particle (energy x length^2, e.g. Hartree
bohr^2 or MeV fm^2) and the potential, a function from positions of shape
(walkers, N, D) to energies of shape (walkers,).

A potential type is one module that declares the fields of its config section
and registers a builder with :func:`register_potential`; see
:mod:`distvmc.systems.harmonic` for a short example. The builder is called as
``builder(section, system, dtype, config_dir)`` with the validated
``potential`` section, the :class:`System` without its potential, the float
dtype and the config file's directory, and returns a :class:`Potential`.

No TensorFlow at import time (:mod:`distvmc.lazytf`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from distvmc.schema import Registry
from distvmc.systems.species import Species, per_particle

POTENTIALS = Registry("potential")


def register_potential(name: str, fields: dict | None = None, builder=None, *,
                       electrons: bool = False, check=None, doc: str = "",
                       replace: bool = False, translation_invariant: bool = False):
    """Register a potential type (usable as a decorator when ``builder`` is omitted).

    Args:
      name: the ``potential.type`` value.
      fields: name -> :class:`distvmc.schema.Field`, the other keys of the section.
      builder: ``builder(section, system, dtype, config_dir) -> Potential``.
      electrons: the shorthand ``system.particles: N`` means N electrons (spin up
        and down fermions of charge -1) rather than N spinless bosons.
      check: ``check(section: dict, config: dict, key: str)`` raising ConfigError
        for problems involving other sections (runs before TensorFlow starts).
      translation_invariant: V depends only on relative positions (no external
        field or clamped centre): with translation-invariant factors the sampler
        re-centres the walkers (``sampler.recentre``).
    """
    return POTENTIALS.register(name, fields, builder, electrons=electrons, check=check,
                               doc=doc, replace=replace,
                               translation_invariant=translation_invariant)


@dataclass
class Potential:
    """What a potential builder returns.

    energy: (walkers, N, D) -> (walkers,), TensorFlow operations only.
    centres: (K, D) fixed centres (nuclei, trap centre) the walkers start around.
    nuclear_charges: (K,) charges of clamped nuclei (coulomb), else None.
    pair_coupling: (N(N-1)/2,) strength c_ij of a pair repulsion c_ij / r_ij (pairs in
      np.triu_indices order), from which the Jastrow's cusps follow; None: no 1/r pair term.
    """

    energy: Callable
    centres: np.ndarray | None = None
    nuclear_charges: np.ndarray | None = None
    pair_coupling: np.ndarray | None = None
    trap_omega: np.ndarray | None = None  # (D,) harmonic trap frequencies, else None


@dataclass
class System:
    """Particles, dimension and potential.

    Per-particle arrays (shape (N,), particles numbered group after group):
    ``masses``, ``particle_charges``, ``spins`` (+1 up, -1 down, 0 spinless),
    ``groups`` (index into ``species``) and ``kinetic_prefactor`` = hbar^2/(2 m_i).
    ``charges`` are the nuclear charges Z_K (shape (K,), coulomb only) and
    ``centres`` the nuclei or trap centre (K, D). ``pair_cusp`` (N(N-1)/2,) is the
    Kato cusp of each pair i < j with a 1/r pair interaction, else None.
    """

    particles: int
    dim: int
    kinetic_prefactor: np.ndarray  # hbar^2 / (2 m_i), shape (N,)
    potential: Callable = None  # (walkers, N, D) -> (walkers,)
    centres: np.ndarray = field(default_factory=lambda: np.zeros((1, 1)))  # (K, D)
    charges: np.ndarray | None = None  # (K,) nuclear charges for Coulomb systems
    pair_cusp: np.ndarray | None = None  # (N(N-1)/2,)
    name: str = ""
    species: tuple = ()  # tuple of Species
    hbar: float = 1.0
    masses: np.ndarray | None = None  # (N,)
    particle_charges: np.ndarray | None = None  # (N,)
    spins: np.ndarray | None = None  # (N,) +1 / -1 / 0
    groups: np.ndarray | None = None  # (N,) group index
    omega: np.ndarray | None = None  # (D,) trap frequencies of a harmonic potential, else None

    def __post_init__(self):
        if not self.species:  # one group of spinless bosons with the prefactor's masses
            m = self.hbar ** 2 / (2.0 * np.asarray(self.kinetic_prefactor, np.float64))
            self.species = tuple(Species(1, float(mk), start=k) for k, mk in enumerate(m))
        arr = per_particle(list(self.species))
        self.masses = arr["mass"] if self.masses is None else self.masses
        self.particle_charges = arr["charge"] if self.particle_charges is None else self.particle_charges
        self.spins = arr["spin"] if self.spins is None else self.spins
        self.groups = arr["group"] if self.groups is None else self.groups

    def initial_walkers(self, rng: np.random.Generator, walkers: int, width: float) -> np.ndarray:
        """Starting positions, shape (walkers, N, D): a Gaussian of width ``width``
        around each particle's home position (see :meth:`home_positions`)."""
        n, d = self.particles, self.dim
        return self.home_positions()[None] + width * rng.standard_normal((walkers, n, d))

    def home_positions(self) -> np.ndarray:
        """Shape (N, D): the nucleus each particle starts on (the origin without nuclei).

        Particles are placed one at a time, alternating between spin classes (up,
        down, spinless), each on the nucleus K with the lowest filling
        (occupancy + 1) / Z_K, ties going to the nucleus with fewer particles of
        that spin, then the lower index: each nucleus gets about Z_K particles and
        both spins (H2: one electron of each spin per proton).
        """
        n, d = self.particles, self.dim
        if self.charges is None or len(self.charges) == 0:
            return np.zeros((n, d))
        z = np.asarray(self.charges, np.float64)
        k_nuc = len(z)
        total = np.zeros(k_nuc)
        by_spin = {s: np.zeros(k_nuc) for s in (1, -1, 0)}
        queues = {s: [i for i in range(n) if self.spins[i] == s] for s in (1, -1, 0)}
        home = np.zeros(n, dtype=int)
        while any(queues.values()):
            for s in (1, -1, 0):
                if not queues[s]:
                    continue
                i = queues[s].pop(0)
                k = min(range(k_nuc), key=lambda k: ((total[k] + 1) / z[k], by_spin[s][k], k))
                home[i] = k
                total[k] += 1
                by_spin[s][k] += 1
        return np.asarray(self.centres, np.float64)[home]
