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


def import_tensorflow_quietly():
    """Import TensorFlow with its C++ start-up lines hidden; returns the module.

    The ``tensorflow`` wheel probes for CUDA at import and, on a machine without a
    GPU driver, writes "Could not find cuda drivers ..." (and absl's "before
    InitializeLog" notice) straight to file descriptor 2, before any log filter
    (TF_CPP_MIN_LOG_LEVEL) applies, and "failed call to cuInit" when the devices are
    first listed. File descriptor 2 points to /dev/null while TensorFlow is first
    imported and its devices listed, so that distvmc's errors stay one line and its
    output readable (each rank reports its device itself, distvmc.comm); a failing
    import still raises as usual. Where TensorFlow is already imported this is a
    dictionary lookup.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    import os

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow

        tensorflow.config.list_physical_devices()  # CUDA probing ("failed call to cuInit")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow
