"""Observables measured on samples: radial moments and the radial density."""

from __future__ import annotations

import math

import numpy as np

from distvmc import stats


def radial_moments(x: np.ndarray, comm=None, centre_of_mass: bool = False) -> dict:
    """<r>, <r^2>, <1/r> per particle and the rms radius, with error bars.

    Args:
      x: samples of shape (M, W, N, D).
      centre_of_mass: measure r about each sample's centre of mass (equal masses:
        nucleons) instead of the origin; for nuclei this gives the point-nucleon
        radius.

    Returns:
      {"r": Stats-dict, "r2": ..., "inv_r": ..., "rms_radius": {"mean", "error"}}; each average is over particles and
      samples (the per-particle value for identical particles). rms_radius is
      sqrt(<r^2>), its error sigma(<r^2>) / (2 sqrt(<r^2>)).
    """
    if centre_of_mass:
        x = x - np.mean(x, axis=-2, keepdims=True)
    r = np.linalg.norm(x, axis=-1)  # (M, W, N)
    with np.errstate(divide="ignore"):
        out = {
            "r": stats.summarize(r.mean(axis=-1), comm).to_dict(),
            "r2": stats.summarize((r * r).mean(axis=-1), comm).to_dict(),
            "inv_r": stats.summarize((1.0 / r).mean(axis=-1), comm).to_dict(),
        }
    r2, r2_err = out["r2"]["mean"], out["r2"]["error"]
    rms = math.sqrt(max(r2, 0.0))
    out["rms_radius"] = {"mean": rms, "error": r2_err / (2.0 * rms) if rms > 0 else float("nan")}
    return out


def shell_volume(r_lo: np.ndarray, r_hi: np.ndarray, dim: int) -> np.ndarray:
    """Volume of the shell r_lo < r < r_hi in ``dim`` dimensions."""
    unit = math.pi ** (dim / 2) / math.gamma(dim / 2 + 1)  # volume of the unit ball
    return unit * (r_hi ** dim - r_lo ** dim)


def radial_density(x: np.ndarray, bins: int, r_max: float | None, comm=None) -> dict:
    """Radial one-body density about the origin.

    Args:
      x: samples of shape (M, W, N, D).

    Returns:
      {"r": bin centres (bins,), "edges": (bins+1,), "density": rho(r) normalised
      so that sum(rho * shell volume) = N (particles per volume), "p_r": the
      probability density of r per particle (integrates to 1)}.
    """
    r = np.linalg.norm(x, axis=-1).ravel()
    dim, n_particles = x.shape[-1], x.shape[-2]
    if r_max is None:
        local_max = np.array([float(np.quantile(r, 0.999)) if r.size else 0.0])
        r_max = float(comm.allreduce(local_max)[0] / comm.size) if comm is not None else float(local_max[0])
        r_max = max(r_max, 1e-12)
    edges = np.linspace(0.0, r_max, bins + 1)
    counts = np.histogram(r, bins=edges)[0].astype(np.float64)
    total = np.array([float(r.size)])
    if comm is not None:
        counts = comm.allreduce(counts)
        total = comm.allreduce(total)
    width = edges[1] - edges[0]
    p_r = counts / (total[0] * width)
    density = counts / total[0] * n_particles / shell_volume(edges[:-1], edges[1:], dim)
    return {"r": (0.5 * (edges[1:] + edges[:-1])).tolist(), "edges": edges.tolist(),
            "density": density.tolist(), "p_r": p_r.tolist()}
