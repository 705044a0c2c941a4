"""User-defined potentials: ``potential.function: module:function`` in the config.

The function receives positions as a TensorFlow tensor of shape (walkers, N, D)
and the mapping ``potential.params`` as keyword arguments, and returns the
potential energy of each walker, shape (walkers,), with TensorFlow operations
(it is traced into compiled graphs and never differentiated). The module is
imported from ``potential.path`` (config.load makes it absolute: the config
file's directory by default), else from the import path.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np

from distvmc.schema import ConfigError, Mapping, Str
from distvmc.systems.base import Potential, register_potential

FIELDS = {
    "function": Str(None, "module:function computing V from positions "
                    "[walkers, N, D] to energies [walkers]", required=True,
                    pattern=r"[A-Za-z_][\w.]*:[A-Za-z_]\w*",
                    pattern_doc="of the form module:function"),
    "params": Mapping({}, "keyword arguments passed to the function"),
    "path": Str(None, "directory of the module (relative: to the config file's directory; "
                "default: the config file's directory); the resolved config records it absolute"),
}


def load(spec: str, params: dict, path: str | None):
    module_name, _, fn_name = spec.partition(":")
    if path and path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"potential.function = {spec!r}: cannot import module "
                          f"{module_name!r} ({e}); put it on PYTHONPATH or next to the config") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"potential.function = {spec!r}: module {module_name!r} has no "
                          f"function {fn_name!r}")
    params = params.to_dict() if hasattr(params, "to_dict") else dict(params)

    def v(x):
        return fn(x, **params)

    return v


def build(p, system, dtype, config_dir=None) -> Potential:
    return Potential(load(p.function, p.params, p.path or config_dir),
                     centres=np.zeros((1, system.dim)))


register_potential("user", FIELDS, build)
