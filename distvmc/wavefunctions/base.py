"""Factors of psi, their variables, and the registry of factor types.

A factor is an object with ``signed_log(x) -> (sign, log_abs)``: x has shape
(walkers, N, D); log_abs has shape (walkers,); sign has shape (walkers,) with
values in {-1, 0, +1}, or is None for a positive factor. Its trainable
parameters are the ``tf.Variable`` attributes it holds (directly, in lists,
tuples or dicts, or in sub-modules).

Factor classes derive from :class:`Module`, a plain-Python stand-in for
``tf.Module``: subclassing ``tf.Module`` would import TensorFlow when the class
is defined, and the config imports every factor module (for its schema) before
TensorFlow may start. :class:`Module` finds variables in the same order as
``tf.Module`` (attributes sorted by name, a module's own variables before its
sub-modules'), so the flat parameter vector is the same on every rank.

A factor type is one module that declares the fields of its config item and
registers itself::

    @register_factor("my_factor", {"width": Float(1.0, "initial width", min=0.0)})
    class MyFactor(Factor):
        def __init__(self, system, cfg, rng, dtype, name="my_factor"):
            self.log_w = tf.Variable(np.log(cfg.width), dtype=dtype, name="log_w")

        def signed_log(self, x):
            return None, -tf.exp(self.log_w) * tf.reduce_sum(x * x, axis=[1, 2])

The builder (the class, or any callable) is called as
``builder(system, cfg, rng, dtype, name=name)`` with the
:class:`~distvmc.systems.System`, the validated factor item (a Section), a
NumPy generator (the same stream on every rank), the float dtype and a unique
name. ``antisymmetric=True`` declares that the factor changes sign under the
exchange of two identical fermions (a determinant); the config refuses fermion
groups of two or more without one.

The per-sample log-derivatives O (:mod:`distvmc.optimizers.jacobian`) come out of
one batched backward pass for parameters of layers that go through
:func:`~distvmc.wavefunctions.capture.linear` (as :class:`~distvmc.wavefunctions.mlp.Dense`
does) and for parameters read through :func:`~distvmc.wavefunctions.capture.per_sample`
(in the example: ``tf.exp(per_sample(self.log_w, x))``); any other parameter is
differentiated per sample by ``tf.vectorized_map``, which is correct but slower.
"""

from __future__ import annotations

from distvmc.lazytf import tf
from distvmc.schema import Registry

FACTORS = Registry("factor")


def register_factor(name: str, fields: dict | None = None, builder=None, *,
                    antisymmetric: bool = False, changes_sign=False, check=None,
                    doc: str = "", replace: bool = False):
    """Register a factor type (a decorator when ``builder`` is omitted).

    Args:
      name: the value of ``type`` in a ``wavefunction.factors`` item.
      fields: name -> :class:`distvmc.schema.Field`, the item's other keys.
      builder: ``builder(system, cfg, rng, dtype, name=...)`` returning the factor.
      antisymmetric: the factor is antisymmetric under exchange of identical fermions.
      changes_sign: the factor can be negative (nodes): a bool, or a function of the
        validated item (dict) returning one. Excited states need such a factor.
      check: ``check(item: dict, config: dict, key: str)`` raising ConfigError for
        problems involving other sections (runs before TensorFlow starts).
      replace: allow replacing an existing registration.
    """
    return FACTORS.register(name, fields, builder, antisymmetric=antisymmetric,
                            changes_sign=changes_sign, check=check, doc=doc, replace=replace)


def is_antisymmetric(item) -> bool:
    """Whether a factor config item (dict or Section with ``type``) is antisymmetric."""
    return bool(FACTORS.entry(item["type"]).meta.get("antisymmetric", False))


def changes_sign(item) -> bool:
    """Whether a factor config item can be negative (has nodes)."""
    meta = FACTORS.entry(item["type"]).meta
    flag = meta.get("changes_sign", False)
    item = item.to_dict() if hasattr(item, "to_dict") else item
    return bool(flag(item) if callable(flag) else flag) or bool(meta.get("antisymmetric"))


def _leaves(value):
    """Leaves of nested lists, tuples and dicts (dicts by sorted key), like tf.nest.flatten."""
    if isinstance(value, dict):
        for k in sorted(value):
            yield from _leaves(value[k])
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def collect_variables(obj, seen: set | None = None) -> list:
    """The tf.Variables held by ``obj`` (a :class:`Module`), in ``tf.Module`` order.

    Attributes are visited sorted by name; the object's own variables come
    first, then those of its sub-modules (``Module`` or ``tf.Module``) in the
    order met. Attributes named in ``obj._untracked`` are skipped.
    """
    seen = set() if seen is None else seen
    own, subs = [], []
    attrs = vars(obj)
    skip = getattr(obj, "_untracked", ())
    for key in sorted(attrs):
        if key in skip:
            continue
        for leaf in _leaves(attrs[key]):
            if id(leaf) in seen:
                continue
            if isinstance(leaf, tf.Variable):
                seen.add(id(leaf))
                own.append(leaf)
            elif isinstance(leaf, (Module, tf.Module)):
                seen.add(id(leaf))
                subs.append(leaf)
    for sub in subs:
        if isinstance(sub, Module):
            own += collect_variables(sub, seen)
        else:
            for v in sub.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    own.append(v)
    return own


class Module:
    """A plain object whose ``variables`` are the tf.Variables found in its attributes."""

    _untracked: tuple = ()

    @property
    def variables(self) -> list:
        return collect_variables(self)

    @property
    def trainable_variables(self) -> list:
        return [v for v in self.variables if v.trainable]


class Factor(Module):
    """Base class of factors: subclasses define ``signed_log(x) -> (sign | None, log_abs)``."""

    def signed_log(self, x):
        """x: (W, N, D) -> (sign (W,) or None for a positive factor, log|factor| (W,))."""
        raise NotImplementedError

    def log_abs(self, x):
        """x: (W, N, D) -> (W,)."""
        return self.signed_log(x)[1]
