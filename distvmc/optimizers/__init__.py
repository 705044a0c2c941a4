"""Optimizers of the variational parameters from sampled configurations.

Both optimizers take the same inputs each iteration: the configurations x of
this rank, shape (S, N, D), and their local energies, shape (S,), and update
the wavefunction's parameters identically on every rank.

``sr``: stochastic reconfiguration (natural gradient), :mod:`.sr`.
``adam``: Adam on the energy gradient, :mod:`.adam`.
"""

from __future__ import annotations

from distvmc.optimizers.adam import Adam
from distvmc.optimizers.sr import SR


def make_optimizer(cfg, wavefunction, comm, chunk_size: int):
    """The optimizer that the ``optimizer`` section describes."""
    if cfg.type == "sr":
        return SR(wavefunction, cfg, comm, chunk_size)
    return Adam(wavefunction, cfg, comm, chunk_size)


def learning_rate(cfg, iteration: int) -> float:
    """lr / (1 + lr_decay * t)."""
    return cfg.lr / (1.0 + cfg.lr_decay * iteration)
