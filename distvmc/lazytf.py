"""A TensorFlow module object that imports TensorFlow on first use.

``from distvmc.lazytf import tf`` lets a module define functions and classes
that use TensorFlow while staying importable without it: validating a config
imports every factor and potential module (for their schemas) and must not pay
TensorFlow's start-up (about 5 s). The first attribute access (``tf.float64``,
``tf.reduce_sum``) imports ``tensorflow``; each attribute is then cached on the
proxy, so later accesses cost a plain attribute lookup.

Do not use ``tf`` at import time (class bases, decorators, module constants):
that would import TensorFlow right away. Factor classes therefore derive from
:class:`distvmc.wavefunctions.base.Module`, not ``tf.Module``.
"""

from __future__ import annotations

import importlib
import sys


class _LazyModule:
    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = getattr(importlib.import_module(self._name), attr)
        object.__setattr__(self, attr, value)  # cache: next lookups skip __getattr__
        return value

    @property
    def imported(self) -> bool:
        """Whether the module has been imported (by anyone)."""
        return self._name in sys.modules

    def __repr__(self):
        state = "imported" if self.imported else "not yet imported"
        return f"<lazy module {self._name!r} ({state})>"


tf = _LazyModule("tensorflow")
