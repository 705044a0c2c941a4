"""Local energies per second (hessian and forward Laplacians) and log-derivative
matrices O per second (vectorized_map and outer-product routes), in the same process.

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
            24 coordinates;
``helium_yaml`` configs/helium.yaml's own ansatz (exponential envelope, jastrow, MLP on the
            distances symmetrized over the two electrons; about 4.5k parameters); not
            in the default list.

The fermion systems (li, dot6, dot12) use ``--fermion-walkers`` walkers.

Each (system, method) is compiled once, then timed as the best of ``--repeat``
calls. ``peak_rss_mb`` is the peak resident memory of the process while that
method ran (the kernel's peak is reset before each method through
/proc/self/clear_refs; where that is not allowed it is the process's running peak).
The machine is shared: compare the methods within one run, not across runs.

The O matrix (:class:`~distvmc.optimizers.jacobian.LogDerivatives`, the same walkers):
``jacobian-vmap`` is ``method="vmap"``, ``jacobian-outer`` is ``method="auto"`` (the
outer-product route after its self-check; a line says so if it fell back). Both are
compiled and checked against each other first, then timed alternately (best of
``--repeat`` each, so load changes hit both alike). ``--no-jacobian`` skips them,
``--jacobian-only`` skips the local energies.

    python benchmarks/laplacian.py [--walkers 4096] [--fermion-walkers 256] [--repeat 3]
                                   [--systems helium,alpha,li,dot6,dot12,helium_yaml]
                                   [--no-jacobian | --jacobian-only]

The last line of output is a JSON list of {"system", "method", "coordinates",
"local_energies_per_s", "peak_rss_mb"} (methods hessian, forward) and {"system",
"method", "coordinates", "parameters", "samples_per_s", "peak_rss_mb"} (methods
jacobian-vmap, jacobian-outer).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from _common import CONFIGS

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
    "helium_yaml": ("helium.yaml", []),
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


def measure(name: str, walkers: int, repeat: int, laplacian: bool = True,
            jacobian: bool = True) -> list[dict]:
    from distvmc.systems import build_system
    from distvmc.wavefunctions import build_wavefunction

    path, overrides = SYSTEMS[name]
    cfg = config.load(os.path.join(CONFIGS, path), overrides)
    system = build_system(cfg)
    wf = build_wavefunction(cfg, system, seed=0)
    nd = system.particles * system.dim
    x = system.initial_walkers(np.random.default_rng(0), walkers, cfg.sampler.init_width)
    print(f"{name}: {nd} coordinates, {wf.n_parameters} parameters, {walkers} walkers", flush=True)
    records = []
    if laplacian:
        records += measure_local_energy(name, wf, system, x, repeat)
    if jacobian:
        records += measure_jacobian(name, wf, nd, x, repeat)
    return records


def measure_local_energy(name, wf, system, x, repeat) -> list[dict]:
    from distvmc.hamiltonian import LocalEnergy

    walkers, nd = len(x), system.particles * system.dim
    records, energies, fns, rss = [], {}, {}, {}
    for method in METHODS:  # compile and run once each; peak memory per method
        fns[method] = LocalEnergy(wf, system, method, chunk_size=walkers,
                                  log=lambda m: print("  " + m))
        reset_peak_rss()
        energies[method] = fns[method](x)
        rss[method] = peak_rss_mb()
    # then time the methods alternately (best of `repeat` rounds each), so a change in
    # the machine's load hits both and the ratio stays meaningful on a shared machine
    best = {m: float("inf") for m in METHODS}
    for _ in range(repeat):
        for method in METHODS:
            t0 = time.perf_counter()
            fns[method](x)
            best[method] = min(best[method], time.perf_counter() - t0)
    for method in METHODS:
        t = best[method]
        print(f"  {method:>8}: {walkers / t:>12,.0f} local energies/s ({t:.3f} s per batch), "
              f"peak RSS {rss[method]:,.0f} MB", flush=True)
        records.append({"system": name, "method": method, "coordinates": nd,
                        "local_energies_per_s": walkers / t, "peak_rss_mb": rss[method]})
    ok = np.isfinite(energies["hessian"])
    diff = np.abs(energies["forward"] - energies["hessian"])[ok]
    rel = diff / np.maximum(1.0, np.abs(energies["hessian"][ok]))
    rate = {r["method"]: r["local_energies_per_s"] for r in records}
    print(f"  forward / hessian: {rate['forward'] / rate['hessian']:.2f}x "
          f"(max |E_L difference| {diff.max() if ok.any() else np.nan:.1e}, relative to "
          f"max(1, |E_L|) {rel.max() if ok.any() else np.nan:.1e})", flush=True)
    return records


def measure_jacobian(name, wf, nd, x, repeat) -> list[dict]:
    """O per second by vectorized_map and by the outer-product route, timed alternately."""
    from distvmc.optimizers.jacobian import LogDerivatives

    routes = {"jacobian-vmap": LogDerivatives(wf, method="vmap"),
              "jacobian-outer": LogDerivatives(wf, method="auto")}
    o, first, rss = {}, {}, {}
    for method, ld in routes.items():  # compile (and the outer route's self-check)
        reset_peak_rss()
        t0 = time.perf_counter()
        o[method] = ld(x)
        first[method] = time.perf_counter() - t0
        rss[method] = peak_rss_mb()
    if routes["jacobian-outer"].method != "outer":
        print(f"  jacobian-outer fell back to vectorized_map: {routes['jacobian-outer'].fallback}")
    best = {m: np.inf for m in routes}
    for _ in range(repeat):
        for method, ld in routes.items():
            reset_peak_rss()
            t0 = time.perf_counter()
            ld(x)
            best[method] = min(best[method], time.perf_counter() - t0)
            rss[method] = max(rss[method], peak_rss_mb())
    records = []
    for method in routes:
        t = best[method]
        print(f"  {method:>14}: {len(x) / t:>12,.0f} samples/s ({t:.4f} s per O of {len(x)} x "
              f"{wf.n_parameters}; first call {first[method]:.1f} s), peak RSS "
              f"{rss[method]:,.0f} MB", flush=True)
        records.append({"system": name, "method": method, "coordinates": nd,
                        "parameters": wf.n_parameters, "samples_per_s": len(x) / t,
                        "peak_rss_mb": rss[method]})
    ref = o["jacobian-vmap"]
    diff = np.abs(o["jacobian-outer"] - ref).max() / max(np.abs(ref).max(), 1e-300)
    print(f"  jacobian outer / vmap: {best['jacobian-vmap'] / best['jacobian-outer']:.2f}x "
          f"(max |O difference| / max |O| {diff:.1e})", flush=True)
    return records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--walkers", type=int, default=4096, help="walkers for helium and alpha")
    ap.add_argument("--fermion-walkers", "--dot-walkers", type=int, default=256,
                    help="walkers for the fermion systems (" + ", ".join(FERMIONS) + ")")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--systems", default="helium,alpha," + ",".join(FERMIONS),
                    help="comma-separated, from " + ",".join(SYSTEMS))
    parts = ap.add_mutually_exclusive_group()
    parts.add_argument("--no-jacobian", action="store_true", help="skip the O timings")
    parts.add_argument("--jacobian-only", action="store_true", help="skip the local energies")
    args = ap.parse_args()
    records = []
    for name in args.systems.split(","):
        w = args.fermion_walkers if name in FERMIONS else args.walkers
        records += measure(name, w, args.repeat, laplacian=not args.jacobian_only,
                           jacobian=not args.no_jacobian)
    print(f"load average (1 min): {os.getloadavg()[0]:.1f}")
    print(json.dumps(records))


if __name__ == "__main__":
    main()
