"""Local energies per second: the hessian and forward Laplacians in the same process.

Systems (the compiled :class:`~distvmc.hamiltonian.LocalEnergy`, one batch of
``--walkers`` walkers drawn around the nuclei or origin; E_L's cost does not
depend on where the walkers are):

``helium``  the MLP of benchmarks/helium_sr.py: 6 -> 64 -> 64 -> 1 tanh on the
            coordinates times the exponential envelope (about 4.7k parameters), 6 coordinates;
``alpha``   configs/alpha.yaml's ansatz (deepsets_cm, pair_net, cm_gaussian), 12 coordinates;
``li``      configs/lithium.yaml (2 + 1 electrons, FermiNet-style slater [32, 32] and
            jastrow), 9 coordinates;
``dot6``    configs/quantum_dot_6.yaml (a 2D dot with 3 + 3 electrons, the same ansatz),
            12 coordinates;
``dot12``   a 2D quantum dot with 6 + 6 electrons, configs/quantum_dot_6.yaml's ansatz,
            24 coordinates.

The fermion systems (li, dot6, dot12) use ``--fermion-walkers`` walkers.

Each (system, method) is compiled once, then timed as the best of ``--repeat``
calls. ``peak_rss_mb`` is the peak resident memory of the process while that
method ran (the kernel's peak is reset before each method through
/proc/self/clear_refs; where that is not allowed it is the process's running peak).
The machine is shared: compare the methods within one run, not across runs.

    python benchmarks/laplacian.py [--walkers 4096] [--fermion-walkers 256] [--repeat 3]
                                   [--systems helium,alpha,li,dot6,dot12]

The last line of output is a JSON list of {"system", "method", "coordinates",
"local_energies_per_s", "peak_rss_mb"}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource

from _common import CONFIGS, best_of

import numpy as np

from distvmc import config

METHODS = ("hessian", "forward")
SYSTEMS = {
    "helium": ("helium.yaml", ["wavefunction.factors=[{type: mlp, hidden: [64, 64], activation: "
                               "tanh, inputs: coords}, {type: exp_envelope, trainable: false}]"]),
    "alpha": ("alpha.yaml", []),
    "li": ("lithium.yaml", []),
    "dot6": ("quantum_dot_6.yaml", []),
    "dot12": ("quantum_dot_6.yaml", ["system.species=[{count: 6, spin: up}, {count: 6, spin: down}]"]),
}
FERMIONS = ("li", "dot6", "dot12")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set size of this process (Linux); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """VmHWM of this process (the peak since the last reset), else ru_maxrss; in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(name: str, walkers: int, repeat: int) -> list[dict]:
    from distvmc.hamiltonian import LocalEnergy
    from distvmc.systems import build_system
    from distvmc.wavefunctions import build_wavefunction

    path, overrides = SYSTEMS[name]
    cfg = config.load(os.path.join(CONFIGS, path), overrides)
    system = build_system(cfg)
    wf = build_wavefunction(cfg, system, seed=0)
    nd = system.particles * system.dim
    x = system.initial_walkers(np.random.default_rng(0), walkers, cfg.sampler.init_width)
    print(f"{name}: {nd} coordinates, {wf.n_parameters} parameters, {walkers} walkers", flush=True)
    records, energies = [], {}
    for method in METHODS:
        le = LocalEnergy(wf, system, method, chunk_size=walkers, log=lambda m: print("  " + m))
        reset_peak_rss()
        energies[method] = le(x)  # compile
        t = best_of(lambda: le(x), repeat=repeat)
        rss = peak_rss_mb()
        print(f"  {method:>8}: {walkers / t:>12,.0f} local energies/s ({t:.3f} s per batch), "
              f"peak RSS {rss:,.0f} MB", flush=True)
        records.append({"system": name, "method": method, "coordinates": nd,
                        "local_energies_per_s": walkers / t, "peak_rss_mb": rss})
    ok = np.isfinite(energies["hessian"])
    diff = np.abs(energies["forward"] - energies["hessian"])[ok]
    rel = diff / np.maximum(1.0, np.abs(energies["hessian"][ok]))
    rate = {r["method"]: r["local_energies_per_s"] for r in records}
    print(f"  forward / hessian: {rate['forward'] / rate['hessian']:.2f}x "
          f"(max |E_L difference| {diff.max() if ok.any() else np.nan:.1e}, relative to "
          f"max(1, |E_L|) {rel.max() if ok.any() else np.nan:.1e})", flush=True)
    return records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--walkers", type=int, default=4096, help="walkers for helium and alpha")
    ap.add_argument("--fermion-walkers", "--dot-walkers", type=int, default=256,
                    help="walkers for the fermion systems (" + ", ".join(FERMIONS) + ")")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--systems", default="helium,alpha," + ",".join(FERMIONS))
    args = ap.parse_args()
    records = []
    for name in args.systems.split(","):
        w = args.fermion_walkers if name in FERMIONS else args.walkers
        records += measure(name, w, args.repeat)
    print(f"load average (1 min): {os.getloadavg()[0]:.1f}")
    print(json.dumps(records))


if __name__ == "__main__":
    main()
