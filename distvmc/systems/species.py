"""Particle species: groups of identical particles with a mass, a charge, a spin and statistics.

``system.species`` lists the groups; particles are numbered group after group
(electrons: all spin up, then all spin down). Particles in the same group are
identical; particles in different groups are treated as distinguishable. The
legacy shorthand ``system.particles: N`` (with ``system.mass``) still works:
under a potential that describes electrons (coulomb) it means N electrons,
ceil(N/2) spin up then floor(N/2) spin down; otherwise one group of N spinless
bosons. :func:`resolve` turns either form into the resolved one (``species``
always set, ``particles`` the total, ``mass`` null), which validates to itself.

No TensorFlow here: the config validates species before TensorFlow starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distvmc.schema import Choice, ConfigError, Float, Int, Str

SPIN_VALUE = {"up": 1, "down": -1, None: 0}

FIELDS = {
    "count": Int(None, "number of particles in the group", min=1, required=True),
    "mass": Float(1.0, "mass of each particle (1: electrons in atomic units)",
                  min=0.0, open_min=True),
    "charge": Float(-1.0, "charge q of each particle (-1: electrons); the coulomb potential "
                    "uses q_i Z_K / r_iK and q_i q_j / r_ij"),
    "spin": Choice(None, "spin projection: up, down, or null (spinless)", ["up", "down", None]),
    "statistics": Choice(None, "boson or fermion (null: fermion when spin is set, else boson); "
                         "two or more fermions in a group need an antisymmetric factor",
                         ["boson", "fermion", None]),
    "name": Str(None, "label used in messages (optional)"),
}


@dataclass(frozen=True)
class Species:
    """A group of ``count`` identical particles (particles ``start`` .. ``start + count - 1``)."""

    count: int
    mass: float = 1.0
    charge: float = -1.0
    spin: str | None = None
    statistics: str = "boson"
    name: str | None = None
    start: int = 0

    @classmethod
    def from_dicts(cls, groups: list[dict]) -> list["Species"]:
        out, start = [], 0
        for g in groups:
            out.append(cls(count=g["count"], mass=g["mass"], charge=g["charge"], spin=g["spin"],
                           statistics=g["statistics"], name=g.get("name"), start=start))
            start += g["count"]
        return out


def label(groups: list[dict], k: int) -> str:
    """``system.species.K`` plus the group's name, for messages."""
    name = groups[k].get("name")
    return f"system.species.{k}" + (f" ({name})" if name else "")


def _legacy_groups(n: int, mass, electrons: bool) -> list[dict]:
    """Groups for ``particles: n`` with ``mass`` (one number or one per particle).

    Consecutive particles with the same spin and mass form one group.
    """
    masses = [float(mass)] * n if not isinstance(mass, list) else [float(m) for m in mass]
    if electrons:
        n_up = (n + 1) // 2
        spins = ["up"] * n_up + ["down"] * (n - n_up)
        stats = "fermion"
    else:
        spins, stats = [None] * n, "boson"
    groups: list[dict] = []
    for m, s in zip(masses, spins):
        g = groups[-1] if groups else None
        if g is not None and g["mass"] == m and g["spin"] == s:
            g["count"] += 1
            continue
        name = f"electrons {s}" if electrons else "particles"
        groups.append({"count": 1, "mass": m, "charge": -1.0, "spin": s,
                       "statistics": stats, "name": name})
    return groups


def resolve(system: dict, electrons: bool) -> dict:
    """The resolved ``system`` section (a validated dict; changed in place and returned).

    ``electrons``: the potential reads the shorthand ``particles: N`` as N electrons.
    Raises ConfigError (one line) when ``particles`` or ``mass`` contradict ``species``.
    """
    groups, n, mass = system["species"], system["particles"], system["mass"]
    if groups is None:
        n = 1 if n is None else n
        mass = 1.0 if mass is None else mass
        if isinstance(mass, list) and len(mass) != n:
            raise ConfigError(f"system.mass has {len(mass)} entries: must be one number "
                              f"or one per particle ({n})")
        groups = _legacy_groups(n, mass, electrons)
    else:
        groups = [dict(g) for g in groups]
        for g in groups:
            if g["statistics"] is None:
                g["statistics"] = "fermion" if g["spin"] is not None else "boson"
        total = sum(g["count"] for g in groups)
        counts = " + ".join(str(g["count"]) for g in groups)
        if n is not None and n != total:
            raise ConfigError(f"system.particles = {n} but system.species holds {counts} = "
                              f"{total} particles; give one of them, or make them agree")
        if mass is not None:
            per_particle = [g["mass"] for g in groups for _ in range(g["count"])]
            given = mass if isinstance(mass, list) else [mass] * total
            if [float(m) for m in given] != per_particle:
                raise ConfigError(f"system.mass = {mass!r} contradicts the masses in "
                                  f"system.species; set each group's mass there and drop "
                                  f"system.mass")
    system["species"] = groups
    system["particles"] = sum(g["count"] for g in groups)
    system["mass"] = None
    return system


def per_particle(species: list[Species]) -> dict[str, np.ndarray]:
    """Per-particle arrays, each of shape (N,): mass, charge, spin (+1/-1/0), group index."""
    def rep(values, dtype):
        return np.repeat(np.asarray(values, dtype=dtype), [s.count for s in species])

    return {"mass": rep([s.mass for s in species], np.float64),
            "charge": rep([s.charge for s in species], np.float64),
            "spin": rep([SPIN_VALUE[s.spin] for s in species], np.int64),
            "group": rep(list(range(len(species))), np.int64)}


def pair_cusp(species: list[Species], dim: int, hbar: float,
              coupling: np.ndarray) -> np.ndarray | None:
    """Kato cusp du/dr at r_ij = 0 of each pair i < j, shape (N(N-1)/2,).

    For a pair interaction coupling_ij / r_ij (q_i q_j for charges):
    a_ij = 2 mu_ij coupling_ij / ((D - 1) hbar^2) for distinguishable particles or
    opposite spins, 2 mu_ij coupling_ij / ((D + 1) hbar^2) for two identical fermions
    (the same group), with mu_ij = m_i m_j / (m_i + m_j). 3D electrons: 1/2 and 1/4;
    2D: 1 and 1/3. Undefined in one dimension and for one particle (returns None).

    Args:
      coupling: shape (N(N-1)/2,), pairs in np.triu_indices order.
    """
    arr = per_particle(species)
    n = len(arr["mass"])
    if dim < 2 or n < 2:
        return None
    i, j = np.triu_indices(n, k=1)
    m = arr["mass"]
    mu = m[i] * m[j] / (m[i] + m[j])
    fermion = np.array([s.statistics == "fermion" for s in species])[arr["group"]]
    same = (arr["group"][i] == arr["group"][j]) & fermion[i]
    return 2.0 * mu * np.asarray(coupling, np.float64) / (np.where(same, dim + 1, dim - 1) * hbar ** 2)


def fermion_groups(groups: list[dict]) -> list[int]:
    """Indices of the groups that hold two or more identical fermions."""
    return [k for k, g in enumerate(groups) if g["statistics"] == "fermion" and g["count"] >= 2]
