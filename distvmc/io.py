"""Run directories: resolved config, history, parameters, summary."""

from __future__ import annotations

import csv
import json
import os
import time

import h5py
import numpy as np
import yaml

from distvmc.config import ConfigError

HISTORY_FIELDS = ["iteration", "energy", "energy_err", "variance", "tau", "acceptance",
                  "step", "lr", "update_norm", "clipped", "solve", "nonfinite", "seconds",
                  "t_sample", "t_eloc", "t_optimizer", "t_jacobian", "t_overlap", "t_solve"]


def make_run_dir(path: str | None, name: str) -> str:
    """Create (or reuse an empty) run directory and check it is writable."""
    if path is None:
        path = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"output.dir = {path!r}: cannot write there ({e.strerror})") from None
    return path


def write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=_jsonable)
        f.write("\n")
    os.replace(tmp, path)


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v)}")


def write_config(run_dir: str, cfg_dict: dict) -> None:
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(cfg_dict, f, sort_keys=False)


class History:
    """Per-iteration records, appended to ``history.csv`` as they arrive."""

    def __init__(self, run_dir: str | None, fields: list[str] = HISTORY_FIELDS):
        self.rows: list[dict] = []
        self.fields = list(fields)
        self.path = os.path.join(run_dir, "history.csv") if run_dir else None
        if self.path:
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.fields)

    def append(self, row: dict) -> None:
        self.rows.append(row)
        if self.path:
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerow([_fmt(row.get(k, "")) for k in self.fields])

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the file's rows by ``rows`` (after a resume or a rewind), atomically."""
        self.rows = list(rows)
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(self.fields)
                for row in self.rows:
                    w.writerow([_fmt(row.get(k, "")) for k in self.fields])
            os.replace(tmp, self.path)


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return v


def read_history(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        d = {}
        for k, v in r.items():
            try:
                d[k] = float(v) if v not in ("", None) else None
            except ValueError:
                d[k] = v
        out.append(d)
    return out


def save_parameters(path: str, wavefunction) -> None:
    """Write the trainable parameters to an HDF5 file (atomically)."""
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        g = f.create_group("parameters")
        for k, v in wavefunction.named_parameters().items():
            g.create_dataset(k, data=v)
        f.attrs["n_parameters"] = wavefunction.n_parameters
    os.replace(tmp, path)


def load_parameters(path: str, wavefunction) -> None:
    """Read parameters written by :func:`save_parameters` into ``wavefunction``."""
    if not os.path.exists(path):
        raise ConfigError(f"parameter file {path!r} not found")
    with h5py.File(path, "r") as f:
        g = f["parameters"]
        names = list(wavefunction.named_parameters())
        if sorted(g.keys()) != sorted(names):
            raise ConfigError(f"{path}: parameters do not match the configured wavefunction")
        for name, var in zip(names, wavefunction.parameters):
            var.assign(g[name][...])
