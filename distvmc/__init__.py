"""distvmc: variational Monte Carlo with neural-network wavefunctions in TensorFlow."""

import os

# Before TensorFlow is imported anywhere: no C++ info chatter on stderr (so
# errors stay one line), and no oneDNN rewrites (they only speed up float32
# kernels and make float64 round-off depend on the CPU). Users may override both.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"

_API = ("run", "load", "evaluate", "Result")


def __getattr__(name):
    """``distvmc.run``, ``distvmc.load``, ``distvmc.evaluate``, ``distvmc.Result``
    (:mod:`distvmc.api`), imported on first use so that ``import distvmc`` stays light."""
    if name in _API:
        from distvmc import api

        return getattr(api, name)
    raise AttributeError(f"module 'distvmc' has no attribute {name!r}")
