"""The lecture's hydrogen workload: seconds per SR iteration.

500 walkers; each iteration takes 30 measurements per walker, each after 100
Metropolis sweeps (15,000 samples, 3,000 sweeps); network 3 -> 16 -> 24 -> 1
(tanh) times an exponential envelope (498 parameters here); SR with a dense
float64 solve.

    python benchmarks/hydrogen_lecture.py [--iterations 20]
"""

from __future__ import annotations

import argparse
import json

from _common import CONFIGS, build, fmt_phases, time_iterations


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()
    vmc = build(f"{CONFIGS}/hydrogen.yaml", [
        "sampler.walkers=500", "sampler.samples_per_walker=30", "sampler.sweeps_per_sample=100",
        "sampler.thermalization=100", "optimizer.solver=dense"])
    print(f"hydrogen lecture workload: {vmc.wf.n_parameters} parameters, 500 walkers x 30 "
          f"measurements x 100 sweeps per iteration")
    t = time_iterations(vmc, args.iterations, warmup=2)
    print(f"  {fmt_phases(t)}")
    print("  target 0.16 s; the lecture's own TensorFlow code: about 3.2 s on this machine")
    sweeps = 30 * 100
    print(json.dumps({"s_per_iteration": t["wall"], "sweep_us": t["t_sample"] / sweeps * 1e6,
                      **{k: t[k] for k in ("t_sample", "t_eloc", "t_jacobian", "t_overlap",
                                           "t_solve")}}))


if __name__ == "__main__":
    main()
