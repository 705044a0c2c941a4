"""SR solvers at large parameter counts: seconds per iteration, peak memory, bytes sent.

Workload (issue 9): helium, MLP 6 -> h -> h -> 1 (tanh) on the electrons'
coordinates times the exponential envelope, 4096 samples per iteration over
all ranks (one measurement per walker after 10 sweeps), float64. Widths
h = 64, 140, 312 give P = 4673, 20861, 100153 parameters.

    python benchmarks/sr_solvers.py [--iterations 2] [--quick] [--sizes 4.7k,20k]
                                    [--linear-algebra host,device] [--recompute]

``--linear-algebra host,device`` measures both places of O and SR's products
(optimizer.linear_algebra) side by side: on a CPU-only machine ``device`` is
TensorFlow on the CPU, which is how the GPU path is tested here; on a GPU node
it is the path ``auto`` takes. ``--recompute`` adds cg with
``optimizer.o_matrix=recompute`` (O never formed: S v by network passes).

Every measurement is its own process (1 rank: both cores; 2 ranks: ``mpirun
-np 2``, mpi backend, one thread per rank), so peak memory is that of the
measurement alone. A record is the mean over ``--iterations`` full SR
iterations (sampling + local energy + O + solve + update) after one warm-up
iteration. ``bytes_sent_per_rank``: float64 payload rank 0 hands to the
collectives per iteration (allreduce/allgather: its array; alltoall: the
blocks for other ranks; bcast: what the root sends), counted in a wrapper
around the communicator; 0 on one rank. ``peak_rss_mb``: the largest peak
resident set over the ranks. Dense is never run at P >= 16k (OpenBLAS crash,
README; and its P x P matrix alone is 3.5 GB at 20k, 80 GB at 100k).

The last line printed is one JSON list of records
{"params", "solver", "ranks", "samples", "s_per_iteration", "peak_rss_mb",
"bytes_sent_per_rank"}; lines above it are for people (they add CG steps and
the phase split).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
              "TF_CPP_MIN_LOG_LEVEL": "2"}
WIDTHS = {"4.7k": 64, "20k": 140, "100k": 312}
SAMPLES = 4096
DENSE_MAX = 16000


def overrides(hidden: int, walkers: int, solver: str, where: str = "host",
              o_matrix: str = "stored") -> list[str]:
    return [f"wavefunction.factors=[{{type: mlp, hidden: [{hidden}, {hidden}], activation: tanh, "
            "inputs: coords}, {type: exp_envelope, trainable: false}]",
            f"sampler.walkers={walkers}", "sampler.samples_per_walker=1",
            "sampler.sweeps_per_sample=10", "sampler.thermalization=30",
            f"optimizer.solver={solver}", "optimizer.lr=0.02", "optimizer.shift=1e-3",
            "hamiltonian.chunk_size=4096", f"optimizer.linear_algebra={where}",
            f"optimizer.o_matrix={o_matrix}"]


# ---------------------------------------------------------------- one measurement
def worker(spec: dict) -> None:
    sys.path.insert(0, HERE)
    import numpy as np

    from _common import CONFIGS, build

    from distvmc.comm import make_communicator
    from distvmc.comm.base import Communicator

    class Counting(Communicator):
        """The communicator, counting the float64 payload this rank sends."""

        def __init__(self, inner):
            self.inner, self.sent = inner, 0
            self.name, self.rank, self.size = inner.name, inner.rank, inner.size
            self.local_rank = inner.local_rank

        def allreduce(self, x):
            self.sent += np.asarray(x).size * 8 if self.size > 1 else 0
            return self.inner.allreduce(x)

        def bcast(self, x):
            self.sent += np.asarray(x).nbytes if self.size > 1 and self.is_root else 0
            return self.inner.bcast(x)

        def bcast_object(self, obj):
            self.sent += len(pickle.dumps(obj)) if self.size > 1 and self.is_root else 0
            return self.inner.bcast_object(obj)

        def allgather(self, x):
            self.sent += np.asarray(x).size * 8 if self.size > 1 else 0
            return self.inner.allgather(x)

        def alltoall(self, blocks):
            self.sent += sum(np.asarray(b).size * 8 for s, b in enumerate(blocks)
                             if s != self.rank)
            return self.inner.alltoall(blocks)

        def barrier(self):
            self.inner.barrier()

        def abort(self, code=1):
            self.inner.abort(code)

    inner = make_communicator(spec["backend"], log=None)
    comm = Counting(inner)
    walkers = spec["samples"] // comm.size
    driver = build(f"{CONFIGS}/helium.yaml",
                   overrides(spec["hidden"], walkers, spec["solver"], spec.get("where", "host"),
                             spec.get("o_matrix", "stored")),
                   comm=comm)
    driver.objective.prepare()
    driver.step()  # warm-up: compiles, and the CG warm start exists from here on
    comm.barrier()
    recs, sent0 = [], comm.sent
    t0 = time.perf_counter()
    for _ in range(spec["iterations"]):
        recs.append(driver.step())
    wall = (time.perf_counter() - t0) / spec["iterations"]
    sent = (comm.sent - sent0) / spec["iterations"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB -> MB on Linux
    rss_all = inner.allgather(np.array([rss]))
    wall = float(inner.allgather(np.array([wall])).max())
    if comm.is_root:
        phases = {k: float(np.mean([r.get(k, np.nan) for r in recs]))
                  for k in ("t_sample", "t_eloc", "t_jacobian", "t_overlap", "t_allreduce",
                            "t_solve")}
        rec = {"params": int(driver.wf.n_parameters), "solver": spec["solver"],
               "ranks": comm.size, "samples": walkers * comm.size,
               "s_per_iteration": round(wall, 4), "peak_rss_mb": round(float(rss_all.max()), 1),
               "bytes_sent_per_rank": int(sent), "linear_algebra": spec.get("where", "host"),
               "o_matrix": spec.get("o_matrix", "stored")}
        extra = {"solve": [r.get("solve") for r in recs], "phases": phases,
                 "threads": spec.get("threads")}
        print("RECORD " + json.dumps({"record": rec, "extra": extra}), flush=True)


# ---------------------------------------------------------------- the table
def _mpirun() -> str | None:
    local = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return local if os.path.exists(local) else shutil.which("mpirun")


def measure(hidden: int, solver: str, ranks: int, iterations: int, samples: int = SAMPLES,
            one_thread: bool = False, where: str = "host",
            o_matrix: str = "stored") -> tuple[dict, dict] | None:
    spec = {"hidden": hidden, "solver": solver, "samples": samples, "iterations": iterations,
            "where": where, "o_matrix": o_matrix,
            "backend": "mpi" if ranks > 1 else "single",
            "threads": 1 if (ranks > 1 or one_thread) else os.cpu_count()}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    if ranks > 1 or one_thread:
        env.update(THREAD_ENV)
    if ranks > 1:
        mpirun = _mpirun()
        if mpirun is None:
            print(f"  (no mpirun: skipping {ranks} ranks)")
            return None
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        cmd = [mpirun, "-np", str(ranks), "--oversubscribe", "--bind-to", "none"] + sum(
            (["-x", k] for k in THREAD_ENV), []) + cmd
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    for line in p.stdout.splitlines():
        if line.startswith("RECORD "):
            got = json.loads(line[len("RECORD "):])
            return got["record"], got["extra"]
    tail = "\n".join((p.stdout + p.stderr).splitlines()[-15:])
    print(f"  FAILED (exit {p.returncode}): hidden {hidden}, {solver}, {ranks} rank(s)\n{tail}")
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--sizes", default="4.7k,20k,100k")
    ap.add_argument("--quick", action="store_true", help="4.7k and 20k only")
    ap.add_argument("--no-weak", action="store_true", help="skip the weak-scaling pair")
    ap.add_argument("--linear-algebra", default="host",
                    help="comma-separated optimizer.linear_algebra values to measure: host "
                         "(NumPy, the CPU default), device (TensorFlow; on a GPU the default)")
    ap.add_argument("--recompute", action="store_true",
                    help="also measure cg with optimizer.o_matrix=recompute (O never formed)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    sizes = [s for s in args.sizes.split(",") if not (args.quick and s == "100k")]
    runs = []
    for size in sizes:
        h = WIDTHS[size]
        p_est = h * h + 9 * h + 1
        solvers = (["dense"] if p_est < DENSE_MAX else []) + ["cg", "samplespace"]
        if size == "100k":
            solvers = ["cg"]  # samplespace: 4096^2 P/R flops, minutes per iteration here
        for solver in solvers:
            for ranks in (1, 2):
                for where in args.linear_algebra.split(","):
                    runs.append((h, solver, ranks, where, "stored"))
                if solver == "cg" and args.recompute:
                    runs.append((h, solver, ranks, "host", "recompute"))
    records = []
    print(f"helium, {SAMPLES} samples per iteration, mean of {args.iterations} iterations "
          f"after one warm-up; load average {os.getloadavg()[0]:.2f}")
    for h, solver, ranks, where, o_matrix in runs:
        got = measure(h, solver, ranks, args.iterations, where=where, o_matrix=o_matrix)
        if got is None:
            continue
        rec, extra = got
        records.append(rec)
        ph = extra["phases"]
        label = where if o_matrix == "stored" else "recompute"
        print(f"  P = {rec['params']:>6}  {solver:<11} {label:<9} {ranks} rank(s): "
              f"{rec['s_per_iteration']:.3f} s/it  peak {rec['peak_rss_mb']:.0f} MB  "
              f"sent {rec['bytes_sent_per_rank'] / 1e6:.2f} MB/rank/it  "
              f"[O {ph['t_jacobian']:.3f}, allreduce {ph['t_allreduce']:.3f}, "
              f"solve {ph['t_solve']:.3f}, sample {ph['t_sample']:.3f}, E_L {ph['t_eloc']:.3f}] "
              f"{extra['solve'][-1]}", flush=True)
    if not args.no_weak and "20k" in sizes:
        # (stored O, host: the CPU default)
        # weak scaling: 2048 samples per rank, one thread per rank, 1 rank vs 2 ranks
        one = measure(WIDTHS["20k"], "cg", 1, args.iterations, samples=SAMPLES // 2,
                      one_thread=True)
        two = measure(WIDTHS["20k"], "cg", 2, args.iterations, samples=SAMPLES)
        if one and two:
            records += [one[0], two[0]]
            eff = one[0]["s_per_iteration"] / two[0]["s_per_iteration"]
            print(f"  weak scaling, cg, P = {one[0]['params']}, {SAMPLES // 2} samples per rank, "
                  f"one thread per rank: {one[0]['s_per_iteration']:.3f} s (1 rank) vs "
                  f"{two[0]['s_per_iteration']:.3f} s (2 ranks): efficiency {eff:.2f}")
    print(json.dumps(records))


if __name__ == "__main__":
    main()
