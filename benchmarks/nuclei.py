"""Alpha particle (A = 4, pionless EFT at Lambda = 4 fm^-1): seconds per SR iteration.

configs/alpha.yaml (DeepSets correlator on x_i - x_cm, pair network, Gaussian
confinement; 1253 parameters) with 4096 walkers on one rank; each iteration
draws one measurement per walker after 10 sweeps. The time is split into
sampling, local energy (exact Laplacian) and SR (per-sample Jacobian, S and F,
solve). The last line of output is one JSON record.

    python benchmarks/nuclei.py [--iterations 10] [--walkers 4096]
"""

from __future__ import annotations

import argparse
import json
import os

from _common import CONFIGS, build, fmt_phases, time_iterations


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--walkers", type=int, default=4096)
    args = ap.parse_args()
    driver = build(f"{CONFIGS}/alpha.yaml", [f"sampler.walkers={args.walkers}",
                                             "sampler.thermalization=100"])
    p = driver.wf.n_parameters
    print(f"alpha (A = 4), Lambda = 4 fm^-1: {p} parameters, {args.walkers} walkers, "
          f"{args.iterations} SR iterations")
    t = time_iterations(driver, args.iterations, warmup=2)
    print(f"  {fmt_phases(t)}")
    sr = sum(t[k] for k in ("t_jacobian", "t_overlap", "t_solve") if t[k] == t[k])
    rec = {"benchmark": "nuclei_alpha_sr_iteration", "walkers": args.walkers, "parameters": p,
           "iterations": args.iterations, "seconds_per_iteration": t["wall"],
           "sampling_s": t["t_sample"], "local_energy_s": t["t_eloc"], "sr_s": sr,
           "solve": t["solve"], "load_average_1min": os.getloadavg()[0]}
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
