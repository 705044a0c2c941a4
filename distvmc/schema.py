"""The config schema machinery: fields, sections, typed variants and registries.

A schema is a nested dict whose leaves are :class:`Field` objects (a default,
a one-line doc and a check), :class:`Variant` (a mapping whose keys depend on
its ``type``), :class:`ListOf` (a list of variants) or :class:`Records` (a list
of mappings with fixed keys). :func:`validate_section` turns a raw tree into
plain values or raises :class:`ConfigError` whose one-line message names the
key, the value and what is allowed. A :class:`Registry` holds named plug-ins
(wavefunction factors, potentials) with the fields of their config section, so
that each plug-in declares its schema in its own file.

This module must not import TensorFlow (see :mod:`distvmc.config`).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping as Mapping_

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


def fail(key, value, allowed):
    """Raise the one-line ConfigError '<key> = <value>: <allowed>'."""
    raise ConfigError(f"{key} = {value!r}: {allowed}")


class Int(Field):
    def __init__(self, default, doc, min=None, max=None, optional=False, **kw):
        super().__init__(default, doc, **kw)
        self.min, self.max, self.optional = min, max, optional

    def describe(self):
        lo = f">= {self.min}" if self.min is not None else ""
        hi = f"<= {self.max}" if self.max is not None else ""
        s = "an integer " + " and ".join(s for s in (lo, hi) if s)
        return s + (" or null" if self.optional else "")

    def check(self, value, key):
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                fail(key, value, f"must be {self.describe().strip()}")
        if (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        ):
            fail(key, value, f"must be {self.describe()}")
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
            fail(key, value, f"must be {self.describe().strip()}")
        value = float(value)
        if not math.isfinite(value):
            fail(key, value, "must be finite")
        if self.min is not None and (value < self.min or (self.open_min and value == self.min)):
            fail(key, value, f"must be {self.describe()}")
        if self.max is not None and (value > self.max or (self.open_max and value == self.max)):
            fail(key, value, f"must be {self.describe()}")
        return value


class Bool(Field):
    def check(self, value, key):
        if not isinstance(value, bool):
            fail(key, value, "must be true or false")
        return value


class Str(Field):
    def __init__(self, default, doc, pattern=None, pattern_doc="", **kw):
        super().__init__(default, doc, **kw)
        self.pattern, self.pattern_doc = pattern, pattern_doc

    def check(self, value, key):
        if value is None and not self.required and self.default is None:
            return None
        if not isinstance(value, str) or (self.required and not value):
            fail(key, value, "must be a non-empty string" + (f" ({self.pattern_doc})" if self.pattern_doc else ""))
        if self.pattern and not re.fullmatch(self.pattern, value):
            fail(key, value, f"must be {self.pattern_doc}")
        return value


class Choice(Field):
    def __init__(self, default, doc, choices, **kw):
        super().__init__(default, doc, **kw)
        self.choices = list(choices)

    def describe(self):
        return "one of " + ", ".join("null" if c is None else str(c) for c in self.choices)

    def check(self, value, key):
        if value not in self.choices:
            fail(key, value, f"must be {self.describe()}")
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
            fail(key, value, f"must be {what}")
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                fail(key, value, f"must be {what}")
            if self.positive and v <= 0:
                fail(key, value, "must contain only numbers > 0")
        if len(items) < self.min_len:
            fail(key, value, f"must have at least {self.min_len} entries")
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
            fail(key, value, "must be a list of positive integers, e.g. [64, 64]")
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
            fail(key, value, "must be a non-empty list of coordinate lists, e.g. [[0, 0, 0]]")
        return [[float(v) for v in r] for r in value]


class Mapping(Field):
    def check(self, value, key):
        if value is None:
            return {}
        if not isinstance(value, dict):
            fail(key, value, "must be a mapping of names to values")
        return dict(value)


class Variant:
    """A mapping whose allowed keys depend on its ``type`` key.

    ``variants`` maps each type to its fields; a :class:`Registry` works too
    and is read live, so types registered at run time validate.
    """

    def __init__(self, default_type: str, doc: str, variants):
        self.default_type, self.doc, self.variants = default_type, doc, variants

    def defaults(self, type_=None):
        type_ = type_ or self.default_type
        out = {"type": type_}
        out.update(defaults_of(self.variants[type_]))
        return out


class ListOf:
    """A non-empty list of Variant mappings."""

    def __init__(self, item: Variant, default: list, doc: str):
        self.item, self.default, self.doc = item, default, doc


class Records(Field):
    """A list of mappings that all have the same ``fields`` (or null, when optional).

    Each item is validated like a section: unknown keys are refused, missing
    keys get their defaults, required ones must be present.
    """

    def __init__(self, default, doc, fields: dict, optional=True, **kw):
        super().__init__(default, doc, **kw)
        self.fields, self.optional = fields, optional

    def check(self, value, key):
        if value is None and self.optional:
            return None
        if not isinstance(value, (list, tuple)) or not value:
            fail(key, value, "must be a non-empty list of mappings with keys "
                 + ", ".join(self.fields))
        return [validate_section(self.fields, item, f"{key}.{i}") for i, item in enumerate(value)]


# ----------------------------------------------------------------------------
# Registry: named, typed plug-ins (factors, potentials) with their schemas.
# ----------------------------------------------------------------------------


class Entry:
    """One registered type: its config ``fields``, its ``builder`` and metadata.

    ``check(item, config, key)``, when given, runs after validation with the
    validated item (a dict), the whole validated config (a dict) and the
    item's dotted key, and raises ConfigError for problems that involve other
    sections. Other metadata (``antisymmetric`` for factors, ...) is read with
    ``entry.meta``.
    """

    def __init__(self, name, fields, builder, check=None, doc="", **meta):
        self.name, self.fields, self.builder = name, dict(fields or {}), builder
        self.check, self.doc, self.meta = check, doc, meta

    def __repr__(self):
        return f"Entry({self.name!r}, fields={list(self.fields)}, meta={self.meta})"


class Registry(Mapping_):
    """name -> :class:`Entry`; as a mapping it reads name -> fields (for :class:`Variant`).

    ``register(name, fields, builder, **meta)`` adds a type; with ``builder``
    omitted it returns a decorator that registers the decorated callable.
    Registering a name twice is an error unless ``replace=True``.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, fields: dict | None = None, builder=None, *,
                 replace: bool = False, check=None, doc: str = "", **meta):
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w]*", name):
            raise ValueError(f"{self.kind} name {name!r}: must be an identifier")
        for k, f in (fields or {}).items():
            if not isinstance(f, Field):
                raise TypeError(f"{self.kind} {name!r}: field {k!r} must be a distvmc.schema "
                                f"Field (Int, Float, Bool, Str, Choice, ...), not {type(f).__name__}")
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered (replace=True overrides)")

        def add(b):
            self._entries[name] = Entry(name, fields, b, check=check, doc=doc, **meta)
            return b

        return add if builder is None else add(builder)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def entry(self, name: str) -> Entry:
        return self._entries[name]

    def __getitem__(self, name):
        return self._entries[name].fields

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return f"Registry({self.kind!r}, {list(self._entries)})"


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
# Defaults and validation.
# ----------------------------------------------------------------------------


def defaults_of(schema) -> dict:
    """The default tree of a schema (nested dicts of fields)."""
    out = {}
    for k, spec in schema.items():
        if isinstance(spec, dict):
            out[k] = defaults_of(spec)
        elif isinstance(spec, Variant):
            out[k] = spec.defaults()
        elif isinstance(spec, ListOf):
            out[k] = [spec.item.defaults(d["type"]) | copy.deepcopy(d) for d in spec.default]
        else:
            out[k] = copy.deepcopy(spec.default)
    return out


def validate_variant(spec: Variant, value, key):
    if not isinstance(value, dict):
        fail(key, value, "must be a mapping with a 'type' key")
    type_ = value.get("type", spec.default_type)
    if not isinstance(type_, str) or type_ not in spec.variants:
        fail(f"{key}.type", type_, "must be one of " + ", ".join(spec.variants))
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


def validate_section(schema: dict, value, prefix: str) -> dict:
    """Validate ``value`` against ``schema`` (nested); ``prefix`` is its dotted key."""
    if not isinstance(value, dict):
        fail(prefix or "config", value, "must be a mapping")
    for k in value:
        if k not in schema:
            where = f"{prefix}.{k}" if prefix else str(k)
            allowed = ", ".join(schema)
            raise ConfigError(f"{where}: unknown key (allowed here: {allowed})")
    out = {}
    for k, spec in schema.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(spec, dict):
            out[k] = validate_section(spec, value.get(k, {}) or {}, key)
        elif isinstance(spec, Variant):
            out[k] = validate_variant(spec, value.get(k, {"type": spec.default_type}), key)
        elif isinstance(spec, ListOf):
            items = value.get(k, defaults_of({k: spec})[k])
            if not isinstance(items, list) or not items:
                fail(key, items, "must be a non-empty list of mappings with a 'type' key")
            out[k] = [validate_variant(spec.item, it, f"{key}.{i}") for i, it in enumerate(items)]
        elif k in value:
            out[k] = spec.check(value[k], key)
        elif spec.required:
            raise ConfigError(f"{key}: required ({spec.doc})")
        else:
            out[k] = copy.deepcopy(spec.default)
    return out




def reference_lines(schema: dict, prefix: str = "") -> list[str]:
    """Markdown table rows documenting every key of ``schema`` with its default."""
    lines = []
    for k, spec in schema.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(spec, dict):
            lines += reference_lines(spec, key)
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
        elif isinstance(spec, Records):
            lines.append(f"| `{key}` | `{spec.default!r}` | {spec.doc} |")
            for fk, f in spec.fields.items():
                default = "required" if f.required else f"`{f.default!r}`"
                lines.append(f"| `{key}.N.{fk}` | {default} | {f.doc} |")
        else:
            lines.append(f"| `{key}` | `{spec.default!r}` | {spec.doc} |")
    return lines
