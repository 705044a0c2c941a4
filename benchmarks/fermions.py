"""Fermion benchmark: Li, Be and the 6-electron quantum dot with FermiNet-style orbitals.

For each system (its bundled config: one or two determinants of FermiNet-style
orbitals times the cusp Jastrow) at ``--walkers`` walkers on one rank it reports
local energies per second (exact Laplacian, the config's method), the per-sample
Jacobian O, seconds per full SR iteration split into sampling, local energy,
Jacobian, S/F and solve (the solver ``auto`` picks for the parameter count), and the
peak resident memory of the process. Each system runs in its own process so the
memory figures do not accumulate. ``--li10k`` adds Li with wider streams (about 10k
parameters), the issue's comparison point (at most 2 s per SR iteration at 1024
walkers on this 2-core machine).

    python benchmarks/fermions.py [--iterations 5] [--walkers 1024] [--systems li,be,dot6] [--li10k]

The last line of output is a JSON list with one record per system.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

SYSTEMS = {
    "li": ("lithium.yaml", []),
    "be": ("beryllium.yaml", []),
    "dot6": ("quantum_dot_6.yaml", []),
    # wider one- and two-electron streams: about 10k parameters
    "li10k": ("lithium.yaml", ["wavefunction.factors=[{type: slater, orbitals: ferminet, "
                               "hidden: [48, 48], pair_hidden: [12, 12]}, {type: jastrow}]"]),
}


def one(name: str, walkers: int, iterations: int) -> dict:
    from _common import CONFIGS, best_of, build, fmt_phases, time_iterations

    cfg_file, extra = SYSTEMS[name]
    ov = [f"sampler.walkers={walkers}", "sampler.thermalization=50", "pretrain.iterations=0",
          *extra]
    driver = build(os.path.join(CONFIGS, cfg_file), ov)
    obj = driver.objective
    p, n = driver.wf.n_parameters, obj.system.particles
    print(f"{name}: {n} particles, {p} parameters, {walkers} walkers", flush=True)
    obj.prepare()
    x = obj.sampler.x.numpy()
    t_el = best_of(lambda: obj.local_energy(x), repeat=3)
    t_o = best_of(lambda: obj.log_derivatives(x), repeat=3)
    print(f"  local energy: {walkers / t_el:,.0f} local energies/s ({t_el:.3f} s per batch)")
    print(f"  Jacobian O ({walkers} x {p}): {t_o:.3f} s")
    t = time_iterations(driver, iterations, warmup=1)
    print(f"  SR iteration ({t['solve']}): {fmt_phases(t)}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB
    print(f"  peak resident memory {rss_mb:.0f} MB", flush=True)
    return {"system": name, "particles": n, "parameters": p, "walkers": walkers,
            "local_energies_per_s": walkers / t_el, "jacobian_s": t_o,
            "seconds_per_sr_iteration": t["wall"], "sampling_s": t["t_sample"],
            "local_energy_s": t["t_eloc"], "jacobian_in_iteration_s": t["t_jacobian"],
            "overlap_s": t["t_overlap"], "solve_s": t["t_solve"], "solver": t["solve"],
            "peak_rss_mb": rss_mb, "load_average_1min": os.getloadavg()[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--walkers", type=int, default=1024)
    ap.add_argument("--systems", default="li,be,dot6",
                    help=f"comma-separated, from {', '.join(SYSTEMS)}")
    ap.add_argument("--li10k", action="store_true", help="add Li at about 10k parameters")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: one system, JSON out
    args = ap.parse_args()
    if args.one:
        rec = one(args.one, args.walkers, args.iterations)
        print("RECORD " + json.dumps(rec))
        return
    names = [s for s in args.systems.split(",") if s] + (["li10k"] if args.li10k else [])
    bad = [s for s in names if s not in SYSTEMS]
    if bad:
        sys.exit(f"fermions.py: unknown system(s) {', '.join(bad)}; choose from "
                 f"{', '.join(SYSTEMS)}")
    records = []
    for name in names:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", name,
                              "--walkers", str(args.walkers), "--iterations",
                              str(args.iterations)], capture_output=True, text=True)
        lines = out.stdout.splitlines()
        for line in lines:
            if not line.startswith("RECORD "):
                print(line, flush=True)
        rec = [json.loads(line[7:]) for line in lines if line.startswith("RECORD ")]
        if out.returncode != 0 or not rec:
            tail = out.stderr.strip().splitlines()[-1:] or ["no output"]
            print(f"{name}: failed ({tail[0]})")
            records.append({"system": name, "error": tail[0]})
        else:
            records.append(rec[0])
    print(json.dumps(records))


if __name__ == "__main__":
    main()
