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
    common = ["sampler.walkers=500", "sampler.samples_per_walker=30",
              "sampler.sweeps_per_sample=100", "sampler.thermalization=100",
              "optimizer.solver=dense"]
    vmc = build(f"{CONFIGS}/hydrogen.yaml", common)
    one = build(f"{CONFIGS}/hydrogen.yaml", common + ["sampler.walker_groups=1"])
    fore = build(f"{CONFIGS}/hydrogen.yaml", common)  # random numbers drawn in the foreground
    fore.objective.sampler.prefetch = False
    groups = vmc.objective.sampler.walker_groups
    print(f"hydrogen lecture workload: {vmc.wf.n_parameters} parameters, 500 walkers x 30 "
          f"measurements x 100 sweeps per iteration; sampler.walker_groups auto = {groups}")
    sweeps = 30 * 100
    t1 = time_iterations(one, args.iterations, warmup=2)
    t = time_iterations(vmc, args.iterations, warmup=2)
    tf_ = time_iterations(fore, args.iterations, warmup=2)
    print(f"  walker_groups 1:      {fmt_phases(t1)}")
    print(f"  walker_groups {groups} (auto): {fmt_phases(t)}")
    print(f"  same, no background draw: {fmt_phases(tf_)}")
    print(f"  sampling: {t1['t_sample'] / t['t_sample']:.2f}x faster with {groups} groups "
          f"(same process); {t['t_sample'] / sweeps * 1e6:.1f} us per sweep; "
          f"{tf_['t_sample'] / t['t_sample']:.2f}x from drawing the random numbers in the background")
    print("  target 0.16 s; the lecture's own TensorFlow code: about 3.2 s on this machine")
    print(json.dumps({"s_per_iteration": t["wall"], "sweep_us": t["t_sample"] / sweeps * 1e6,
                      "walker_groups": groups,
                      "sweep_us_one_group": t1["t_sample"] / sweeps * 1e6,
                      "s_per_iteration_one_group": t1["wall"],
                      "sweep_us_foreground_draw": tf_["t_sample"] / sweeps * 1e6,
                      **{k: t[k] for k in ("t_sample", "t_eloc", "t_jacobian", "t_overlap",
                                           "t_solve")}}))


if __name__ == "__main__":
    main()
