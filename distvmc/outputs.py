"""The run directory's result files, written by rank 0 once a job has finished.

Every mode writes ``summary.json``, ``observables.json``, ``params.h5`` and
``results.h5`` (``config.yaml`` and ``history.csv`` are written as the run
goes). A ground-state sampling run (one state) keeps its flat summary; grid
and excited-state runs add a table of states (``energies``) and the overlap
matrix, and grid runs ``density.json``.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from distvmc import __version__, excited, io, results
from distvmc.grid import grid_density, grid_observables

STATE_HISTORY_FIELDS = ["state"] + io.HISTORY_FIELDS + ["penalty", "overlap_sq"]


def units(cfg) -> tuple[str, str]:
    """(energy unit, length unit) labels of a run: MeV and fm for ``system.units:
    nuclear``, Ha and bohr for atoms and molecules (coulomb), else none (the user's
    units, e.g. hbar omega and oscillator lengths)."""
    if cfg.system.units == "nuclear":
        return "MeV", "fm"
    if cfg.potential.type == "coulomb":
        return "Ha", "bohr"
    return "", ""


def history_fields(job) -> list[str]:
    return STATE_HISTORY_FIELDS if job.multi else io.HISTORY_FIELDS


def _save_states(path: str, wavefunctions: list, extra: dict | None = None,
                 group: str = "grid") -> None:
    """params.h5 of a multi-state run: group ``parameters`` = state 0 (what ``distvmc
    evaluate`` reads) and ``states/<k>`` for every state; ``extra`` arrays go to
    ``<group>/``: for the grid the projection coefficients, log scale and norm of each
    state (state k = (phi_k e^{-shift_k} - sum_j coefficients_k[j] state_j) / sqrt(norm_k));
    for sampling the expansion T (K, K) of each state over the base networks,
    psi_k = sum_i T_ki phi_i, with state k's ``projection`` parameters the -T_ki, i < k."""
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        for k, named in enumerate(wavefunctions):
            g = f.create_group(f"states/{k}")
            for name, v in named.items():
                g.create_dataset(name, data=v)
        g0 = f.create_group("parameters")
        for name, v in wavefunctions[0].items():
            g0.create_dataset(name, data=v)
        f.attrs["n_states"] = len(wavefunctions)
        f.attrs["n_parameters"] = int(sum(np.size(v) for v in wavefunctions[0].values()))
        for key, value in (extra or {}).items():
            f.create_dataset(f"{group}/{key}", data=value)
    os.replace(tmp, path)


def observables_record(result: dict) -> dict:
    return {"energy": {k: result[k] for k in ("energy", "energy_err", "variance", "tau", "rhat")},
            **result["observables"], "radial_density": result["radial_density"],
            "samples": result["samples"], "nonfinite": result.get("nonfinite", 0)}


def state_rows(job) -> list[dict]:
    """One row per found state (energies table of summary.json)."""
    refs = excited.references(job.cfg)
    rows = []
    for f, ref in zip(job.found, refs):
        row = {"state": f.k, "iterations": f.iterations, "train_s": f.train_s, "reference": ref}
        if f.grid is not None:
            st = f.grid
            row.update(energy=st.energy, energy_parts=st.energy_parts,
                       energy_laplacian=st.energy_laplacian, kinetic=st.kinetic,
                       potential=st.potential, edge_ratio=st.edge_ratio,
                       raw_overlaps=np.asarray(st.raw_overlaps).tolist(),
                       variance=f.variance, converged=f.converged)
        else:
            r = f.result
            row.update({k: r[k] for k in ("energy", "energy_err", "variance", "tau", "rhat",
                                          "acceptance", "nonfinite")},
                       penalty=f.penalty, eval_s=r["wall_s"])
        rows.append(row)
    if job.grid_mode:
        grid_error_bounds(rows)
    return rows


def grid_error_bounds(rows: list[dict]) -> None:
    """``energy_err`` of grid states: how far E_k may lie from the exact level.

    Quadrature is deterministic, so the error is the optimization's. With
    sigma_j^2 the energy variance of state j and Delta the smallest gap between
    the levels found, Temple's inequality bounds E_k - exact by sigma_k^2 / Delta,
    and each lower state's residual error leaks through the projection by at most
    sigma_j^2 / Delta, so err_k = sum_{j<=k} sigma_j^2 / Delta (excited states are
    upper bounds only up to the lower states' errors). With one state there is no
    gap: err_0 = sigma_0 (Weinstein: an exact level lies within sigma of E).
    """
    var = [max(float(r["variance"]), 0.0) for r in rows]
    e = sorted(r["energy"] for r in rows)
    gaps = [b - a for a, b in zip(e, e[1:]) if b - a > 0]
    for k, r in enumerate(rows):
        if gaps:
            r["energy_err"] = sum(var[:k + 1]) / min(gaps)
        else:
            r["energy_err"] = var[0] ** 0.5
        r["energy_err_kind"] = "temple" if gaps else "weinstein"


def format_table(rows: list) -> list[str]:
    lines = ["state  energy            error        reference     difference"]
    for r in rows:
        ref = r["reference"]
        diff = f"{r['energy'] - ref:+.3e}" if ref is not None else ""
        rs = f"{ref:.6f}" if ref is not None else ""
        flag = "  NOT CONVERGED" if r.get("converged") is False else ""
        lines.append(f"{r['state']:>5}  {r['energy']:<16.10f}  {r['energy_err']:<11.3e}  "
                     f"{rs:<12}  {diff}{flag}")
    return lines


def write(job, run_dir: str, meta: dict) -> dict:
    """Write the result files (rank 0); returns the summary."""
    import tensorflow as tf

    cfg = job.cfg
    summary = {"name": cfg.name, "integrator": cfg.integrator, "states": len(job.found),
               "reference_energy": cfg.reference_energy, "iterations": job.total_iterations,
               "parameters": (job.found[0].wf or job.wf).n_parameters, "version": __version__,
               "energy_unit": units(cfg)[0], "length_unit": units(cfg)[1], **meta}
    rewinds = [dict(r, state=f.k) if job.multi else r for f in job.found for r in f.rewinds]
    summary["rewinds"] = rewinds
    first = job.found[0]
    if not job.multi:
        r = first.result
        summary.update({k: r[k] for k in ("energy", "energy_err", "variance", "tau", "rhat",
                                          "acceptance", "nonfinite")})
        summary.update(eval_samples=r["samples"], eval_s=r["wall_s"],
                       observables=r["observables"])
        io.save_parameters(os.path.join(run_dir, "params.h5"), first.wf)
        io.write_json(os.path.join(run_dir, "observables.json"), observables_record(r))
        evaluation = r
    else:
        rows = state_rows(job)
        ov, ov_err, ov_sq, ov_sq_err = job.overlaps()
        off = np.asarray(ov) - np.diag(np.diag(ov))
        summary.update(energy=rows[0]["energy"], energy_err=rows[0]["energy_err"], energies=rows,
                       overlaps=np.asarray(ov).tolist(), overlaps_err=np.asarray(ov_err).tolist(),
                       overlaps_sq=np.asarray(ov_sq).tolist(),
                       overlaps_sq_err=np.asarray(ov_sq_err).tolist(),
                       max_overlap=float(np.max(np.abs(off))) if len(rows) > 1 else 0.0,
                       converged=all(r.get("converged") is not False for r in rows))
        if job.grid_mode:
            grid, found = job._grid_energy(job.wf).grid, [f.grid for f in job.found]
            named = []
            for st in found:
                job.wf.set_flat(st.theta)
                named.append(job.wf.named_parameters())
            extra = {"shape": np.array(grid.shape), "half_widths": grid.half_widths,
                     "spacing": grid.spacing}
            for k, st in enumerate(found):
                extra[f"coefficients_{k}"] = st.coefficients
                extra[f"shift_{k}"] = st.info["shift"]
                extra[f"norm_{k}"] = st.info["norm"]
            summary["grid"] = {"shape": list(grid.shape), "spacing": grid.spacing.tolist(),
                               "half_widths": grid.half_widths.tolist(), "kinetic": cfg.grid.kinetic}
            density = grid_density(grid, found, rows)
            io.write_json(os.path.join(run_dir, "density.json"), density)
            _save_states(os.path.join(run_dir, "params.h5"), named, extra)
            obs = grid_observables(grid, job.system, found)
            evaluation = {"energy": rows[0]["energy"], "energy_err": rows[0]["energy_err"],
                          "variance": rows[0]["variance"],
                          "grid": {"energies": [r["energy"] for r in rows],
                                   "variances": [r["variance"] for r in rows],
                                   "overlaps": np.asarray(ov)}}
        else:
            named = [f.wf.named_parameters() for f in job.found]
            expansion = np.zeros((len(job.found), len(job.found)))
            for k, f in enumerate(job.found):
                expansion[k, :len(f.T)] = f.T
            _save_states(os.path.join(run_dir, "params.h5"), named, {"expansion": expansion},
                         group="sampling")
            obs = [dict(f.result["observables"], radial_density=f.result["radial_density"])
                   for f in job.found]
            evaluation = first.result
        io.write_json(os.path.join(run_dir, "observables.json"),
                      {"states": [dict(state=k, energy=r["energy"], energy_err=r["energy_err"], **o)
                                  for k, (r, o) in enumerate(zip(rows, obs))]})
    io.write_json(os.path.join(run_dir, "summary.json"), summary)
    results.write(os.path.join(run_dir, "results.h5"), cfg.to_dict(), job.history, evaluation, {
        "name": cfg.name, "tensorflow_version": tf.__version__, "ranks": meta.get("ranks", 1),
        "backend": meta.get("backend", "single"), "iterations": job.total_iterations,
        "parameters": summary["parameters"], "walkers_global": meta.get("walkers_global", 0),
        "rewinds": len(rewinds)}, states=state_rows(job) if job.multi else None)
    return summary


def report(job, summary: dict, log=print) -> None:
    """The closing lines of a run."""
    if not job.multi:
        return
    rows = summary["energies"]
    for line in format_table(rows):
        log(line)
    ov = summary["overlaps"]
    if len(rows) > 1 and job.grid_mode:
        log("overlaps <psi_i|psi_j> (normalized, quadrature):")
        for row in ov:
            log("  " + "  ".join(f"{v:+.2e}" for v in row))
    elif len(rows) > 1:
        log("overlaps (Monte Carlo, normalized): S = sign(A) sqrt(A B), S^2 = A B with "
            "A = <psi_j/psi_k>_k, B = <psi_k/psi_j>_j")
        for j in range(len(rows)):
            for k in range(j + 1, len(rows)):
                log(f"  S_{j}{k} = {ov[j][k]:+.4f} ± {summary['overlaps_err'][j][k]:.4f}   "
                    f"S^2 = {summary['overlaps_sq'][j][k]:+.2e} ± "
                    f"{summary['overlaps_sq_err'][j][k]:.2e}")
        for j in range(len(rows)):
            for k in range(j + 1, len(rows)):
                if abs(ov[j][k]) - 2 * summary["overlaps_err"][j][k] > 0.1:
                    log(f"warning: states {j} and {k} overlap by {ov[j][k]:.3f} ± "
                        f"{summary['overlaps_err'][j][k]:.3f}: state {k} has partly collapsed; "
                        "raise excited.penalty or optimizer.iterations")
