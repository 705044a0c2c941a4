"""``results.h5``: the machine-readable results of a run, for plain h5py.

Layout (all numbers float64 unless noted)::

    /                          attrs: format = "distvmc-results", format_version,
                               name, distvmc_version, tensorflow_version, ranks,
                               backend, iterations, parameters, walkers_global,
                               reference_energy (NaN when the config has none),
                               rewinds (int)
    /config                    string: the resolved config as YAML
    /history/FIELD             (iterations,) one dataset per history column:
                               iteration, energy, energy_err, variance, tau,
                               acceptance, step, lr, update_norm, nonfinite,
                               seconds, t_sample, t_eloc, t_optimizer,
                               t_jacobian, t_overlap, t_solve (NaN where an
                               iteration has no value); solve: UTF-8 strings
    /evaluation                attrs: energy, energy_err, variance, tau, rhat,
                               samples, nonfinite, acceptance, step, wall_s
    /evaluation/observables/NAME   attrs mean, error, variance, tau, rhat, n
                               (NAME: r, r2, inv_r, per particle)
    /evaluation/radial_density/{r, edges, density, p_r}
                               bin centres (bins,), edges (bins+1,), one-body
                               density (particles per volume), P(r) per particle
    /evaluation/grid/...       grid mode only: energies, variances and overlaps
                               of the states (quadrature)
    /states/K                  grid mode and excited states: attrs of state K
                               (energy, energy_err, variance, iterations,
                               converged (1/0, grid), reference (NaN if none), ...)

Example::

    import h5py
    with h5py.File("runs/he/results.h5") as f:
        e = f["history/energy"][:]
        E, dE = f["evaluation"].attrs["energy"], f["evaluation"].attrs["energy_err"]
        r, p = f["evaluation/radial_density/r"][:], f["evaluation/radial_density/p_r"][:]
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import yaml

from distvmc import __version__
from distvmc.io import HISTORY_FIELDS

FORMAT = "distvmc-results"
FORMAT_VERSION = 1
EVALUATION_SCALARS = ("energy", "energy_err", "variance", "tau", "rhat", "samples", "nonfinite",
                      "acceptance", "step", "wall_s")


def _number(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def history_columns(history: list[dict]) -> dict[str, np.ndarray]:
    """One array per history field; ``solve`` as strings, every other field float64."""
    cols = {}
    extra = [k for k in ("state", "penalty", "overlap_sq") if any(k in r for r in history)]
    for k in extra + HISTORY_FIELDS:
        if k == "solve":
            cols[k] = np.array([str(r.get(k) or "") for r in history], dtype=object)
        else:
            cols[k] = np.array([_number(r.get(k)) for r in history], dtype=np.float64)
    return cols


def _write_evaluation(g: h5py.Group, result: dict) -> None:
    for k in EVALUATION_SCALARS:
        if k in result:
            g.attrs[k] = _number(result[k])
    obs = g.create_group("observables")
    for name, st in (result.get("observables") or {}).items():
        o = obs.create_group(name)
        for k, v in st.items():
            o.attrs[k] = _number(v)
    rho = result.get("radial_density")
    if rho:
        r = g.create_group("radial_density")
        for k, v in rho.items():
            r.create_dataset(k, data=np.asarray(v, dtype=np.float64))
    grid = result.get("grid")
    if isinstance(grid, dict):
        gg = g.create_group("grid")
        for k, v in grid.items():
            a = np.asarray(v)
            if a.dtype.kind in "fiub":
                gg.create_dataset(k, data=a)


def write(path: str, cfg_dict: dict, history: list[dict], result: dict | None,
          meta: dict, states: list[dict] | None = None) -> None:
    """Write ``results.h5`` atomically (temporary file, then rename)."""
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["distvmc_version"] = __version__
        for k, v in meta.items():
            if isinstance(v, str):
                f.attrs[k] = v
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                f.attrs[k] = np.int64(v)
            else:
                f.attrs[k] = _number(v)
        ref = cfg_dict.get("reference_energy")
        f.attrs["reference_energy"] = float("nan") if ref is None else float(ref)
        f.create_dataset("config", data=yaml.safe_dump(cfg_dict, sort_keys=False))
        h = f.create_group("history")
        for k, col in history_columns(history).items():
            if col.dtype == object:
                h.create_dataset(k, shape=col.shape, dtype=h5py.string_dtype(), data=col)
            else:
                h.create_dataset(k, data=col)
        if result is not None:
            _write_evaluation(f.create_group("evaluation"), result)
        for row in states or []:  # grid mode and excited states: one group per state
            g = f.create_group(f"states/{row['state']}")
            for k, v in row.items():
                if isinstance(v, (bool, np.bool_)):
                    g.attrs[k] = int(v)
                elif isinstance(v, (int, float, np.integer, np.floating)) or v is None:
                    g.attrs[k] = _number(v)
    os.replace(tmp, path)


def replace_evaluation(path: str, result: dict) -> None:
    """Swap the /evaluation group of an existing results.h5 (``distvmc evaluate``)."""
    with h5py.File(path, "a") as f:
        if "evaluation" in f:
            del f["evaluation"]
        _write_evaluation(f.create_group("evaluation"), result)
