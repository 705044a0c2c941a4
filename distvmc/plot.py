"""``distvmc plot RUN_DIR``: PNG figures of a run (matplotlib, Agg backend).

Reads ``history.csv``, ``config.yaml`` (``reference_energy``) and, when the
run has been evaluated, ``observables.json``; writes into ``RUN_DIR/plots``:

  energy.png          energy per iteration with its error band, the reference
                      energy when the config names one, the evaluation result
  variance.png        variance of the local energy per iteration (log scale)
  acceptance.png      Metropolis acceptance and step width per iteration
  radial_density.png  P(r), the probability density of a particle's distance
                      from the origin, from the evaluation (needs observables.json)

matplotlib is an optional dependency: ``pip install 'distvmc[plot]'``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import yaml

from distvmc.config import ConfigError
from distvmc.io import read_history

INSTALL_HINT = "pip install 'distvmc[plot]' (or: pip install matplotlib)"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(f"distvmc plot needs matplotlib, which is not installed: {INSTALL_HINT}"
                          ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def saver(plt, out_dir: str, written: list[str]):
    """A function save(fig, filename) that writes fig as a PNG into out_dir,
    closes it and appends the path to ``written``."""
    def save(fig, fname):
        path = os.path.join(out_dir, fname)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    return save


def _column(rows: list[dict], key: str) -> np.ndarray:
    out = []
    for r in rows:
        v = r.get(key)
        out.append(float(v) if isinstance(v, (int, float)) and v is not None else np.nan)
    return np.array(out, dtype=np.float64)


def _energy_limits(e, err, extra):
    """y range that shows the converging part: the lower 95% of the data and the markers."""
    lo_data = e - np.nan_to_num(err)
    hi_data = e + np.nan_to_num(err)
    lo = np.nanmin(np.concatenate([lo_data, extra])) if len(lo_data) else np.nanmin(extra)
    start = len(e) // 10
    hi = np.nanquantile(hi_data[start:], 0.95) if len(hi_data[start:]) else np.nanmax(extra)
    hi = max(hi, np.nanmax(extra)) if len(extra) else hi
    pad = 0.08 * max(hi - lo, 1e-6)
    return lo - pad, hi + pad


def plot_run(run_dir: str, out_dir: str | None = None) -> list[str]:
    """Write the PNGs of ``run_dir``; returns their paths."""
    if not os.path.isdir(run_dir):
        raise ConfigError(f"run directory {run_dir!r} not found")
    hist_path = os.path.join(run_dir, "history.csv")
    if not os.path.exists(hist_path):
        raise ConfigError(f"{hist_path!r} not found: not a distvmc run directory")
    plt = _pyplot()
    rows = read_history(run_dir)
    if rows and "state" in rows[0]:  # grid mode or excited states: one curve per state
        return plot_states(run_dir, out_dir, plt)
    cfg = {}
    if os.path.exists(os.path.join(run_dir, "config.yaml")):
        with open(os.path.join(run_dir, "config.yaml")) as f:
            cfg = yaml.safe_load(f) or {}
    obs = None
    if os.path.exists(os.path.join(run_dir, "observables.json")):
        with open(os.path.join(run_dir, "observables.json")) as f:
            obs = json.load(f)
    out_dir = out_dir or os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    name = cfg.get("name", os.path.basename(os.path.normpath(run_dir)))
    ref = cfg.get("reference_energy")
    it = _column(rows, "iteration")
    written = []
    save = saver(plt, out_dir, written)

    # Energy with error band, reference and evaluation.
    e, err = _column(rows, "energy"), _column(rows, "energy_err")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.fill_between(it, e - err, e + err, color="tab:blue", alpha=0.3, lw=0,
                    label="±1 error bar")
    ax.plot(it, e, color="tab:blue", lw=1.0, label="training energy")
    extra = []
    if ref is not None:
        ax.axhline(ref, color="k", ls="--", lw=1.0, label=f"reference {ref:.6f}")
        extra.append(ref)
    if obs is not None and "energy" in obs:
        ev = obs["energy"]
        ax.axhspan(ev["energy"] - ev["energy_err"], ev["energy"] + ev["energy_err"],
                   color="tab:red", alpha=0.25, lw=0)
        ax.axhline(ev["energy"], color="tab:red", lw=1.0,
                   label=f"evaluation {ev['energy']:.6f} ± {ev['energy_err']:.6f}")
        extra.append(ev["energy"])
    if len(e):
        ax.set_ylim(*_energy_limits(e, err, np.array(extra, dtype=np.float64)))
    ax.set_xlabel("iteration")
    ax.set_ylabel("energy")
    ax.set_title(f"{name}: energy")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "energy.png")

    # Variance (log scale).
    var = _column(rows, "variance")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    pos = var > 0
    ax.semilogy(it[pos], var[pos], color="tab:green", lw=1.0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("variance of the local energy")
    ax.set_title(f"{name}: variance")
    ax.grid(alpha=0.3, which="both")
    save(fig, "variance.png")

    # Acceptance and step width.
    acc, step = _column(rows, "acceptance"), _column(rows, "step")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(it, acc, color="tab:purple", lw=1.0, label="acceptance")
    target = (cfg.get("sampler") or {}).get("target_acceptance")
    if target is not None:
        ax.axhline(target, color="tab:purple", ls=":", lw=1.0, label=f"target {target:g}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("acceptance")
    ax2 = ax.twinx()
    ax2.plot(it, step, color="tab:orange", lw=1.0, label="step width")
    ax2.set_ylabel("step width")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    ax.set_title(f"{name}: Metropolis acceptance")
    ax.grid(alpha=0.3)
    save(fig, "acceptance.png")

    # Radial density from the evaluation.
    rho = (obs or {}).get("radial_density")
    if rho:
        r, p = np.asarray(rho["r"]), np.asarray(rho["p_r"])
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot(r, p, color="tab:blue", lw=1.2, drawstyle="steps-mid")
        ax.set_xlabel("r (distance of a particle from the origin)")
        ax.set_ylabel("P(r)  (per particle, integrates to 1)")
        mean_r = (obs.get("r") or {}).get("mean")
        if mean_r is not None:
            ax.axvline(mean_r, color="gray", ls="--", lw=1.0, label=f"<r> = {mean_r:.4f}")
            ax.legend(fontsize=8)
        ax.set_xlim(0, r[-1] + (r[1] - r[0]) / 2 if len(r) > 1 else None)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{name}: radial density (evaluation)")
        ax.grid(alpha=0.3)
        save(fig, "radial_density.png")
    return written


def plot_states(run_dir: str, out_dir: str | None, plt) -> list[str]:
    """PNGs of a grid-mode or excited-state run; returns their paths.

      energy.png   energy per iteration, one curve per state, reference energies dashed
      density.png  (grid mode) the normalized |psi_k|^2 on the grid: curves in 1D,
                   one image per state in 2D
    """
    out_dir = out_dir or os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    rows = read_history(run_dir)
    summary = {}
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    name = summary.get("name", os.path.basename(os.path.normpath(run_dir)))
    written = []
    save = saver(plt, out_dir, written)

    states = sorted({int(r["state"]) for r in rows if r.get("state") is not None})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    finals = {r["state"]: r for r in summary.get("energies", [])}
    for k in states:
        sel = [r for r in rows if int(r["state"]) == k]
        it = np.array([r["iteration"] for r in sel], dtype=float)
        e = np.array([r["energy"] if r["energy"] is not None else np.nan for r in sel])
        c = colors[k % len(colors)]
        fin = finals.get(k, {})
        label = f"state {k}"
        if "energy" in fin:
            label += f": {fin['energy']:.6f}" + (f" ± {fin['energy_err']:.6f}"
                                                  if fin.get("energy_err") else "")
        ax.plot(it, e, color=c, lw=1.0, label=label)
        if fin.get("reference") is not None:
            ax.axhline(fin["reference"], color=c, ls="--", lw=0.8)
    finite = [r["energy"] for r in rows if r.get("energy") is not None]
    if finals and finite:
        lo = min(min(f["energy"] for f in finals.values()), min(finite))
        hi = max(f["energy"] for f in finals.values())
        pad = 0.15 * max(hi - lo, 1e-3)
        ax.set_ylim(lo - pad, hi + 3 * pad)
    ax.set_xlabel("iteration (of each state)")
    ax.set_ylabel("energy")
    ax.set_title(f"{name}: energies of the states (references dashed)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    save(fig, "energy.png")

    dpath = os.path.join(run_dir, "density.json")
    if os.path.exists(dpath):
        with open(dpath) as f:
            dens = json.load(f)
        axes = [np.asarray(a) for a in dens["axes"]]
        if len(axes) == 1:
            fig, ax = plt.subplots(figsize=(7, 4.2))
            for st in dens["states"]:
                ax.plot(axes[0], st["density"], lw=1.2, color=colors[st["state"] % len(colors)],
                        label=f"state {st['state']}: E = {st['energy']:.6f}")
            ax.set_xlabel(dens["coordinates"][0])
            ax.set_ylabel("|psi|^2 (normalized)")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        else:
            n = len(dens["states"])
            fig, axs = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
            for ax, st in zip(axs[0], dens["states"]):
                ax.imshow(np.asarray(st["density"]).T, origin="lower", cmap="viridis",
                          extent=[axes[0][0], axes[0][-1], axes[1][0], axes[1][-1]])
                ax.set_title(f"state {st['state']}: E = {st['energy']:.5f}", fontsize=9)
                ax.set_xlabel(dens["coordinates"][0])
                ax.set_ylabel(dens["coordinates"][1])
        fig.suptitle(f"{name}: grid density |psi_k|^2")
        save(fig, "density.png")
    return written
