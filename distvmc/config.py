"""Run configuration: one tree of defaults, validated before TensorFlow starts.

A config is a nested mapping read from YAML and overridden by ``key=value``
pairs from the command line (``sampler.walkers=2048``). Every key has a
default and a one-line documentation string in :data:`SCHEMA`; the defaults
alone describe the bundled job (the hydrogen atom). Validation turns the tree
into :class:`Section` objects (attribute access, plain Python values) or raises
:class:`ConfigError` whose message names the key, the value and what is
allowed, on one line.

The fields of each wavefunction factor and each potential are declared next to
their code and registered (:data:`distvmc.wavefunctions.FACTORS`,
:data:`distvmc.systems.POTENTIALS`); the schema machinery is
:mod:`distvmc.schema`. The ``system`` section is resolved into particle
species (:mod:`distvmc.systems.species`).

This module must not import TensorFlow: the command line validates a config
before paying for TensorFlow's start-up. The factor and potential modules it
imports use :mod:`distvmc.lazytf`.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml

from distvmc.schema import (  # noqa: F401  (re-exported: the config's public vocabulary)
    Bool, Choice, ConfigError, Field, Float, FloatList, Int, IntList, ListOf, Mapping, Matrix,
    OptionalFloatList, Records, Section, Str, Variant, defaults_of, fail, reference_lines,
    validate_section)
from distvmc.pretrain import check as pretrain_check
from distvmc.systems import POTENTIALS
from distvmc.systems import species as species_mod
from distvmc.wavefunctions import FACTORS, changes_sign, is_antisymmetric

# ----------------------------------------------------------------------------
# The schema. Defaults describe the hydrogen atom with an MLP times an
# exponential envelope, optimized by stochastic reconfiguration.
# ----------------------------------------------------------------------------

# Unit presets: the defaults of system.hbar and of the particle masses they imply.
UNITS = {"atomic": {"hbar": 1.0, "mass": 1.0}, "nuclear": {"hbar": 197.327, "mass": 938.95}}

FACTOR = Variant("mlp", "one factor of psi; log|psi| is the sum of the factors' logs", FACTORS)

SCHEMA: dict[str, Any] = {
    "name": Str("hydrogen", "run name, used for the run directory (default: the config "
                "file's stem; hydrogen, the default job, without a file)"),
    "seed": Int(0, "random seed; each rank derives its own stream from (seed, rank)", min=0),
    "integrator": Choice("sampling", "how energies are integrated: sampling (Metropolis, any "
                         "dimension) or grid (quadrature on a box, total dimension N*D <= 2)",
                         ["sampling", "grid"]),
    "precision": Choice("float64", "floating-point precision of the wavefunction and energies",
                        ["float64", "float32"]),
    "reference_energy": Float(None, "exact or best-known energy, for reports and plots "
                              "(null: none)", optional=True),
    "system": {
        "particles": Int(None, "number of particles N: shorthand for one group (with a coulomb "
                         "potential N electrons, ceil(N/2) spin up then floor(N/2) down; else N "
                         "spinless bosons), or the total of system.species; null: 1 or that total",
                         min=1, optional=True),
        "dim": Int(3, "spatial dimensions D", min=1, max=3),
        "mass": OptionalFloatList(None, "with the particles shorthand: particle mass (one value, "
                                  "or one per particle; null: 1); with species: null (masses "
                                  "are per group)", positive=True, scalar_ok=True),
        "hbar": Float(1.0, "Planck's constant in the chosen units (1 in atomic units; "
                      "197.327 MeV fm with masses in MeV)", min=0.0, open_min=True),
        "units": Choice("atomic", "unit preset: atomic (hbar = m_e = 1, Hartree, bohr) or nuclear "
                        "(MeV, fm: hbar defaults to 197.327 MeV fm and every mass to the nucleon "
                        "mass 938.95 MeV, so hbar^2/m = 41.4697 MeV fm^2)", list(UNITS)),
        "species": Records(None, "groups of identical particles, numbered group after group "
                           "(null: from system.particles); the resolved config always lists them",
                           species_mod.FIELDS),
    },
    "potential": Variant("coulomb", "the potential energy V(x)", POTENTIALS),
    "wavefunction": {
        "factors": ListOf(FACTOR, [
            {"type": "mlp"},
            {"type": "exp_envelope", "decay": 0.5},
        ], "factors multiplied into psi"),
    },
    "sampler": {
        "walkers": Int(1024, "Metropolis walkers per rank", min=1),
        "step": Float(0.5, "initial Gaussian proposal width (moves one: of every species group)",
                      min=0.0, open_min=True),
        "target_acceptance": Float(0.5, "acceptance rate the step width is adapted toward",
                                   min=0.0, max=1.0, open_min=True, open_max=True),
        "adapt": Choice("always", "when to adapt the step width", ["always", "thermalization", "never"]),
        "thermalization": Int(200, "sweeps before the first measurement", min=0),
        "sweeps_per_sample": Int(10, "sweeps between measurements (decorrelation)", min=1),
        "samples_per_walker": Int(1, "measurements per walker per iteration", min=1),
        "moves": Choice("all", "proposal: all (every particle of a walker moves at once; one "
                        "step width) or one (particles move one at a time, each accepted or "
                        "rejected on its own, with one step width per species group adapted from "
                        "that group's acceptance; a sweep then costs N full network evaluations, "
                        "since the networks couple all particles). one is for large N, where "
                        "all-particle moves need a step ~ 1/sqrt(N) to be accepted",
                        ["all", "one"]),
        "walker_groups": Int(0, "moves all: run the sweeps on this many slices of the walkers "
                             "side by side, one compiled loop each (a walker's chain does not "
                             "depend on it); 0: auto, 1 on a GPU, else this rank's share of "
                             "the CPU cores (at most 8, at least 64 walkers per slice)", min=0),
        "init_width": Float(1.0, "spread of the initial walkers around the nuclei or origin",
                            min=0.0, open_min=True),
        "recentre": Choice(None, "move each walker's centre of mass to the origin after every "
                           "sweep (only for a translation-invariant psi, whose |psi|^2 it leaves "
                           "unchanged); null: true when the potential and every factor declare "
                           "translation invariance (pionless with nuclear factors)",
                           [None, True, False]),
    },
    "hamiltonian": {
        "laplacian": Choice("hessian", "exact Laplacian method (all agree): hessian (full "
                            "Hessian per walker, XLA), forward (value, gradient and Laplacian "
                            "in one forward pass, XLA; a plug-in factor without forward rules "
                            "uses hessian, which is logged), auto (times hessian and "
                            "forward on the first walkers, keeps the faster and logs it), "
                            "fwd_over_rev and fwd_over_fwd (uncompiled, slower)",
                            ["hessian", "forward", "auto", "fwd_over_rev", "fwd_over_fwd"]),
        "chunk_size": Int(16384, "walkers per local-energy / Jacobian batch (bounds memory)", min=1),
    },
    "optimizer": {
        "type": Choice("sr", "optimizer", ["sr", "adam"]),
        "iterations": Int(300, "optimization iterations", min=0),
        "lr": Float(0.05, "learning rate", min=0.0, open_min=True),
        "lr_decay": Float(0.0, "lr_t = lr / (1 + lr_decay * t)", min=0.0),
        "shift": Float(1e-3, "SR diagonal shift epsilon in (S + epsilon) delta = F", min=0.0),
        "solver": Choice("auto", "SR solver: dense (P x P overlap, Cholesky), cg (matrix-free "
                         "conjugate gradient, S never formed), samplespace (n x n kernel O O^T, "
                         "any number of ranks), auto (dense when P <= 2000, else samplespace on "
                         "one rank when samples <= 1024 and < parameters, else cg)",
                         ["auto", "dense", "cg", "samplespace"]),
        "linear_algebra": Choice("auto", "where O and SR's products live: host (NumPy: O "
                                 "is copied to the host once per iteration; the fastest on "
                                 "CPUs), device (TensorFlow on the rank's device: O, S v, "
                                 "O^T O / O O^T, the CG vectors and the Cholesky stay there; "
                                 "the host sees scalars and delta), auto (device when a GPU "
                                 "is visible, else host; logged)", ["auto", "host", "device"]),
        "o_matrix": Choice("auto", "stored (O, S x P numbers, is formed once per "
                           "iteration; every solver) or recompute (O is never formed: CG's "
                           "S v and F are a forward- and a reverse-mode pass of log|psi| "
                           "through the network per product, on the device; memory "
                           "O(samples x width) instead of 8 samples x P bytes; solver cg "
                           "without jacobi only). Helium, P = 100k, 4096 samples: one S v "
                           "took 0.08 s this way against 0.24 s through a stored O; "
                           "auto: recompute when the solver is (or resolves to) cg without "
                           "jacobi and P >= 10000, else stored; checked against the stored "
                           "O on a few samples at the first iteration (auto falls back to "
                           "stored if they differ, recompute stops)",
                           ["auto", "stored", "recompute"]),
        "cg_tol": Float(1e-4, "cg: stop when the residual |F - (S + shift) delta| is below this "
                        "fraction of |F|", min=0.0, open_min=True),
        "cg_maxiter": Int(100, "cg: at most this many CG steps per iteration (one allreduce of "
                          "P numbers each); a solve that hits it is reported as not converged",
                          min=1),
        "cg_precondition": Choice("none", "cg: none, or jacobi (divide by diag(S) + shift). "
                                  "none is the default: on helium (P = 4.7k, tol 1e-4) plain CG "
                                  "needs 11 steps, Jacobi 50-61, because F = <O E> lies in the "
                                  "large eigenvalues of S that Jacobi scales down",
                                  ["none", "jacobi"]),
        "momentum": Float(0.0, "SR momentum mu in [0, 1) (SPRING, NetKet's momentum): solve "
                          "(S + shift) delta_k = F + shift mu delta_(k-1), i.e. shrink delta "
                          "towards mu times the previous direction instead of 0; every solver, "
                          "same delta. 0: plain SR. Helium, samplespace, 200 iterations: "
                          "0.9-0.99 gave 3-30x lower variance, the same energy within 1e-4 Ha",
                          min=0.0, max=1.0, open_max=True),
        "max_update_norm": Float(None, "clip the norm of lr*delta to this value", optional=True,
                                 min=0.0, open_min=True),
        "max_update_norm_decay": Bool(False, "shrink max_update_norm on lr's schedule, to "
                                      "max_update_norm / (1 + lr_decay t): when (nearly) every "
                                      "update is clipped, as in MeV-scale runs, this is what lets "
                                      "the step shrink"),
        "beta1": Float(0.9, "Adam beta1", min=0.0, max=1.0, open_max=True),
        "beta2": Float(0.999, "Adam beta2", min=0.0, max=1.0, open_max=True),
        "epsilon": Float(1e-8, "Adam epsilon", min=0.0, open_min=True),
    },
    "pretrain": {
        "iterations": Int(0, "fit the determinant's orbitals to reference orbitals for this many "
                          "Adam steps before the first VMC iteration of a fresh run (never on "
                          "--resume), as FermiNet does; 0: off (the run works without it, only "
                          "slower). Needs a factor with orbitals (type: slater)", min=0),
        "method": Choice("auto", "reference orbitals: hf (unrestricted Hartree-Fock by PySCF, "
                         "pip install 'distvmc[chem]'; spin up takes the alpha, spin down the "
                         "beta occupied orbitals), oscillator (non-interacting harmonic-oscillator "
                         "orbitals with each group's mass and omega, filled by energy, degenerate "
                         "shells x before y), auto (hf for coulomb, oscillator for harmonic)",
                         ["auto", "hf", "oscillator"]),
        "basis": Str("cc-pvdz", "hf: PySCF basis set name"),
        "lr": Float(1e-2, "Adam learning rate of the orbital fit", min=0.0, open_min=True),
        "sweeps": Int(1, "all-particle Metropolis steps per iteration on the sampling density "
                      "(see reference_fraction; sampler.walkers walkers per rank, after "
                      "sampler.thermalization steps; VMC then starts from these walkers)", min=1),
        "reference_fraction": Float(0.5, "the fit's samples come from the mixture f |Psi_ref|^2 + "
                                    "(1 - f) |Psi_net|^2 with this f: 1 samples only the reference "
                                    "(the network is then unconstrained where the reference is "
                                    "small), 0 only the network (FermiNet's default)", min=0.0, max=1.0),
        "log_every": Int(10, "print the orbital mismatch (mean squared error of Phi_net - "
                         "Phi_ref, each orbital relative to its rms value) every this many "
                         "iterations", min=1),
    },
    "evaluation": {
        "samples": Int(200000, "samples in the final evaluation with frozen parameters, over "
                       "all ranks together (rounded up to whole sweeps of every walker)", min=1),
        "sweeps_per_sample": Int(10, "sweeps between evaluation measurements", min=1),
        "thermalization": Int(100, "sweeps before evaluation measurements", min=0),
        "bins": Int(100, "radial density histogram bins", min=1),
        "r_max": Float(None, "radial density histogram range (default: from the samples)",
                       optional=True, min=0.0, open_min=True),
    },
    "grid": {
        "box": FloatList(6.0, "half-width L of the box [-L, L] per coordinate (one number, or "
                         "one per coordinate, N*D)", positive=True, scalar_ok=True),
        "spacing": Float(0.05, "largest grid spacing; points are cell centres, 2*ceil(L/spacing) "
                         "per coordinate", min=0.0, open_min=True),
        "kinetic": Choice("parts", "kinetic energy: parts ((hbar^2/2m) |grad psi|^2, first "
                          "derivatives only) or laplacian (-psi (hbar^2/2m) laplacian psi)",
                          ["parts", "laplacian"]),
        "edge_tolerance": Float(1e-8, "warn when |psi|^2 on the box's outer cells exceeds this "
                                "fraction of its peak", min=0.0, open_min=True),
        "tolerance": Float(1e-6, "a state has converged, and its optimization stops, once its "
                           "energy variance <(H-E)^2> by quadrature (checked every 10 iterations) "
                           "is below this; E is then within about variance/gap of the exact level "
                           "(Temple). A state that reaches optimizer.iterations first is reported "
                           "as not converged (0: always run optimizer.iterations)", min=0.0),
        "chunk_size": Int(65536, "grid points per Jacobian batch (bounds memory)", min=1),
    },
    "excited": {
        "states": Int(1, "lowest states to find, one after another (1: ground state only)", min=1),
        "penalty": Float(None, "sampling mode: overlap penalty strength lambda (energy units); "
                         "must exceed E_k - E_0; null: penalty_factor * max(|E_0|, E_(k-1) - E_0)",
                         optional=True, min=0.0, open_min=True),
        "penalty_factor": Float(3.0, "factor of the automatic penalty rule", min=1.0),
        "overlap_samples": Int(1024, "sampling mode: samples of each lower state per iteration "
                               "for the overlap estimates", min=1),
        "reseed": Int(1000, "state k starts from parameters drawn with seed + k * reseed", min=1),
        "reference_energies": OptionalFloatList(None, "exact energies of the states, for reports "
                                        "(default: reference_energy for state 0 only)"),
    },
    "output": {
        "dir": Str(None, "run directory (default runs/<name>-<timestamp>)"),
        "log_every": Int(10, "print a progress line every this many iterations", min=1),
        "tensorboard": Bool(False, "write TensorBoard scalars (energy, variance, acceptance, step, "
                            "lr, SR shift, update norm, seconds per phase) to RUN_DIR/tensorboard"),
    },
    "checkpoint": {
        "every": Int(50, "write RUN_DIR/checkpoints/ckpt-ITERATION.h5 every this many "
                     "iterations (0: not by count; always at the end of training and on "
                     "SIGTERM/SIGUSR1)", min=0),
        "minutes": Float(30.0, "also write one when this many minutes have passed since the "
                         "last (0: not by time)", min=0.0),
        "keep": Int(3, "checkpoints kept; older ones are deleted", min=1),
        "min_free_mb": Float(100.0, "refuse to start when the run directory's file system has "
                             "less free space (MB) than this, or than keep + 1 checkpoints", min=0.0),
    },
    "recovery": {
        "max_rewinds": Int(5, "non-finite local energies rewind to the last good state (parameters, "
                           "walkers, optimizer state); the run stops after this many rewinds", min=0),
        "lr_factor": Float(0.5, "each rewind multiplies the learning rate by this",
                           min=0.0, max=1.0, open_min=True),
        "shift_factor": Float(10.0, "each rewind multiplies the SR diagonal shift by this", min=1.0),
    },
    "distributed": {
        "backend": Choice("auto", "communication backend: auto detects a launcher",
                          ["auto", "single", "mpi", "horovod"]),
        "require_gpu": Bool(False, "stop (one line, exit 2) when a rank sees no GPU instead of "
                            "running on the CPU"),
    },
}


def _cross_checks(c: dict) -> None:
    """Checks that involve several keys (after the system is resolved into species)."""
    p = c["potential"]
    check = POTENTIALS.entry(p["type"]).check
    if check is not None:
        check(p, c, "potential")
    factors = c["wavefunction"]["factors"]
    for i, f in enumerate(factors):
        check = FACTORS.entry(f["type"]).check
        if check is not None:
            check(f, c, f"wavefunction.factors.{i}")
    _statistics_check(c)
    _grid_checks(c)
    pretrain_check(c)
    o = c["optimizer"]
    if o["o_matrix"] == "recompute":
        why = None
        if o["type"] == "sr" and o["solver"] not in ("cg", "auto"):
            why = f"optimizer.solver = {o['solver']!r} needs O itself; use cg (or auto)"
        elif o["type"] == "sr" and o["cg_precondition"] == "jacobi":
            why = "cg_precondition = 'jacobi' needs diag(S), i.e. O; use none"
        elif c["excited"]["states"] > 1:
            why = "excited states (excited.states > 1) use the stored O for their overlaps"
        elif c.get("integrator", "sampling") == "grid":
            why = "grid mode has no O (its metric is explicit)"
        if why:
            raise ConfigError(f"optimizer.o_matrix = 'recompute' never forms O, but {why}; "
                              "or set optimizer.o_matrix = stored")
    if o["momentum"] > 0 and o["type"] != "sr":
        raise ConfigError(f"optimizer.momentum = {o['momentum']!r} is SR's (SPRING) momentum but "
                          f"optimizer.type = {o['type']!r}; Adam's momentum is optimizer.beta1")


def _statistics_check(c: dict) -> None:
    """Two or more identical fermions need an antisymmetric factor (a determinant).

    Without one, psi is symmetric in the group and the optimization converges to the
    bosonic state, below the true fermionic ground state (lithium: below -7.478).
    """
    groups = c["system"]["species"]
    factors = c["wavefunction"]["factors"]
    if any(is_antisymmetric(f) for f in factors):
        return
    for k in species_mod.fermion_groups(groups):
        have = ", ".join(f["type"] for f in factors)
        anti = [name for name in FACTORS if FACTORS.entry(name).meta.get("antisymmetric")]
        raise ConfigError(
            f"{species_mod.label(groups, k)} holds {groups[k]['count']} identical fermions "
            f"(count = {groups[k]['count']}, spin {groups[k]['spin'] or 'null'}) but no factor in "
            f"wavefunction.factors ({have}) is antisymmetric: psi would be bosonic and its energy "
            f"below the fermionic ground state; add an antisymmetric (determinant) factor "
            f"(available: {', '.join(anti) or 'none yet'})")


def _grid_checks(c: dict) -> None:
    """Grid mode and excited states (distvmc.grid, distvmc.excited)."""
    nd = c["system"]["particles"] * c["system"]["dim"]
    if c["integrator"] == "grid":
        if nd > 2:
            raise ConfigError(f"integrator = 'grid': total dimension N*D = {nd} (system.particles "
                              f"* system.dim); the grid handles at most 2, use sampling")
        box = c["grid"]["box"]
        if isinstance(box, list) and len(box) != nd:
            raise ConfigError(f"grid.box has {len(box)} entries: must be one number or one "
                              f"per coordinate (N*D = {nd})")
        for k, half in enumerate(box if isinstance(box, list) else [box]):
            if 2 * half / c["grid"]["spacing"] > 20000:
                raise ConfigError(f"grid.spacing = {c['grid']['spacing']!r}: more than 20000 "
                                  f"points along coordinate {k} of the box; use a larger spacing")
    refs = c["excited"]["reference_energies"]
    if refs is not None and len(refs) < c["excited"]["states"]:
        raise ConfigError(f"excited.reference_energies has {len(refs)} entries: needs at least "
                          f"one per state (excited.states = {c['excited']['states']})")
    if c["excited"]["states"] > 1 and not any(
            changes_sign(f) for f in c["wavefunction"]["factors"]):
        raise ConfigError(f"excited.states = {c['excited']['states']}: excited states have "
                          "nodes; add an mlp factor with signed: true to wavefunction.factors")


def _translation_invariant(c: dict) -> bool:
    """The potential and every factor declare translation invariance (registry meta)."""
    if not POTENTIALS.entry(c["potential"]["type"]).meta.get("translation_invariant"):
        return False
    return all(FACTORS.entry(f["type"]).meta.get("translation_invariant")
               for f in c["wavefunction"]["factors"])


def _unit_defaults(raw: dict) -> dict:
    """``system.units: nuclear`` fills in hbar and the masses the file leaves out.

    Works on the raw tree (before defaults): an explicit ``hbar`` or mass wins, and the
    resolved config lists the values used, so it validates to itself.
    """
    system = raw.get("system") if isinstance(raw, dict) else None
    if not isinstance(system, dict) or system.get("units") not in UNITS or system["units"] == "atomic":
        return raw
    preset = UNITS[system["units"]]
    raw = dict(raw)
    system = raw["system"] = dict(system)
    system.setdefault("hbar", preset["hbar"])
    if isinstance(system.get("species"), list):
        system["species"] = [dict(g, mass=g.get("mass", preset["mass"])) if isinstance(g, dict)
                             else g for g in system["species"]]
    elif system.get("mass") is None:
        system["mass"] = preset["mass"]
    return raw


def defaults() -> dict:
    """The full default tree (the bundled hydrogen job), before the system is resolved."""
    return defaults_of(SCHEMA)


def validate(raw: dict) -> Section:
    """Validate a raw tree (possibly partial) into a full :class:`Section`.

    The result's ``to_dict()`` validates again to the same tree (the system is
    resolved: ``species`` listed, ``particles`` their total, ``mass`` null).
    """
    if raw is None:
        raw = {}
    out = validate_section(SCHEMA, _unit_defaults(raw), "")
    electrons = POTENTIALS.entry(out["potential"]["type"]).meta.get("electrons", False)
    species_mod.resolve(out["system"], electrons)
    if out["sampler"]["recentre"] is None:
        out["sampler"]["recentre"] = _translation_invariant(out)
    _cross_checks(out)
    return Section(out)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'sampler.walkers=2048'`` -> (['sampler', 'walkers'], 2048)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. sampler.walkers=2048")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply dotted ``key=value`` overrides to a raw (unvalidated) tree.

    Integer path parts index lists (``wavefunction.factors.0.hidden=[32,32]``).
    Missing factor lists are filled from the defaults so that an override can
    address them.
    """
    raw = copy.deepcopy(raw) if raw else {}
    full = defaults()
    for text in overrides:
        path, value = parse_override(text)
        node, ref = raw, full
        for i, part in enumerate(path[:-1]):
            key = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {text!r}: {key} is not an index of the list")
                node, ref = node[int(part)], None
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[:i])} is not a section")
            if part not in node:
                if isinstance(ref, dict) and isinstance(ref.get(part), list):
                    node[part] = copy.deepcopy(ref[part])
                else:
                    node[part] = {}
            node = node[part]
            ref = ref.get(part) if isinstance(ref, dict) else None
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {text!r}: not an index of the list")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {text!r}: {'.'.join(path[:-1])} is not a section")
    return raw


def load_raw(path: str | None) -> dict:
    """Read a YAML config file into a raw tree (no validation)."""
    if path is None:
        return {}
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path!r} is a directory") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"config file {path!r} is not valid YAML{where}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path!r} must contain a mapping of sections")
    return raw


def _file_defaults(raw: dict, path: str) -> dict:
    """What a config file implies: ``name`` defaults to the file's stem, and a user
    potential's ``path`` becomes absolute (null: the file's directory; relative: to
    it), so that the resolved config records where the module is."""
    raw.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    pot = raw.get("potential")
    if isinstance(pot, dict) and pot.get("type") == "user":
        here = os.path.dirname(os.path.abspath(path))
        where = pot.get("path")
        if where is None:
            pot["path"] = here
        elif isinstance(where, str) and where:
            pot["path"] = os.path.normpath(os.path.join(here, os.path.expanduser(where)))
    return raw


def load(path: str | None = None, overrides: list[str] = ()) -> Section:
    """Load, override and validate a config. ``path=None`` is the default job (hydrogen).

    With a file, ``name`` defaults to the file's stem (``configs/foo.yaml`` -> ``foo``)
    and a user potential's ``path`` is made absolute (see :func:`_file_defaults`).
    """
    raw = apply_overrides(load_raw(path), list(overrides))
    if path is not None:
        raw = _file_defaults(raw, path)
    return validate(raw)


def reference(schema: dict | None = None, prefix: str = "") -> list[str]:
    """Markdown lines documenting every key with its default (for the README)."""
    return reference_lines(SCHEMA if schema is None else schema, prefix)
