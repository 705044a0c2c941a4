"""Preconditioners: turn an objective's :class:`~distvmc.optimizers.sr.Gradient` into a
parameter direction delta (identical on every rank); the driver steps
theta <- theta - lr delta.

``sr``: stochastic reconfiguration (natural gradient), :mod:`.sr`.
``adam``: Adam on the energy gradient, :mod:`.adam`.
"""

from __future__ import annotations

from distvmc.optimizers.adam import Adam
from distvmc.optimizers.sr import SR, Gradient


def make_preconditioner(cfg, comm, n_parameters: int, log=print):
    """The preconditioner that the ``optimizer`` section describes (``log``: where SR
    reports, once, which solver ``auto`` chose; rank 0 only)."""
    if cfg.type == "sr":
        return SR(cfg, comm, n_parameters, log)
    return Adam(cfg, comm, n_parameters)


def learning_rate(cfg, iteration: int) -> float:
    """lr / (1 + lr_decay * t)."""
    return cfg.lr / (1.0 + cfg.lr_decay * iteration)


__all__ = ["SR", "Adam", "Gradient", "make_preconditioner", "learning_rate"]
