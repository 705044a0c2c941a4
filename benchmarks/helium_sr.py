"""Helium benchmark: Metropolis, local energy per Laplacian method, full SR iterations.

Workload (issue 2): helium, MLP 6 -> 64 -> 64 -> 1 (tanh) on the electrons'
coordinates times the exponential envelope (about 4.7k parameters), 4096
samples per iteration (4096 walkers, one measurement each after 10 sweeps),
dense SR in float64. The same at about 1k and 20k parameters.

    python benchmarks/helium_sr.py [--iterations 5] [--quick]
"""

from __future__ import annotations

import argparse
import json


from _common import CONFIGS, best_of, build, fmt_phases, time_iterations

from distvmc.hamiltonian import METHODS, LocalEnergy

SIZES = {"1k": [28, 28], "4.7k": [64, 64], "20k": [140, 140]}


def overrides(hidden, walkers=4096, solver="dense"):
    return [f"wavefunction.factors=[{{type: mlp, hidden: {hidden}, activation: tanh, "
            "inputs: coords}, {type: exp_envelope, trainable: false}]",
            f"sampler.walkers={walkers}", "sampler.samples_per_walker=1",
            "sampler.sweeps_per_sample=10", "sampler.thermalization=50",
            f"optimizer.solver={solver}", "optimizer.lr=0.02", "optimizer.shift=1e-3"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="skip the 20k-parameter runs")
    args = ap.parse_args()
    he = f"{CONFIGS}/helium.yaml"

    vmc = build(he, overrides(SIZES["4.7k"]))
    w = vmc.objective.sampler.walkers
    print(f"helium, MLP 6-64-64-1 tanh + envelope: {vmc.wf.n_parameters} parameters, {w} walkers")
    sweeps = 100
    t = best_of(lambda: vmc.objective.sampler.sample(1, sweeps), repeat=3)
    print(f"  Metropolis: {w * sweeps / t:,.0f} walker-steps/s ({t / sweeps * 1e3:.2f} ms per sweep)")
    records = [{"what": "metropolis", "walker_steps_per_s": w * sweeps / t}]
    x = vmc.objective.sampler.x.numpy()
    for method in METHODS:
        le = LocalEnergy(vmc.wf, vmc.objective.system, method, chunk_size=16384)
        t = best_of(lambda: le(x), repeat=3)
        print(f"  local energy ({method:>12}): {w / t:,.0f} local energies/s ({t:.3f} s per batch)")
        records.append({"what": "local_energy", "method": method, "local_energies_per_s": w / t})
    t_jac = best_of(lambda: vmc.objective.log_derivatives(x), repeat=3)
    print(f"  Jacobian O ({w} x {vmc.wf.n_parameters}): {t_jac:.3f} s")
    records.append({"what": "jacobian", "samples": w, "params": vmc.wf.n_parameters, "s": t_jac})

    runs = [("1k", "dense"), ("4.7k", "dense"), ("4.7k", "samplespace")]
    if not args.quick:
        runs += [("20k", "samplespace"), ("20k", "cg")]  # dense at P >= 16k: OpenBLAS crash (README)
    print(f"full SR iterations (sampling + local energy + Jacobian + S, F + solve), "
          f"mean of {args.iterations}:")
    for size, solver in runs:
        vmc = build(he, overrides(SIZES[size], solver=solver))
        t = time_iterations(vmc, args.iterations if size != "20k" else max(2, args.iterations // 2),
                            warmup=1)
        print(f"  P = {vmc.wf.n_parameters:>6} ({size:>4}, {solver:>11}): {fmt_phases(t)}")
        records.append({"what": "sr_iteration", "params": vmc.wf.n_parameters, "solver": solver,
                        "s_per_iteration": t["wall"]})
    print(json.dumps(records))


if __name__ == "__main__":
    main()
