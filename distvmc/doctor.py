"""``distvmc doctor``: the first command to run on a fresh install, on one rank or many.

    distvmc doctor                                   # one process
    mpirun -np 2 distvmc doctor                      # every rank (backend auto: mpi)
    mpirun -np 2 distvmc doctor --backend horovod    # Horovod's collectives
    srun distvmc doctor                              # Slurm

It reports, from rank 0:

1. versions: Python, distvmc, TensorFlow (and whether it is built with CUDA),
   NumPy, SciPy, mpi4py and the MPI library, Horovod and what it was built
   with (TensorFlow, MPI, NCCL, CUDA); ``tensorflow`` and ``tensorflow-cpu``
   installed side by side is an error (they overwrite each other's files);
2. every rank's device (:func:`distvmc.comm.describe_device`);
3. collectives: a float64 allreduce, broadcast, allgather and all-to-all whose
   exact results are known (bits below float32's precision included);
4. SR: the dense, cg and sample-space directions of one random problem split
   over the ranks agree, and are bitwise identical on every rank;
5. physics: a 3D harmonic oscillator with a Gaussian ansatz optimized to the
   exact E = 1.5 (to 1e-8, zero variance) and hydrogen with psi = exp(-a r)
   to E = -0.5 within its error bar;
6. per-phase seconds per iteration (sampling, E_L, O, S/CG, allreduce, solve)
   and the device each phase runs on.

It ends with one line: ``distvmc doctor: OK ...`` (exit 0), or
``distvmc doctor: FAILED: <what>; fix: <how>`` (exit 1).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
import time

import numpy as np

HINTS = {
    "both_tf": "pip uninstall -y tensorflow tensorflow-cpu, then pip install 'distvmc' "
               "(or 'distvmc[gpu]' on a GPU machine)",
    "collectives": "check the MPI installation (mpi4py must be built for the mpirun that "
                   "launched the job: pip install 'distvmc[mpi]' gives a matching pair) or "
                   "rebuild Horovod with launch/setup_horovod.sh",
    "sr": "report it: the solvers disagree on this machine (a BLAS or MPI problem)",
    "physics": "the tiny runs did not reach the exact energy: check TensorFlow's float64 "
               "support and the BLAS (OPENBLAS_CORETYPE=Haswell avoids a known OpenBLAS bug)",
}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


class Report:
    """Lines for rank 0 to print and the first problem found (with its fix)."""

    def __init__(self, comm):
        self.comm = comm
        self.problems: list[tuple[str, str]] = []

    def say(self, line: str = "") -> None:
        if self.comm is None or self.comm.is_root:
            print(line, flush=True)

    def problem(self, what: str, fix: str) -> None:
        self.problems.append((what, fix))
        self.say(f"  PROBLEM: {what}")


def versions(rep: Report, backend: str) -> None:
    import scipy
    import tensorflow as tf

    from distvmc import __version__

    rep.say("versions")
    rep.say(f"  python {platform.python_version()} ({sys.executable})")
    rep.say(f"  distvmc {__version__}")
    gpus = tf.config.list_physical_devices("GPU")
    rep.say(f"  tensorflow {tf.__version__} (built with CUDA: {tf.test.is_built_with_cuda()}; "
            f"{len(gpus)} GPU(s) on this node)")
    both = _version("tensorflow") and _version("tensorflow-cpu")
    dists = [d for d in ("tensorflow", "tensorflow-cpu") if _version(d)]
    rep.say(f"  tensorflow distributions: {', '.join(f'{d} {_version(d)}' for d in dists)}")
    if both:
        rep.problem("tensorflow and tensorflow-cpu are both installed; they overwrite each "
                    "other's files", HINTS["both_tf"])
    rep.say(f"  numpy {np.__version__}, scipy {scipy.__version__}")
    mpi4py = _version("mpi4py")
    line = f"  mpi4py {mpi4py or 'not installed'}"
    if mpi4py and "mpi4py" in sys.modules:  # already initialized by the communicator
        from mpi4py import MPI

        lib = MPI.Get_library_version().replace("\0", "").splitlines()[0].strip()
        line += f"; MPI: {lib}"
    rep.say(line)
    hvd_version = _version("horovod")
    if hvd_version is None:
        rep.say("  horovod not installed (optional: launch/setup_horovod.sh)")
        return
    try:
        import horovod.tensorflow as hvd

        built = (f"tensorflow yes, mpi {hvd.mpi_built()}, gloo {hvd.gloo_built()}, "
                 f"nccl {bool(hvd.nccl_built())}, cuda {hvd.cuda_built()}")
        rep.say(f"  horovod {hvd_version}: {built}")
        if gpus and not hvd.nccl_built():
            rep.problem("this node has GPUs but Horovod was built without NCCL (GPU tensors "
                        "would be reduced through the host)",
                        "rebuild it on the GPU node: launch/setup_horovod.sh --rebuild")
    except Exception as e:  # noqa: BLE001 - a Horovod that does not load is the finding
        msg = " ".join(str(e).split())[:160]
        rep.say(f"  horovod {hvd_version}: does not load with TensorFlow {tf.__version__} "
                f"({type(e).__name__}: {msg})")
        if backend == "horovod":
            rep.problem("Horovod does not load", "Horovod 0.28.1 needs TensorFlow 2.18: use "
                        "the venv that launch/setup_horovod.sh builds")


def _gather_text(comm, text: str, width: int = 256) -> list[str]:
    """Every rank's short text on every rank (one allgather of ``width`` numbers each)."""
    raw = text.encode()[:width].ljust(width, b"\0")
    rows = comm.allgather(np.frombuffer(raw, dtype=np.uint8).astype(np.float64)[None])
    return [bytes(r.astype(np.uint8)).rstrip(b"\0").decode(errors="replace") for r in rows]


def devices(rep: Report, comm) -> list[str]:
    from distvmc.comm import describe_device

    lines = _gather_text(comm, describe_device(comm))
    rep.say("devices")
    for line in lines:
        rep.say(f"  {line}")
    return lines


def collectives(rep: Report, comm) -> None:
    """Exact float64 results that any float32 path or wrong rank order would break."""
    r, size = comm.rank, comm.size
    tiny = 2.0 ** -40  # lost in float32
    bad = []
    s = comm.allreduce(np.array([1.0 + tiny * (r + 1), float(r), -0.5 * r]))
    want = np.array([size + tiny * size * (size + 1) / 2, size * (size - 1) / 2,
                     -0.25 * size * (size - 1)])
    if not np.array_equal(s, want):
        bad.append(f"allreduce {s.tolist()} != {want.tolist()}")
    b = comm.bcast(np.array([np.pi + tiny, 1e-300, -0.0]) + r)
    if not np.array_equal(b, np.array([np.pi + tiny, 1e-300, -0.0])):
        bad.append(f"bcast {b.tolist()}")
    g = comm.allgather(np.full((1, 2), r + tiny))
    if not np.array_equal(g[:, 0], np.arange(size) + tiny):
        bad.append("allgather")
    got = comm.alltoall([np.full((1, 3), 100.0 * r + s_ + tiny) for s_ in range(size)])
    if not all(np.array_equal(got[q], np.full((1, 3), 100.0 * q + r + tiny)) for q in range(size)):
        bad.append("alltoall")
    fails = comm.allreduce(np.array([float(bool(bad))]))[0]
    rep.say(f"collectives ({comm.name}, {size} rank(s)): allreduce, bcast, allgather, alltoall "
            f"on float64 " + ("exact on every rank" if fails == 0 else f"WRONG on {int(fails)} rank(s)"))
    if bad:
        print(f"  rank {r}: " + "; ".join(bad), flush=True)
    if fails:
        rep.problem("a collective returned wrong float64 values", HINTS["collectives"])


def sr_solvers(rep: Report, comm) -> None:
    """One random SR problem split over the ranks: dense, cg, samplespace agree, same bits."""
    from types import SimpleNamespace

    from distvmc.optimizers.sr import SR, Gradient

    rng = np.random.default_rng(11)  # the same on every rank
    n, p = 48 * comm.size, 150
    o = rng.standard_normal((n, p)) * np.geomspace(0.05, 2.0, p)
    e = rng.standard_normal(n)
    o, e = o - o.mean(0), e - e.mean()
    mine = slice(comm.rank * 48, (comm.rank + 1) * 48)
    out, timing = {}, {}
    import tensorflow as tf

    for where in ("host", "device"):  # NumPy arrays, then tf.Tensors on this rank's device
        for solver in ("dense", "cg", "samplespace"):
            cfg = SimpleNamespace(solver=solver, cg_tol=1e-12, cg_maxiter=1000,
                                  cg_precondition="jacobi")
            sr = SR(cfg, comm, p, log=None)
            om, em = o[mine], e[mine]
            if where == "device":
                om, em = tf.constant(om), tf.constant(em)
            key = solver if where == "host" else f"{solver}@device"
            t0 = time.perf_counter()
            d, _ = sr.direction(Gradient(o=om, e=em, n=float(n)), 1e-3)
            timing[key] = time.perf_counter() - t0
            out[key] = d
    ref = out["dense"]
    diffs = {k: float(np.linalg.norm(v - ref) / np.linalg.norm(ref)) for k, v in out.items()}
    root = {k: comm.bcast(v) for k, v in out.items()}
    differ = sum(not np.array_equal(root[k], out[k]) for k in out)
    differ = int(comm.allreduce(np.array([float(differ)]))[0])
    rep.say(f"SR solvers (P = {p}, {n} samples over {comm.size} rank(s); @device: O as a "
            "tf.Tensor): "
            + ", ".join(f"{k} {diffs[k]:.1e} ({timing[k] * 1e3:.1f} ms)" for k in out)
            + f" relative to dense; {'bitwise equal on every rank' if not differ else 'RANKS DIFFER'}")
    if max(diffs.values()) > 1e-8 or differ:
        rep.problem("the SR solvers disagree (or differ between ranks)", HINTS["sr"])


def _tiny_job(comm, overrides: list[str], iterations: int, samples: int):
    from distvmc import config
    from distvmc.job import Job
    from distvmc.systems import build_system

    cfg = config.load(None, overrides + ["optimizer.solver=dense", "sampler.thermalization=50",
                                         "evaluation.thermalization=20"])
    job = Job(cfg, comm, build_system(cfg), log=lambda *a, **k: None)
    job.start_state(0)
    t0 = time.perf_counter()
    job.driver.train(iterations)
    seconds = time.perf_counter() - t0
    out = job.driver.objective.evaluate(samples=samples)
    return job, out, seconds


def physics(rep: Report, comm) -> list[dict]:
    rep.say("physics")
    walkers = max(256 // comm.size, 64)
    job, out, sec = _tiny_job(comm, [
        "system.particles=1", "system.dim=3", "potential.type=harmonic", "potential.omega=1.0",
        "wavefunction.factors=[{type: gaussian_envelope, alpha: 0.3}]",
        f"sampler.walkers={walkers}", "optimizer.lr=0.2"], 40, 20000)
    err = abs(out["energy"] - 1.5)
    ok = err < 1e-8
    rep.say(f"  3D oscillator, Gaussian ansatz: E = {out['energy']:.12f} (exact 1.5, "
            f"|dE| = {err:.1e}, variance {out['variance']:.1e}) {'OK' if ok else 'FAILED'} "
            f"[{sec:.1f} s for 40 iterations]")
    if not ok:
        rep.problem(f"the 3D oscillator ended at E = {out['energy']:.10f}, not 1.5 to 1e-8",
                    HINTS["physics"])
    history = list(job.history)
    job, out, sec = _tiny_job(comm, [
        "wavefunction.factors=[{type: exp_envelope, decay: 0.6}]",
        f"sampler.walkers={max(512 // comm.size, 64)}", "optimizer.lr=0.5"], 40, 20000)
    dev = abs(out["energy"] + 0.5)
    ok = dev <= 4 * out["energy_err"] + 1e-6
    rep.say(f"  hydrogen, exp(-a r): E = {out['energy']:.8f} ± {out['energy_err']:.1e} "
            f"(exact -0.5) {'OK' if ok else 'FAILED'} [{sec:.1f} s for 40 iterations]")
    if not ok:
        rep.problem(f"hydrogen ended at E = {out['energy']:.8f} ± {out['energy_err']:.1e}, "
                    "not -0.5 within its error bar", HINTS["physics"])
    return history + list(job.history)


def phases(rep: Report, comm, history: list[dict], device_line: str) -> None:
    """Mean seconds per iteration of each phase (after the first, compiling, iteration)."""
    import tensorflow as tf

    rows = [r for r in history if r.get("iteration", 0) > 0 and "t_sample" in r]
    if not rows:
        return
    tf_dev = "GPU" if tf.config.get_visible_devices("GPU") else "CPU"
    comm_dev = {"mpi": "host buffers (MPI)", "single": "none (one process)",
                "horovod": "Horovod (NCCL on GPU)" if tf_dev == "GPU" else "Horovod (host)"}
    on_device = tf_dev == "GPU"  # optimizer.linear_algebra auto, as in the physics runs
    table = [("sampling", "t_sample", f"TensorFlow on {tf_dev}"),
             ("E_L", "t_eloc", f"TensorFlow on {tf_dev}"),
             ("O (log-derivatives)", "t_jacobian", f"TensorFlow on {tf_dev}"
              + ("" if on_device else ", copied to host")),
             ("S / CG", "t_overlap", "TensorFlow float64 on GPU" if on_device
              else "host NumPy float64"),
             ("allreduce", "t_allreduce", comm_dev.get(comm.name, comm.name)),
             ("solve", "t_solve", "TensorFlow Cholesky on GPU (rank 0)" if on_device
              else "host NumPy/SciPy float64 (rank 0)")]
    rep.say(f"phases (seconds per iteration, mean of {len(rows)} iterations; {device_line})")
    for name, key, where in table:
        vals = [r[key] for r in rows if key in r]
        mean = f"{np.mean(vals):.4f} s" if vals else "   -    "
        rep.say(f"  {name:<20} {mean:>10}  {where}")


def run(backend: str = "auto", physics_checks: bool = True) -> int:
    """The whole check; returns the exit code (0 OK, 1 a problem)."""
    from distvmc.comm import make_communicator

    t0 = time.perf_counter()
    comm = make_communicator(backend, log=None)
    rep = Report(comm)
    rep.say(f"distvmc doctor: {comm.size} rank(s), backend {comm.name}")
    versions(rep, comm.name)
    lines = devices(rep, comm)
    collectives(rep, comm)
    sr_solvers(rep, comm)
    history = physics(rep, comm) if physics_checks else []
    phases(rep, comm, history, lines[0] if lines else "")
    # every rank agrees on the verdict (a problem found on rank 0 only is still a problem)
    n_bad = int(comm.allreduce(np.array([float(len(rep.problems))]))[0])
    gpus = sum(line.split(":", 1)[1].strip().startswith("GPU") for line in lines)
    where = f"{gpus} GPU(s)" if gpus else "CPU only"
    if not n_bad:
        rep.say(f"distvmc doctor: OK ({comm.size} rank(s), backend {comm.name}, {where}, "
                f"{time.perf_counter() - t0:.0f} s)")
        return 0
    if rep.problems:
        what, fix = rep.problems[0]
        more = f" (+{len(rep.problems) - 1} more above)" if len(rep.problems) > 1 else ""
        rep.say(f"distvmc doctor: FAILED: {what}{more}; fix: {fix}")
    else:
        rep.say("distvmc doctor: FAILED on another rank (see its lines above)")
    return 1


def main(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # the tiny runs retrace on purpose (two jobs)
    return run(args.backend, physics_checks=not args.no_physics)
