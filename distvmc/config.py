"""Run configuration: one tree of defaults, validated before TensorFlow starts.

A config is a nested mapping read from YAML and overridden by ``key=value``
pairs from the command line (``sampler.walkers=2048``). Every key has a
default and a one-line documentation string in :data:`SCHEMA`; the defaults
alone describe the bundled job (the hydrogen atom). Validation turns the tree
into :class:`Section` objects (attribute access, plain Python values) or raises
:class:`ConfigError` whose message names the key, the value and what is
allowed, on one line.

This module must not import TensorFlow: the command line validates a config
before paying for TensorFlow's start-up.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem; ``str(err)`` is one line for the user."""


# ----------------------------------------------------------------------------
# Field kinds. Each takes a value and a dotted key and returns the clean value
# or raises ConfigError.
# ----------------------------------------------------------------------------


class Field:
    def __init__(self, default, doc: str, required: bool = False):
        self.default = default
        self.doc = doc
        self.required = required

    def check(self, value, key):  # pragma: no cover - overridden
        return value

    def describe(self) -> str:
        return ""


_SCI = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml11_float(value):
    """YAML 1.1 reads ``1e-8`` (no dot) as a string; accept it as the number it is."""
    if isinstance(value, str) and _SCI.fullmatch(value.strip()):
        return float(value)
    return value


def _fail(key, value, allowed):
    raise ConfigError(f"{key} = {value!r}: {allowed}")


class Int(Field):
    def __init__(self, default, doc, min=None, max=None, **kw):
        super().__init__(default, doc, **kw)
        self.min, self.max = min, max

    def describe(self):
        lo = f">= {self.min}" if self.min is not None else ""
        hi = f"<= {self.max}" if self.max is not None else ""
        return "an integer " + " and ".join(s for s in (lo, hi) if s)

    def check(self, value, key):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                _fail(key, value, f"must be {self.describe().strip()}")
        if (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        ):
            _fail(key, value, f"must be {self.describe()}")
        return value


class Float(Field):
    def __init__(self, default, doc, min=None, max=None, open_min=False,
                 open_max=False, optional=False, **kw):
        super().__init__(default, doc, **kw)
        self.min, self.max = min, max
        self.open_min, self.open_max = open_min, open_max
        self.optional = optional

    def describe(self):
        parts = []
        if self.min is not None:
            parts.append(("> " if self.open_min else ">= ") + f"{self.min:g}")
        if self.max is not None:
            parts.append(("< " if self.open_max else "<= ") + f"{self.max:g}")
        s = "a number " + " and ".join(parts)
        return s + (" or null" if self.optional else "")

    def check(self, value, key):
        if value is None and self.optional:
            return None
        value = _yaml11_float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, value, f"must be {self.describe().strip()}")
        value = float(value)
        if not math.isfinite(value):
            _fail(key, value, "must be finite")
        if self.min is not None and (value < self.min or (self.open_min and value == self.min)):
            _fail(key, value, f"must be {self.describe()}")
        if self.max is not None and (value > self.max or (self.open_max and value == self.max)):
            _fail(key, value, f"must be {self.describe()}")
        return value


class Bool(Field):
    def check(self, value, key):
        if not isinstance(value, bool):
            _fail(key, value, "must be true or false")
        return value


class Str(Field):
    def __init__(self, default, doc, pattern=None, pattern_doc="", **kw):
        super().__init__(default, doc, **kw)
        self.pattern, self.pattern_doc = pattern, pattern_doc

    def check(self, value, key):
        if value is None and not self.required and self.default is None:
            return None
        if not isinstance(value, str) or (self.required and not value):
            _fail(key, value, "must be a non-empty string" + (f" ({self.pattern_doc})" if self.pattern_doc else ""))
        if self.pattern and not re.fullmatch(self.pattern, value):
            _fail(key, value, f"must be {self.pattern_doc}")
        return value


class Choice(Field):
    def __init__(self, default, doc, choices, **kw):
        super().__init__(default, doc, **kw)
        self.choices = list(choices)

    def describe(self):
        return "one of " + ", ".join(map(str, self.choices))

    def check(self, value, key):
        if value not in self.choices:
            _fail(key, value, f"must be {self.describe()}")
        return value


class FloatList(Field):
    """A list of numbers (or a single number, when ``scalar_ok``)."""

    def __init__(self, default, doc, positive=False, scalar_ok=False,
                 min_len=0, length_of: str | None = None, **kw):
        super().__init__(default, doc, **kw)
        self.positive, self.scalar_ok, self.min_len = positive, scalar_ok, min_len

    def check(self, value, key):
        what = "a positive number or a list of them" if self.scalar_ok else "a list of numbers"
        if self.scalar_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
            items, scalar = [value], True
        elif isinstance(value, (list, tuple)):
            items, scalar = [_yaml11_float(v) for v in value], False
        else:
            _fail(key, value, f"must be {what}")
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                _fail(key, value, f"must be {what}")
            if self.positive and v <= 0:
                _fail(key, value, "must contain only numbers > 0")
        if len(items) < self.min_len:
            _fail(key, value, f"must have at least {self.min_len} entries")
        items = [float(v) for v in items]
        return items[0] if scalar else items


class OptionalFloatList(FloatList):
    """A :class:`FloatList` that may also be null (its default)."""

    def check(self, value, key):
        return None if value is None else super().check(value, key)


class IntList(Field):
    def check(self, value, key):
        if not isinstance(value, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value
        ):
            _fail(key, value, "must be a list of positive integers, e.g. [64, 64]")
        return list(value)


class Matrix(Field):
    """A list of equal-length lists of numbers (e.g. nuclear positions)."""

    def check(self, value, key):
        ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
            isinstance(r, (list, tuple)) and len(r) == len(value[0])
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
            for r in value
        )
        if not ok:
            _fail(key, value, "must be a non-empty list of coordinate lists, e.g. [[0, 0, 0]]")
        return [[float(v) for v in r] for r in value]


class Mapping(Field):
    def check(self, value, key):
        if value is None:
            return {}
        if not isinstance(value, dict):
            _fail(key, value, "must be a mapping of names to values")
        return dict(value)


class Variant:
    """A mapping whose allowed keys depend on its ``type`` key."""

    def __init__(self, default_type: str, doc: str, variants: dict[str, dict]):
        self.default_type, self.doc, self.variants = default_type, doc, variants

    def defaults(self, type_=None):
        type_ = type_ or self.default_type
        out = {"type": type_}
        out.update(_defaults(self.variants[type_]))
        return out


class ListOf:
    """A non-empty list of Variant mappings."""

    def __init__(self, item: Variant, default: list, doc: str):
        self.item, self.default, self.doc = item, default, doc


# ----------------------------------------------------------------------------
# The schema. Defaults describe the hydrogen atom with an MLP times an
# exponential envelope, optimized by stochastic reconfiguration.
# ----------------------------------------------------------------------------

ACTIVATIONS = ["tanh", "softplus", "sigmoid", "silu", "gelu", "cos"]

FACTOR = Variant("mlp", "one factor of psi; log|psi| is the sum of the factors' logs", {
    "mlp": {
        "hidden": IntList([16, 24], "hidden layer widths"),
        "activation": Choice("tanh", "hidden-layer nonlinearity", ACTIVATIONS),
        "inputs": Choice("coords", "coords: raw coordinates (N*D inputs); distances: "
                         "particle-centre distances and pair distances (rotation invariant)",
                         ["coords", "distances"]),
        "symmetrize": Bool(False, "sum the network over all particle permutations "
                           "(bosonic symmetry; at most 4 particles, use deepsets beyond)"),
        "output_scale": Float(0.1, "scale of the last layer's initial weights", min=0.0),
        "init": Choice("glorot", "weight initialisation", ["glorot", "he", "normal"]),
        "signed": Bool(False, "the network output f is the amplitude itself: log|f| and "
                       "sign(f), so psi can have nodes (excited states)"),
    },
    "deepsets": {
        "phi": IntList([32, 32], "per-particle network widths (last one is the latent size)"),
        "rho": IntList([32], "hidden widths of the network on the pooled latent vector"),
        "activation": Choice("tanh", "nonlinearity", ACTIVATIONS),
        "output_scale": Float(0.1, "scale of the last layer's initial weights", min=0.0),
        "init": Choice("glorot", "weight initialisation", ["glorot", "he", "normal"]),
    },
    "jastrow": {
        "cusp": Float(None, "pair cusp a in u(r) = a r / (1 + b r); null: 1/(D-1) for "
                      "Coulomb-interacting particles, else trainable from 0", optional=True),
        "b": Float(1.0, "initial Pade parameter b (trainable, kept positive)", min=0.0, open_min=True),
    },
    "gaussian_envelope": {
        "alpha": Float(0.5, "initial width parameter: log psi = -alpha * sum |x|^2", min=0.0, open_min=True),
        "trainable": Bool(True, "optimize alpha"),
    },
    "exp_envelope": {
        "decay": Float(None, "initial decay a in exp(-a r) per nucleus; null: the nuclear "
                       "charge (nuclear cusp)", optional=True, min=0.0, open_min=True),
        "trainable": Bool(True, "optimize the decay (false keeps the exact nuclear cusp)"),
    },
})

SCHEMA: dict[str, Any] = {
    "name": Str("hydrogen", "run name, used for the run directory"),
    "seed": Int(0, "random seed; each rank derives its own stream from (seed, rank)", min=0),
    "integrator": Choice("sampling", "how energies are integrated: sampling (Metropolis, any "
                         "dimension) or grid (quadrature on a box, total dimension N*D <= 2)",
                         ["sampling", "grid"]),
    "precision": Choice("float64", "floating-point precision of the wavefunction and energies",
                        ["float64", "float32"]),
    "reference_energy": Float(-0.5, "exact or best-known energy, for reports and plots", optional=True),
    "system": {
        "particles": Int(1, "number of particles N", min=1),
        "dim": Int(3, "spatial dimensions D", min=1, max=3),
        "mass": FloatList(1.0, "particle mass (one value, or one per particle); "
                          "kinetic prefactor hbar^2/(2m) per particle", positive=True, scalar_ok=True),
        "hbar": Float(1.0, "Planck's constant in the chosen units (1 in atomic units; "
                      "197.327 MeV fm with masses in MeV)", min=0.0, open_min=True),
    },
    "potential": Variant("coulomb", "the potential energy V(x)", {
        "coulomb": {
            "nuclei": Matrix([[0.0, 0.0, 0.0]], "clamped nuclear positions, one [D] list each"),
            "charges": FloatList([1.0], "nuclear charges Z, one per nucleus", positive=True, min_len=1),
            "electron_electron": Bool(True, "include the 1/r_ij repulsion between particles"),
        },
        "harmonic": {
            "omega": FloatList(1.0, "trap frequency (one value, or one per dimension)",
                               positive=True, scalar_ok=True),
            "interaction": Choice("none", "pair interaction: none, or coulomb "
                                  "(coupling/r_ij; quantum dots, Hooke's atom)", ["none", "coulomb"]),
            "coupling": Float(1.0, "strength of the pair interaction", min=0.0),
        },
        "user": {
            "function": Str(None, "module:function computing V from positions "
                            "[walkers, N, D] to energies [walkers]", required=True,
                            pattern=r"[A-Za-z_][\w.]*:[A-Za-z_]\w*",
                            pattern_doc="of the form module:function"),
            "params": Mapping({}, "keyword arguments passed to the function"),
            "path": Str(None, "directory added to the import path (default: the config's directory)"),
        },
        "none": {},
    }),
    "wavefunction": {
        "factors": ListOf(FACTOR, [
            {"type": "mlp"},
            {"type": "exp_envelope", "decay": 0.5},
        ], "factors multiplied into psi"),
    },
    "sampler": {
        "walkers": Int(1024, "Metropolis walkers per rank", min=1),
        "step": Float(0.5, "initial Gaussian proposal width (all-particle moves)", min=0.0, open_min=True),
        "target_acceptance": Float(0.5, "acceptance rate the step width is adapted toward",
                                   min=0.0, max=1.0, open_min=True, open_max=True),
        "adapt": Choice("always", "when to adapt the step width", ["always", "thermalization", "never"]),
        "thermalization": Int(200, "sweeps before the first measurement", min=0),
        "sweeps_per_sample": Int(10, "sweeps between measurements (decorrelation)", min=1),
        "samples_per_walker": Int(1, "measurements per walker per iteration", min=1),
        "init_width": Float(1.0, "spread of the initial walkers around the nuclei or origin",
                            min=0.0, open_min=True),
    },
    "hamiltonian": {
        "laplacian": Choice("hessian", "exact Laplacian method (all three agree; "
                            "hessian is XLA-compiled and fastest here)",
                            ["hessian", "fwd_over_rev", "fwd_over_fwd"]),
        "chunk_size": Int(16384, "walkers per local-energy / Jacobian batch (bounds memory)", min=1),
    },
    "optimizer": {
        "type": Choice("sr", "optimizer", ["sr", "adam"]),
        "iterations": Int(300, "optimization iterations", min=0),
        "lr": Float(0.05, "learning rate", min=0.0, open_min=True),
        "lr_decay": Float(0.0, "lr_t = lr / (1 + lr_decay * t)", min=0.0),
        "shift": Float(1e-3, "SR diagonal shift epsilon in (S + epsilon) delta = F", min=0.0),
        "solver": Choice("auto", "SR solver: dense (P x P overlap), samplespace (N x N, "
                         "Woodbury), auto (samplespace when samples < parameters)",
                         ["auto", "dense", "samplespace"]),
        "max_update_norm": Float(None, "clip the norm of lr*delta to this value", optional=True,
                                 min=0.0, open_min=True),
        "beta1": Float(0.9, "Adam beta1", min=0.0, max=1.0, open_max=True),
        "beta2": Float(0.999, "Adam beta2", min=0.0, max=1.0, open_max=True),
        "epsilon": Float(1e-8, "Adam epsilon", min=0.0, open_min=True),
    },
    "evaluation": {
        "samples": Int(200000, "samples (per rank) in the final evaluation with frozen parameters", min=1),
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
        "tolerance": Float(1e-9, "stop a state's optimization once E changed by less than this "
                           "over 20 iterations (0: always run optimizer.iterations)", min=0.0),
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
    },
}


# ----------------------------------------------------------------------------
# Section: read-only attribute view of a validated mapping.
# ----------------------------------------------------------------------------


class Section:
    def __init__(self, data: dict):
        object.__setattr__(self, "_data", data)

    def __getattr__(self, name):
        try:
            v = self._data[name]
        except KeyError:
            raise AttributeError(name) from None
        return _wrap(v)

    def __getitem__(self, name):
        return _wrap(self._data[name])

    def __contains__(self, name):
        return name in self._data

    def __iter__(self):
        return iter(self._data)

    def keys(self):
        return self._data.keys()

    def items(self):
        return [(k, _wrap(v)) for k, v in self._data.items()]

    def __setattr__(self, name, value):
        raise AttributeError("configuration is read-only")

    def get(self, name, default=None):
        return _wrap(self._data.get(name, default))

    def to_dict(self) -> dict:
        return copy.deepcopy(self._data)

    def __repr__(self):
        return f"Section({self._data!r})"


def _wrap(v):
    if isinstance(v, dict):
        return Section(v)
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return [Section(x) for x in v]
    return v


# ----------------------------------------------------------------------------
# Defaults, validation, loading, overrides.
# ----------------------------------------------------------------------------


def _defaults(schema) -> dict:
    out = {}
    for k, spec in schema.items():
        if isinstance(spec, dict):
            out[k] = _defaults(spec)
        elif isinstance(spec, Variant):
            out[k] = spec.defaults()
        elif isinstance(spec, ListOf):
            out[k] = [spec.item.defaults(d["type"]) | {kk: vv for kk, vv in d.items()}
                      for d in spec.default]
        else:
            out[k] = copy.deepcopy(spec.default)
    return out


def defaults() -> dict:
    """The full default tree (the bundled hydrogen job)."""
    return _defaults(SCHEMA)


def _validate_variant(spec: Variant, value, key):
    if not isinstance(value, dict):
        _fail(key, value, "must be a mapping with a 'type' key")
    type_ = value.get("type", spec.default_type)
    if type_ not in spec.variants:
        _fail(f"{key}.type", type_, "must be one of " + ", ".join(spec.variants))
    fields = spec.variants[type_]
    out = {"type": type_}
    for k, v in value.items():
        if k == "type":
            continue
        if k not in fields:
            allowed = ", ".join(fields) or "no other keys"
            raise ConfigError(f"{key}.{k}: unknown key for type '{type_}' (allowed: {allowed})")
    for k, f in fields.items():
        if k in value:
            out[k] = f.check(value[k], f"{key}.{k}")
        elif f.required:
            raise ConfigError(f"{key}.{k}: required for type '{type_}' ({f.doc})")
        else:
            out[k] = copy.deepcopy(f.default)
    return out


def _validate(schema: dict, value, prefix: str) -> dict:
    if not isinstance(value, dict):
        _fail(prefix or "config", value, "must be a mapping")
    for k in value:
        if k not in schema:
            where = f"{prefix}.{k}" if prefix else str(k)
            allowed = ", ".join(schema)
            raise ConfigError(f"{where}: unknown key (allowed here: {allowed})")
    out = {}
    for k, spec in schema.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(spec, dict):
            out[k] = _validate(spec, value.get(k, {}) or {}, key)
        elif isinstance(spec, Variant):
            out[k] = _validate_variant(spec, value.get(k, {"type": spec.default_type}), key)
        elif isinstance(spec, ListOf):
            items = value.get(k, _defaults({k: spec})[k])
            if not isinstance(items, list) or not items:
                _fail(key, items, "must be a non-empty list of mappings with a 'type' key")
            out[k] = [_validate_variant(spec.item, it, f"{key}.{i}") for i, it in enumerate(items)]
        elif k in value:
            out[k] = spec.check(value[k], key)
        elif spec.required:
            raise ConfigError(f"{key}: required ({spec.doc})")
        else:
            out[k] = copy.deepcopy(spec.default)
    return out


def _cross_checks(c: dict) -> None:
    """Checks that involve several keys."""
    s, p = c["system"], c["potential"]
    n, d = s["particles"], s["dim"]
    if isinstance(s["mass"], list) and len(s["mass"]) != n:
        raise ConfigError(f"system.mass has {len(s['mass'])} entries: must be one number "
                          f"or one per particle ({n})")
    if p["type"] == "coulomb":
        if len(p["nuclei"]) != len(p["charges"]):
            raise ConfigError(f"potential.charges has {len(p['charges'])} entries but "
                              f"potential.nuclei has {len(p['nuclei'])}: need one charge per nucleus")
        if len(p["nuclei"][0]) != d:
            raise ConfigError(f"potential.nuclei: positions have {len(p['nuclei'][0])} "
                              f"coordinates but system.dim = {d}")
    if p["type"] == "harmonic" and isinstance(p["omega"], list) and len(p["omega"]) != d:
        raise ConfigError(f"potential.omega has {len(p['omega'])} entries: must be one "
                          f"number or one per dimension ({d})")
    for i, f in enumerate(c["wavefunction"]["factors"]):
        if f["type"] == "mlp" and f["symmetrize"] and n > 4:
            raise ConfigError(f"wavefunction.factors.{i}.symmetrize: {n} particles means "
                              f"{n}! permutations; use a deepsets factor beyond 4 particles")
        if f["type"] == "exp_envelope" and p["type"] != "coulomb" and f["decay"] is None:
            raise ConfigError(f"wavefunction.factors.{i}.decay: required unless the potential "
                              "is coulomb (where it defaults to the nuclear charge)")
    _grid_checks(c)


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
            f["type"] == "mlp" and f["signed"] for f in c["wavefunction"]["factors"]):
        raise ConfigError(f"excited.states = {c['excited']['states']}: excited states have "
                          "nodes; add an mlp factor with signed: true to wavefunction.factors")


def validate(raw: dict) -> Section:
    """Validate a raw tree (possibly partial) into a full :class:`Section`."""
    if raw is None:
        raw = {}
    out = _validate(SCHEMA, raw, "")
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


def load(path: str | None = None, overrides: list[str] = ()) -> Section:
    """Load, override and validate a config. ``path=None`` is the default job."""
    return validate(apply_overrides(load_raw(path), list(overrides)))


def reference(schema: dict | None = None, prefix: str = "") -> list[str]:
    """Markdown lines documenting every key with its default (for the README)."""
    schema = SCHEMA if schema is None else schema
    lines = []
    for k, spec in schema.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(spec, dict):
            lines += reference(spec, key)
        elif isinstance(spec, Variant):
            lines.append(f"| `{key}.type` | `{spec.default_type}` | {spec.doc}: "
                         + ", ".join(spec.variants) + " |")
            for t, fields in spec.variants.items():
                for fk, f in fields.items():
                    lines.append(f"| `{key}.{fk}` ({t}) | `{f.default!r}` | {f.doc} |")
        elif isinstance(spec, ListOf):
            lines.append(f"| `{key}` | see configs | {spec.doc}; each item has a `type`: "
                         + ", ".join(spec.item.variants) + " |")
            for t, fields in spec.item.variants.items():
                for fk, f in fields.items():
                    lines.append(f"| `{key}.N.{fk}` ({t}) | `{f.default!r}` | {f.doc} |")
        else:
            lines.append(f"| `{key}` | `{spec.default!r}` | {spec.doc} |")
    return lines
