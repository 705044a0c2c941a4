"""Multi-rank scaling: weak scaling at 1 and 2 ranks, communication vs parameters, a model.

    python benchmarks/scaling.py [--walkers 1024,4096,16384] [--iterations 8] [--quick]
    python benchmarks/scaling.py --backend horovod     # from the Horovod venv
    python benchmarks/scaling.py --model-only

(a) Weak scaling: the hydrogen job (MLP 3-16-24-1 + envelope, 498 parameters,
    dense SR) with a fixed number of walkers per rank, on 1 and on 2 ranks,
    every rank limited to one thread (TF intra-/inter-op threads = 1,
    OMP_NUM_THREADS = 1) so that a rank stands for one device. Efficiency =
    t(1 rank) / t(2 ranks) per iteration (median over the timed iterations).
(b) Communication vs parameter count P: real 2-rank SR iterations for P from
    ~0.5k to ~4.5k; time per iteration inside collectives (allreduce/bcast,
    including waiting for the slower rank), and the bare allreduce of the
    P x P overlap matrix S plus F (timed after a barrier).
(c) A model of the iteration time on 8, 64, 512 GPUs for P = 1k, 10k, 100k,
    and when dense S stops being the right choice (also docs/scaling.md).

Ranks are started with the ``mpirun`` next to this Python (or on PATH) and the
``mpi`` backend (``--backend horovod`` in a Horovod venv). Figures are printed;
nothing is asserted. The machine should be otherwise idle: other processes on
the 2 cores make the 2-rank run look worse than it is (the load average is
printed with the results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
              "TF_CPP_MIN_LOG_LEVEL": "2"}
HIDDEN_FOR_P = {"0.5k": [16, 24], "1.2k": [32, 32], "2.6k": [48, 48], "4.5k": [64, 64]}


# ----------------------------------------------------------------------------- launcher
def _mpirun() -> str:
    local = os.path.join(os.path.dirname(sys.executable), "mpirun")
    found = local if os.path.exists(local) else shutil.which("mpirun")
    if not found:
        sys.exit("scaling.py: no mpirun next to this Python or on PATH (pip install 'distvmc[mpi]')")
    return found


BIND = "core"  # --bind: one core per rank, so that a rank stands for one device


def launch(np_: int, worker_args: list[str], timeout: float = 1800) -> dict:
    """Run this script's worker on ``np_`` ranks; rank 0's RESULT json."""
    cmd = [_mpirun(), "-np", str(np_), "--oversubscribe", "--bind-to", BIND]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    env = dict(os.environ, **THREAD_ENV)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    for var in list(THREAD_ENV) + ["PATH"]:
        cmd += ["-x", var]
    cmd += [sys.executable, os.path.abspath(__file__), "--worker", *worker_args]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    sys.exit(f"worker failed ({' '.join(cmd)}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


# ----------------------------------------------------------------------------- worker
class TimedComm:
    """A communicator that adds up the seconds spent inside its collectives."""

    def __init__(self, comm):
        self._c = comm
        self.name, self.rank, self.size, self.local_rank = comm.name, comm.rank, comm.size, comm.local_rank
        self.seconds = 0.0

    @property
    def is_root(self):
        return self._c.is_root

    def _timed(self, fn, *a):
        t0 = time.perf_counter()
        try:
            return fn(*a)
        finally:
            self.seconds += time.perf_counter() - t0

    def allreduce(self, x):
        return self._timed(self._c.allreduce, x)

    def allreduce_many(self, xs):
        return self._timed(self._c.allreduce_many, xs)

    def bcast(self, x):
        return self._timed(self._c.bcast, x)

    def bcast_object(self, o):
        return self._timed(self._c.bcast_object, o)

    def barrier(self):
        return self._timed(self._c.barrier)

    def abort(self, code=1):
        self._c.abort(code)


def worker(args) -> None:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from distvmc import config
    from distvmc.comm import make_communicator
    from distvmc.job import Job
    from distvmc.systems import build_system

    comm = make_communicator(args.backend)
    hidden = json.loads(args.hidden)
    cfg = config.load(os.path.join(ROOT, "configs", "hydrogen.yaml")
                      if os.path.exists(os.path.join(ROOT, "configs", "hydrogen.yaml")) else None, [
        f"wavefunction.factors.0.hidden={hidden}", f"sampler.walkers={args.walkers}",
        "sampler.thermalization=40", "sampler.samples_per_walker=1", "optimizer.solver=dense",
        f"distributed.backend={args.backend}"])
    timed = TimedComm(comm)
    job = Job(cfg, timed, build_system(cfg), log=lambda *a, **k: None)
    job.start_state(0)
    vmc = job.driver
    vmc.objective.prepare()
    for _ in range(2):  # compile and warm up
        vmc.step()
    walls, comms = [], []
    for _ in range(args.iterations):
        comm.barrier()
        c0, t0 = timed.seconds, time.perf_counter()
        vmc.step()
        walls.append(time.perf_counter() - t0)
        comms.append(timed.seconds - c0)
    p = vmc.wf.n_parameters
    # bare allreduce of S (P x P) and F (P), as SR does it, after a barrier
    s, f = np.random.default_rng(comm.rank).standard_normal((2, p, p))[0], np.ones(p)
    bare = []
    for _ in range(5):
        comm.barrier()
        t0 = time.perf_counter()
        comm.allreduce_many([s, f])
        bare.append(time.perf_counter() - t0)
    mine = np.array([np.median(walls), np.median(comms), float(np.median(bare)), np.min(walls)])
    k = mine.size
    every = comm.allreduce(np.concatenate([np.zeros(k * comm.rank), mine,
                                           np.zeros(k * (comm.size - comm.rank - 1))]))
    if comm.rank == 0:
        per_rank = every.reshape(comm.size, k)
        print("RESULT " + json.dumps({
            "ranks": comm.size, "backend": comm.name, "walkers_per_rank": args.walkers,
            "parameters": p, "wall": float(per_rank[:, 0].max()),
            "wall_best": float(per_rank[:, 3].max()),
            "comm": float(per_rank[:, 1].min()), "bare_allreduce": float(per_rank[:, 2].max()),
            "energy": vmc.history[-1]["energy"]}), flush=True)


# ----------------------------------------------------------------------------- model
# Assumptions (A100-class GPU node, InfiniBand HDR): see docs/scaling.md.
GPU_FP64 = 10e12          # sustained fp64 flop/s for the O^T O product on one GPU
CPU_FP64 = 1e12           # rank 0's host Cholesky (multithreaded LAPACK), flop/s
BUS_BW = 20e9             # allreduce bus bandwidth per GPU across nodes, bytes/s
LATENCY = 10e-6           # per allreduce step, s
PCIE_BW = 20e9            # device <-> host copies of S, bytes/s
GPU_MEM = 80e9            # bytes per GPU
CG_ITERS = 100            # matrix-free CG iterations per SR solve
LOCAL_PER_SAMPLE = 2e-5   # seconds per sample per 1k parameters for sampling + E_L + O on one GPU
WALKERS_PER_GPU = 4096


def _allreduce_s(nbytes: float, g: int) -> float:
    """Ring allreduce: 2 (g-1)/g of the data over the bus, 2 log2(g) latency steps (tree-ish)."""
    import math

    return 2 * (g - 1) / g * nbytes / BUS_BW + 2 * math.log2(max(g, 2)) * LATENCY


def model(p: int, g: int, w: int = WALKERS_PER_GPU) -> dict:
    """Seconds per SR iteration on g GPUs with w walkers each and p parameters."""
    local = LOCAL_PER_SAMPLE * w * p / 1e3                  # sampling + E_L + O (w x p)
    s_bytes = 8.0 * p * p
    dense = {
        "form_S": 2 * w * p * p / GPU_FP64,                  # O^T O on each GPU
        "copy_S": 2 * s_bytes / PCIE_BW,                     # device -> host -> (solve)
        "allreduce_S": _allreduce_s(s_bytes, g),
        "solve": p ** 3 / 3 / CPU_FP64,                      # Cholesky on rank 0
        "bcast": _allreduce_s(8.0 * p, g) / 2,
    }
    fits = 3 * s_bytes < GPU_MEM                             # S, its sum, the factor
    # matrix-free CG: S v = O^T (O v) / n, one allreduce of P numbers per iteration
    cg = CG_ITERS * (4 * w * p / GPU_FP64 + _allreduce_s(8.0 * p, g))
    # sample-space (minSR): T = O O^T is n x n with n = g w samples; every GPU needs
    # all of O (all-gather of 8 n p bytes) for its w rows of T, rank 0 solves n x n
    n = g * w
    minsr = (8.0 * n * p / BUS_BW + 2 * w * n * p / GPU_FP64 + _allreduce_s(8.0 * n * n, g)
             + n ** 3 / 3 / CPU_FP64)
    return {"local": local, "dense_extra": sum(dense.values()) if fits else float("inf"),
            "dense_comm": dense["allreduce_S"], "dense_solve": dense["solve"],
            "cg_extra": cg, "minsr_extra": minsr, "S_GB": s_bytes / 1e9, "fits": fits}


def dense_limit(g: int, share: float = 0.25) -> int:
    """Largest P for which dense SR adds at most ``share`` of the local work per iteration."""
    p = 100
    while model(p, g)["dense_extra"] <= share * model(p, g)["local"]:
        p = int(p * 1.05) + 1
    return p


def print_model() -> None:
    print("\n(c) model: seconds per SR iteration on g GPUs, "
          f"{WALKERS_PER_GPU} walkers per GPU (weak scaling); assumptions in docs/scaling.md")
    print("    local = sampling + local energy + O on each GPU; the other columns are what each")
    print("    SR variant adds on top (dense S: form, copy, allreduce, Cholesky on rank 0, bcast)")
    print(f"{'P':>7} {'GPUs':>5} {'local':>8} {'+dense S':>9} {'allreduce S':>12} {'Cholesky':>9} "
          f"{'+CG(100)':>9} {'+minSR':>9} {'S':>8}  best")
    for p in (1_000, 10_000, 100_000):
        for g in (8, 64, 512):
            m = model(p, g)
            best = min(("dense", m["dense_extra"]), ("CG", m["cg_extra"]),
                       ("minSR", m["minsr_extra"]), key=lambda kv: kv[1])[0]
            dense = f"{m['dense_extra']:9.3f}" if m["fits"] else f"{'no fit':>9}"
            print(f"{p:>7} {g:>5} {m['local']:8.3f} {dense} {m['dense_comm']:12.4f} "
                  f"{m['dense_solve']:9.3f} {m['cg_extra']:9.4f} {m['minsr_extra']:9.3g} "
                  f"{m['S_GB']:6.2f}GB  {best}")
    for g in (8, 64, 512):
        print(f"dense S adds <= 25% to the iteration up to P ~ {dense_limit(g):,} on {g} GPUs")


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--walkers", default="1024,4096,16384", help="walkers per rank, comma-separated")
    ap.add_argument("--iterations", type=int, default=8, help="timed iterations per run")
    ap.add_argument("--bind", default="core", choices=["core", "none"],
                    help="mpirun --bind-to (core: a rank and all its threads on one core)")
    ap.add_argument("--backend", default="mpi", choices=["mpi", "horovod"])
    ap.add_argument("--quick", action="store_true", help="fewer walker counts and sizes")
    ap.add_argument("--parts", default="abc", help="which parts to run, e.g. 'a' or 'bc'")
    ap.add_argument("--model-only", action="store_true", help="same as --parts c")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--hidden", default="[16, 24]", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.walkers = int(args.walkers)
        return worker(args)
    global BIND
    BIND = args.bind
    if args.model_only or args.parts == "c":
        return print_model()

    walkers = [int(w) for w in args.walkers.split(",")][: 2 if args.quick else None]
    common = ["--iterations", str(args.iterations), "--backend", args.backend]
    print(f"load average before: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} cores); "
          f"mpirun --bind-to {BIND}")
    if "a" in args.parts:
        weak_scaling(walkers, common, args.backend)
    if "b" in args.parts:
        comm_vs_parameters(common, args.quick)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if "c" in args.parts:
        print_model()


def weak_scaling(walkers, common, backend):
    print("(a) weak scaling, hydrogen MLP 3-16-24-1, dense SR, 1 thread per rank, "
          f"backend {backend}")
    print("    t = median seconds per iteration (best in brackets); efficiency = t(1) / t(2)")
    print(f"{'walkers/rank':>12} {'P':>5} {'t(1 rank)':>17} {'t(2 ranks)':>17} "
          f"{'comm(2)':>8} {'efficiency':>10} {'(best)':>6}")
    for w in walkers:
        r1 = launch(1, ["--walkers", str(w), *common])
        r2 = launch(2, ["--walkers", str(w), *common])
        print(f"{w:>12} {r1['parameters']:>5} {r1['wall']:7.3f}s ({r1['wall_best']:.3f}s) "
              f"{r2['wall']:7.3f}s ({r2['wall_best']:.3f}s) {r2['comm']:7.3f}s "
              f"{r1['wall'] / r2['wall']:10.2f} {r1['wall_best'] / r2['wall_best']:6.2f}",
              flush=True)


def comm_vs_parameters(common, quick):
    print("\n(b) communication vs parameters: 2 ranks, 512 walkers per rank, dense SR")
    print("    in collectives: seconds per iteration inside allreduce/bcast on the rank that")
    print("    waits least (rank 1 also waits there for rank 0's Cholesky solve)")
    print(f"{'P':>6} {'S size':>8} {'t/iter':>8} {'in collectives':>15} {'fraction':>8} "
          f"{'bare allreduce S,F':>19}")
    sizes = list(HIDDEN_FOR_P.values())[: 3 if quick else None]
    for hidden in sizes:
        r = launch(2, ["--walkers", "512", "--hidden", json.dumps(hidden), *common])
        p = r["parameters"]
        print(f"{p:>6} {8 * p * p / 1e6:6.1f}MB {r['wall']:7.3f}s {r['comm']:14.4f}s "
              f"{r['comm'] / r['wall']:8.1%} {r['bare_allreduce']:18.4f}s", flush=True)


if __name__ == "__main__":
    main()
