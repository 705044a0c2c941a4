"""No potential (free particles): ``potential: {type: none}``."""

from __future__ import annotations

import numpy as np

from distvmc.lazytf import tf
from distvmc.systems.base import Potential, register_potential


def build(p, system, dtype, config_dir=None) -> Potential:
    return Potential(lambda x: tf.zeros(tf.shape(x)[:1], dtype=x.dtype),
                     centres=np.zeros((1, system.dim)))


register_potential("none", {}, build)
