"""One rank of a multi-rank test; started by tests/test_multirank.py under mpirun.

    mpirun -np 2 python tests/multirank_worker.py equivalence BACKEND
    mpirun -np 2 python tests/multirank_worker.py bitwise BACKEND [SOLVER]
    mpirun -np 2 python tests/multirank_worker.py solvers BACKEND

Each rank prints one line ``RESULT <json>`` that the test parses.

equivalence: every rank builds the same wavefunction and the same global set of
  walker configurations X, shape (M, 2W, N, D); rank r keeps the walkers
  W_r = X[:, rW:(r+1)W]. The 2-rank SR direction (dense solver) and the energy
  statistics from W_1 | W_2 are compared, on rank 0, with a 1-rank computation
  (the SingleProcess communicator) on all of X. It first checks the
  Communicator contract (shapes, dtypes, sums, rank 0's data) on the backend.
bitwise: a few real VMC iterations (sampling, local energies, SR step with
  SOLVER, default dense; SOLVER+momentum adds optimizer.momentum = 0.9); every
  rank reports the SHA-256 of its parameter bytes after every iteration.
solvers: the same global samples as ``equivalence``; the 2-rank direction of
  every SR solver (dense, cg, samplespace; with and without an extra force;
  without and with momentum from a given previous delta) against the 1-rank
  dense direction on all samples, computed on rank 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# Small, quick-to-compile variant of the hydrogen job; float64 throughout.
OVERRIDES = [
    "wavefunction.factors.0.hidden=[8, 8]",
    "wavefunction.factors.1.decay=0.8",
    "sampler.walkers=96",
    "sampler.thermalization=40",
    "sampler.sweeps_per_sample=5",
    "optimizer.solver=dense",
    "optimizer.lr=0.05",
    "optimizer.shift=1.0e-3",
]


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float64).tobytes()).hexdigest()


def _setup(backend: str, extra: list[str], config_path: str | None = None,
           overrides: list[str] | None = None):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from distvmc import config
    from distvmc.comm import make_communicator
    from distvmc.job import Job
    from distvmc.systems import build_system

    base = OVERRIDES if overrides is None else overrides
    cfg = config.load(config_path, base + [f"distributed.backend={backend}"] + extra)
    comm = make_communicator(cfg.distributed.backend)
    if comm.size != 2:
        raise SystemExit(f"expected 2 ranks, got {comm.size} (backend {comm.name})")
    job = Job(cfg, comm, build_system(cfg), log=lambda *a, **k: None)
    job.start_state(0)
    return cfg, comm, job.driver


def collectives(comm) -> list[str]:
    """The Communicator contract on 2 ranks; returns what failed (empty: all good)."""
    bad = []
    r = comm.rank
    s = comm.allreduce(np.float64(r + 1.5))  # 0-d in, 0-d out
    if np.shape(s) != () or float(s) != 4.0:
        bad.append(f"allreduce 0-d: {s!r}")
    m = comm.allreduce(np.full((2, 3), r + 0.25))
    if m.shape != (2, 3) or m.dtype != np.float64 or not np.all(m == 1.5):
        bad.append(f"allreduce 2-d: {m!r}")
    a, b = comm.allreduce_many([np.array([r, 1.0]), np.eye(2) * r])
    if not (np.array_equal(a, [1.0, 2.0]) and np.array_equal(b, np.eye(2))):
        bad.append(f"allreduce_many: {a!r} {b!r}")
    i = comm.bcast(np.array([7 + r, 9 + r], dtype=np.int64))
    if i.dtype != np.int64 or list(i) != [7, 9]:
        bad.append(f"bcast int64: {i!r}")
    f = comm.bcast(np.arange(4.0).reshape(2, 2) + r)
    if f.shape != (2, 2) or not np.array_equal(f, np.arange(4.0).reshape(2, 2)):
        bad.append(f"bcast 2-d: {f!r}")
    o = comm.bcast_object({"rank": r, "dir": f"runs/x-{r}"})
    if o != {"rank": 0, "dir": "runs/x-0"}:
        bad.append(f"bcast_object: {o!r}")
    g = comm.allgather(np.full((r + 1, 2), float(r)))  # 1 row from rank 0, 2 from rank 1
    if g.shape != (3, 2) or not np.array_equal(g[:, 0], [0.0, 1.0, 1.0]):
        bad.append(f"allgather: {g!r}")
    got = comm.alltoall([np.full((r + 1, s + 2), 10.0 * r + s) for s in range(comm.size)])
    want = [np.full((q + 1, r + 2), 10.0 * q + r) for q in range(comm.size)]
    if len(got) != len(want) or not all(a.shape == b.shape and np.array_equal(a, b)
                                        for a, b in zip(got, want)):
        bad.append(f"alltoall: {got!r}")
    comm.barrier()
    return bad


def equivalence(backend: str) -> dict:
    from distvmc import stats
    from distvmc.comm import SingleProcess
    from distvmc.optimizers.sr import SR, Gradient

    cfg, comm, driver = _setup(backend, [])
    obj = driver.objective

    def sr_direction(x, e, c):
        """The SR direction over the ranks of c for this rank's samples x, energies e."""
        o = obj.log_derivatives(x)
        first = c.allreduce(np.concatenate([o.sum(axis=0), [e.sum(), float(len(e))]]))
        n = first[-1]
        g = Gradient(o=o - first[:-2] / n, e=e - first[-2] / n, n=n)
        return SR(cfg.optimizer, c, o.shape[1]).direction(g, cfg.optimizer.shift)

    contract = collectives(comm)
    m, w = 3, cfg.sampler.walkers
    n, d = obj.system.particles, obj.system.dim
    rng = np.random.default_rng(20240611)  # the same on every rank
    x_all = rng.standard_normal((m, comm.size * w, n, d)) * 1.3
    x_mine = x_all[:, comm.rank * w:(comm.rank + 1) * w]

    e_mine = obj.local_energy(x_mine.reshape((m * w, n, d))).reshape(m, w)
    st2 = stats.summarize(e_mine, comm)
    d2, info2 = sr_direction(x_mine.reshape((m * w, n, d)), e_mine.ravel(), comm)

    out = {"rank": comm.rank, "backend": comm.name, "size": comm.size,
           "delta_sha": _sha(d2), "solver": info2["solver"], "n_parameters": int(d2.size),
           "collectives_failed": contract}
    if comm.rank == 0:
        one = SingleProcess()
        e_all = obj.local_energy(x_all.reshape((m * comm.size * w, n, d))).reshape(m, comm.size * w)
        st1 = stats.summarize(e_all, one)
        d1, info1 = sr_direction(x_all.reshape((-1, n, d)), e_all.ravel(), one)
        out["solver_1rank"] = info1["solver"]
        out["delta_norm"] = float(np.linalg.norm(d1))
        out["delta_rel_diff"] = float(np.linalg.norm(d2 - d1) / np.linalg.norm(d1))
        out["stats_1rank"] = st1.to_dict()
        out["stats_2rank"] = st2.to_dict()
    return out


def solvers(backend: str) -> dict:
    from types import SimpleNamespace

    import tensorflow as tf

    from distvmc.comm import SingleProcess
    from distvmc.optimizers.sr import SR, Gradient

    cfg, comm, driver = _setup(backend, [])
    obj = driver.objective
    m, w = 2, 24  # 96 samples over both ranks, fewer than the 114 parameters
    n, d = obj.system.particles, obj.system.dim
    rng = np.random.default_rng(7)  # the same on every rank
    x_all = (rng.standard_normal((m * comm.size * w, n, d)) * 1.3)
    e_all = obj.local_energy(x_all)
    rows = slice(comm.rank * m * w, (comm.rank + 1) * m * w)
    o_all = obj.log_derivatives(x_all)
    p = o_all.shape[1]
    extra = np.random.default_rng(8).standard_normal(p) * 0.05
    shift = 1e-3

    previous = np.random.default_rng(9).standard_normal(p) * 0.5  # SPRING's delta_(k-1)

    def direction(o, e, c, solver, ex, momentum=0.0, device=False):
        first = c.allreduce(np.concatenate([o.sum(axis=0), [e.sum(), float(len(e))]]))
        nn = first[-1]
        g = Gradient(o=o - first[:-2] / nn, e=e - first[-2] / nn, n=nn, extra=ex)
        if device:  # optimizer.linear_algebra: device (tf.Tensors; this CPU in CI)
            g = Gradient(o=tf.constant(g.o), e=tf.constant(g.e), n=nn, extra=ex)
        sc = SimpleNamespace(solver=solver, cg_tol=1e-12, cg_maxiter=2000,
                             cg_precondition="jacobi", momentum=momentum)
        sr = SR(sc, c, p, log=None)
        if momentum:
            sr.set_state({"previous_delta": previous})
        return sr.direction(g, shift)

    out = {"rank": comm.rank, "backend": comm.name, "size": comm.size, "n_parameters": p,
           "samples": int(len(e_all)), "sha": {}, "rel_diff": {}, "solve": {}}
    for solver, device in [(s, False) for s in ("dense", "cg", "samplespace")] + \
            [(s, True) for s in ("dense", "cg", "samplespace")]:
        for ex in (None, extra):
            for mu in (0.0, 0.9):  # without and with momentum (SPRING)
                key = solver + ("+extra" if ex is not None else "") + ("+momentum" if mu else "") \
                    + ("@device" if device else "")
                d2, info = direction(o_all[rows], e_all[rows], comm, solver, ex, mu, device)
                out["sha"][key] = _sha(d2)
                out["solve"][key] = info["solve"]
                if comm.rank == 0:
                    d1, _ = direction(o_all, e_all, SingleProcess(), "dense", ex, mu)
                    out["rel_diff"][key] = float(np.linalg.norm(d2 - d1) / np.linalg.norm(d1))
    # optimizer.o_matrix = recompute: CG on O as an operator (network passes, never formed)
    from distvmc.optimizers.jacobian import ImplicitO, JacobianProducts

    products = JacobianProducts(obj.wf)
    for ex in (None, extra):
        for mu in (0.0, 0.9):
            key = "cg" + ("+extra" if ex is not None else "") + ("+momentum" if mu else "") \
                + "@recompute"
            o, e = o_all[rows], e_all[rows]
            first = comm.allreduce(np.concatenate([o.sum(axis=0), [e.sum(), float(len(e))]]))
            nn = first[-1]
            op = ImplicitO(products, tf.constant(x_all[rows]), first[:-2] / nn)
            g = Gradient(o=op, e=tf.constant(e - first[-2] / nn), n=nn, extra=ex)
            sr = SR(SimpleNamespace(solver="cg", cg_tol=1e-12, cg_maxiter=2000,
                                    cg_precondition="none", momentum=mu), comm, p, log=None)
            if mu:
                sr.set_state({"previous_delta": previous})
            d2, info = sr.direction(g, shift)
            out["sha"][key] = _sha(d2)
            out["solve"][key] = info["solve"]
            if comm.rank == 0:
                d1, _ = direction(o_all, e_all, SingleProcess(), "dense", ex, mu)
                out["rel_diff"][key] = float(np.linalg.norm(d2 - d1) / np.linalg.norm(d1))
    return out


# configs/alpha.yaml made small: the nuclear factors, pionless two- and three-body
# terms and centre-of-mass re-centring on two ranks.
ALPHA = ["sampler.walkers=64", "sampler.thermalization=20", "sampler.sweeps_per_sample=4",
         "wavefunction.factors.0.phi=[8, 8]", "wavefunction.factors.0.rho=[8]",
         "wavefunction.factors.1.hidden=[8]"]


def bitwise(backend: str, solver: str = "dense", iterations: int = 4,
            system: str = "hydrogen") -> dict:
    solver, _, where = solver.partition("@")
    solver, _, momentum = solver.partition("+")
    extra = [f"optimizer.solver={solver}"] + (["optimizer.momentum=0.9"] if momentum else []) \
        + ([f"optimizer.linear_algebra={where}"] if where in ("host", "device") else []) \
        + (["optimizer.o_matrix=recompute"] if where == "recompute" else [])
    if system == "alpha":
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                            "alpha.yaml")
        cfg, comm, driver = _setup(backend, extra, path, ALPHA)
    else:
        cfg, comm, driver = _setup(backend, extra)
    iterations = int(iterations)
    initial = _sha(driver.wf.get_flat())
    hashes, mismatches, energies = [], [], []
    for _ in range(iterations):
        rec = driver.step()
        theta = driver.wf.get_flat()
        hashes.append(_sha(theta))
        energies.append(rec["energy"])
        # In-job check as well: rank 0's parameters, bitwise, against this rank's.
        root = comm.bcast(theta)
        differ = float(not np.array_equal(root.view(np.uint64), theta.view(np.uint64)))
        mismatches.append(float(comm.allreduce(np.array([differ]))[0]))
    return {"rank": comm.rank, "backend": comm.name, "size": comm.size,
            "initial_sha": initial, "param_sha": hashes, "ranks_differing": mismatches,
            "walkers_sha": _sha(driver.objective.sampler.x.numpy()), "energies": energies}


if __name__ == "__main__":
    what, backend, *rest = sys.argv[1:]
    result = {"equivalence": equivalence, "bitwise": bitwise, "solvers": solvers}[what](
        backend, *rest)
    print("RESULT " + json.dumps(result), flush=True)
