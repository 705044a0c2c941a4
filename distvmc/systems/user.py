"""User-defined potentials: ``potential.function: module:function`` in the config.

The function receives positions as a TensorFlow tensor of shape (walkers, N, D)
and the mapping ``potential.params`` as keyword arguments, and returns the
potential energy of each walker, shape (walkers,), with TensorFlow operations
(it is traced into compiled graphs and never differentiated).
"""

from __future__ import annotations

import importlib
import sys

from distvmc.config import ConfigError


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
