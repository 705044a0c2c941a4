"""Objectives: what the driver minimizes, and the gradient it hands the preconditioner.

An objective owns how energies are integrated for one trial state. Each
iteration :meth:`estimate` returns a history record (energy, error, ...) and
a :class:`~distvmc.optimizers.sr.Gradient` (None when local energies were not
finite: the driver then rewinds). Three objectives:

``MonteCarloEnergy``
    E = <E_L>_{|psi|^2} by Metropolis sampling; F = <O_c E_c>.
``PenalizedEnergy``
    The excited-state search in sampling mode: E + lambda sum_j S_jk^2 with
    Monte Carlo overlaps against the states already found (see below).
``QuadratureEnergy``
    Grid mode: E of the (projected) state by quadrature, its exact gradient
    and metric (:mod:`distvmc.grid`). Deterministic: the driver uses step
    control, and the objective says when the state has converged.

Every objective has ``state()`` / ``set_state()`` (:mod:`distvmc.state`),
``prepare()`` (thermalization), ``after_update()`` (the sampler's cached
log|psi|^2 after the parameters changed).

Penalized energy (sampling mode, state k, states j < k already found):

    L_k = E[psi_k] + lambda sum_{j<k} S_jk^2,
    S_jk^2 = <psi_j/psi_k>_{|psi_k|^2} <psi_k/psi_j>_{|psi_j|^2}
           = |<psi_j|psi_k>|^2 / (<psi_j|psi_j> <psi_k|psi_k>),

each factor averaged over samples of one state only (the product of two
independent means is an unbiased estimate of S^2). Samples of |psi_j|^2 come
from a sampler per lower state that keeps running. With O the per-sample
log-derivatives,

    (1/2) dE/dtheta      = <O_c E_c>_k
    d<psi_j/psi_k>_k     = <(psi_j/psi_k) O>_k - 2 <psi_j/psi_k>_k <O>_k
    d<psi_k/psi_j>_j     = <(psi_k/psi_j) O>_j

and the penalty's half-gradient is the Gradient's ``extra`` force; the
metric is the state's own S (the same O).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from distvmc import observables, stats
from distvmc.hamiltonian import LocalEnergy
from distvmc.optimizers.jacobian import ImplicitO, JacobianProducts, LogDerivatives
from distvmc.optimizers.sr import Gradient, recompute_o
from distvmc.sampler import MetropolisSampler, auto_walker_groups, stream_key, walkers_for_rank

MAX_EVALUATION_REDRAWS = 10  # evaluation blocks with non-finite energies redrawn at most this often


class NonFiniteEnergyError(RuntimeError):
    """Non-finite local energies that recovery could not get rid of."""


class Amplitude:
    """Compiled (sign psi, log|psi|) of one wavefunction, chunked; NumPy in and out."""

    def __init__(self, wf, shape: tuple[int, int], dtype, chunk_size: int):
        spec = tf.TensorSpec([None, *shape], dtype)
        self.chunk = chunk_size

        @tf.function(input_signature=[spec])
        def f(x):
            return wf(x)

        self._f = f

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (S, N, D) -> (sign (S,), log|psi| (S,)), float64."""
        ss, us = [], []
        for i in range(0, len(x), self.chunk):
            s, u = self._f(tf.convert_to_tensor(x[i:i + self.chunk]))
            ss.append(s.numpy())
            us.append(u.numpy())
        return np.concatenate(ss).astype(np.float64), np.concatenate(us).astype(np.float64)


def ratio(num, den) -> np.ndarray:
    """psi_num / psi_den from (sign, log|psi|) pairs (0 where the numerator vanishes)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return num[0] * den[0] * np.exp(num[1] - den[1])


def finite_mean(values: np.ndarray, comm) -> float:
    """Global mean of the finite entries (one allreduce)."""
    ok = np.isfinite(values)
    tot = comm.allreduce(np.array([np.where(ok, values, 0.0).sum(), float(ok.sum())]))
    return float(tot[0] / tot[1]) if tot[1] > 0 else float("nan")


def make_sampler(wf, x0, step, seed, comm, cfg, dtype, purpose=0, name="sampler", log=None):
    """The Metropolis sampler of a config; ``log`` (if given) hears the walker-group choice."""
    counts = [int(g.count) for g in cfg.system.species]
    groups = cfg.sampler.walker_groups
    if cfg.sampler.moves == "all" and groups == 0:
        groups, why = auto_walker_groups(len(x0))
        if log is not None:
            log(f"sampler: {groups} walker group(s) side by side ({why})")
    return MetropolisSampler(wf.log_abs, x0, step, stream_key(seed, comm.rank, purpose), comm,
                             cfg.sampler.target_acceptance, dtype, name=name,
                             recentre=cfg.sampler.recentre, moves=cfg.sampler.moves,
                             groups=np.repeat(np.arange(len(counts)), counts),
                             walker_groups=max(1, groups))


def linear_algebra(cfg, comm, log=None) -> str:
    """``optimizer.linear_algebra`` resolved to "host" or "device" (auto: device when a
    GPU is visible), logged once on rank 0."""
    want = cfg.optimizer.linear_algebra
    gpu = bool(tf.config.get_visible_devices("GPU"))
    where = ("device" if gpu else "host") if want == "auto" else want
    if log is not None and comm.is_root:
        if where == "device":
            dev = "the GPU" if gpu else "the CPU (no GPU visible)"
            log(f"SR linear algebra: device (O, S v and the solve in TensorFlow on {dev})")
        else:
            log("SR linear algebra: host (O in NumPy" + (
                "; on CPUs NumPy/OpenBLAS float64 is faster than TensorFlow's)" if not gpu
                else "; a GPU is visible, optimizer.linear_algebra=device keeps O on it)"))
    return where


class MonteCarloEnergy:
    """E[psi] by Metropolis sampling of |psi|^2, for one wavefunction on one communicator.

    ``implicit_o``: whether this objective can hand SR an O that is never formed
    (``optimizer.o_matrix``); the penalized excited-state objective cannot.

    Args:
      wf: the :class:`~distvmc.wavefunctions.Wavefunction` (its parameters are trained).
      system: the :class:`~distvmc.systems.System`.
      cfg: the validated config (sampler, hamiltonian, evaluation sections).
      comm: the communicator.
      seed: seed of the walkers' start and of the random streams (keyed by (seed, rank)).
    """

    deterministic = False
    implicit_o = True

    def __init__(self, wf, system, cfg, comm, seed: int, log=print):
        self.wf, self.system, self.cfg, self.comm, self.seed = wf, system, cfg, comm, seed
        self.log = log
        self.dtype = tf.float64 if cfg.precision == "float64" else tf.float32
        h, s = cfg.hamiltonian, cfg.sampler
        self.local_energy = LocalEnergy(wf, system, h.laplacian, h.chunk_size, self.dtype, log=log,
                                        agree=comm.bcast_object)
        self.log_derivatives = LogDerivatives(wf, h.chunk_size, log=log)
        self.on_device = linear_algebra(cfg, comm, log) == "device"
        recompute = self.implicit_o and recompute_o(
            cfg.optimizer, wf.n_parameters, s.walkers * s.samples_per_walker * comm.size,
            comm.size)
        self.o_products = JacobianProducts(wf, h.chunk_size) if recompute else None
        self._o_checked = False
        if recompute and comm.is_root:
            log(f"optimizer.o_matrix = {cfg.optimizer.o_matrix}: recompute (O is never formed; "
                f"every S v of CG is a forward- and a reverse-mode pass through the network; "
                f"P = {wf.n_parameters})")
        rng = np.random.default_rng(np.random.SeedSequence([seed, comm.rank, 1]))
        x0 = system.initial_walkers(rng, s.walkers, s.init_width)
        self.sampler = make_sampler(wf, x0, s.step, seed, comm, cfg, self.dtype, log=log)
        self.thermalized = False

    @property
    def global_walkers(self) -> int:
        return self.sampler.walkers * self.comm.size

    # -- state -------------------------------------------------------------
    def state(self) -> dict:
        return {"sampler": self.sampler.state(), "thermalized": self.thermalized}

    def set_state(self, state: dict) -> str:
        """Restore (a snapshot, or a checkpoint gathered from any number of ranks);
        returns "" or a note on how walkers were redistributed."""
        x, counter, note = walkers_for_rank(state["sampler"], self.comm)
        step = float(state["sampler"]["step"])
        if x.shape[0] != self.sampler.walkers:
            self.sampler = make_sampler(self.wf, x, step, self.seed, self.comm, self.cfg, self.dtype)
        self.sampler.set_state({**state["sampler"], "x": x, "step": step, "counter": counter})
        self.thermalized = bool(state["thermalized"])
        if "copies" in note:
            sweeps = self.cfg.sampler.thermalization
            acc = self.sampler.thermalize(sweeps, adapt=False) if sweeps else float("nan")
            note += (f", so every rank re-thermalized {sweeps} sweeps (acceptance {acc:.3f})")
        return note

    # -- the loop ------------------------------------------------------------
    def prepare(self) -> None:
        """Thermalize once before the first iteration (not again after a resume)."""
        if not self.thermalized:
            s = self.cfg.sampler
            acc = self.sampler.thermalize(s.thermalization, adapt=s.adapt != "never")
            self.thermalized = True
            self.log(f"thermalized {s.thermalization} sweeps: acceptance {acc:.3f}, "
                     f"step {float(self.sampler.step.numpy()):.4g}")

    def _sample(self) -> tuple[dict, np.ndarray, np.ndarray, stats.Stats, float]:
        s = self.cfg.sampler
        t0 = time.perf_counter()
        xs, acc = self.sampler.sample(s.samples_per_walker, s.sweeps_per_sample,
                                      as_tensor=self.on_device)
        if s.adapt == "always":
            self.sampler.adapt(acc)
        m, w = xs.shape[:2]
        x = (tf.reshape(xs, (m * w,) + tuple(xs.shape[2:])) if self.on_device
             else xs.reshape((m * w,) + xs.shape[2:]))
        t1 = time.perf_counter()
        # on the device path the local energies stay there for F; the host gets one copy
        # (W numbers) for the statistics and the history
        self._e_device = self.local_energy.tensor(x) if self.on_device else None
        e = self._e_device.numpy() if self.on_device else self.local_energy(x)
        t2 = time.perf_counter()
        st = stats.summarize(e.reshape(m, w), self.comm)
        rec = {"energy": st.mean, "energy_err": st.error, "variance": st.variance,
               "tau": st.tau, "acceptance": acc, "step": float(self.sampler.step.numpy()),
               "nonfinite": st.nonfinite, "samples": st.n + st.nonfinite,
               "t_sample": t1 - t0, "t_eloc": t2 - t1}
        return rec, x, e, st, t2

    def _centred(self, x, e):
        """(O_c (S, P), E_c (S,), n, <O> (P,)): one allreduce for the global means.

        On the device path O and E_c are ``tf.Tensor``s on the device; the host sees
        the column sums of O (P numbers) for the allreduce of the means."""
        t0 = time.perf_counter()
        if self.o_products is not None and not self._o_checked:
            self._check_products(x)
        if self.o_products is not None:  # O as an operator: <O> by one reverse-mode pass
            x = tf.convert_to_tensor(x)
            o_sum = self.o_products.vjp(x, tf.ones([int(x.shape[0])], tf.float64)).numpy()
        elif self.on_device:
            o = self.log_derivatives.tensor(x)
            o_sum = tf.reduce_sum(o, axis=0).numpy()
        else:
            o = self.log_derivatives(x)
            o_sum = o.sum(axis=0)
        t1 = time.perf_counter()
        first = self.comm.allreduce(np.concatenate([o_sum, [e.sum(), float(len(e))]]))
        n = first[-1]
        o_mean, e_mean = first[:-2] / n, first[-2] / n
        if self.o_products is not None:
            o = ImplicitO(self.o_products, x, o_mean)
        elif self.on_device:
            o = o - tf.constant(o_mean, dtype=o.dtype)
        else:
            o -= o_mean  # in place: O is the largest array of an iteration (S x P)
        if self.on_device:
            ec = self._e_device - e_mean
        else:
            ec = e - e_mean if self.o_products is None else tf.constant(e - e_mean)
        return o, ec, n, o_mean, t1 - t0

    def _check_products(self, x, rows: int = 8) -> None:
        """Once: the recomputed products against the stored O of the first samples (every
        rank decides together). ``auto`` falls back to the stored O, ``recompute`` stops."""
        self._o_checked = True
        why = ""
        try:
            xr = tf.convert_to_tensor(x[:rows])
            o = self.log_derivatives(xr)
            rng = np.random.default_rng(0)
            v, u = rng.standard_normal(o.shape[1]), rng.standard_normal(o.shape[0])
            for got, ref, what in ((self.o_products.jvp(xr, tf.constant(v)).numpy(), o @ v, "O v"),
                                   (self.o_products.vjp(xr, tf.constant(u)).numpy(), o.T @ u,
                                    "O^T u")):
                err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
                scale = float(np.max(np.abs(ref))) if ref.size else 0.0
                if not err <= 1e-10 * max(scale, 1e-300):
                    why = f"{what} differs from the stored O by {err:.1e} (max {scale:.1e})"
                    break
        except Exception as e:  # noqa: BLE001 - any failure: the stored O still works
            why = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        bad = self.comm.allreduce(np.array([float(bool(why))]))[0] > 0
        if not bad:
            return
        why = why or "the check failed on another rank"
        if self.cfg.optimizer.o_matrix == "recompute":
            from distvmc.config import ConfigError  # every rank raises it together

            raise ConfigError(f"optimizer.o_matrix = recompute: {why}; this wavefunction needs "
                              "optimizer.o_matrix = stored (or auto)")
        if self.comm.is_root:
            self.log(f"note: optimizer.o_matrix = auto: recompute off ({why}); O is stored")
        self.o_products = None

    def estimate(self, needs_metric: bool = True) -> tuple[dict, Gradient | None]:
        """Sample, local energies, statistics; the gradient unless energies are not finite."""
        rec, x, e, st, _ = self._sample()
        if st.nonfinite > 0:
            return rec, None
        oc, ec, n, _, t_jac = self._centred(x, e)
        rec["t_jacobian"] = t_jac
        return rec, Gradient(o=oc, e=ec, n=n)

    def after_update(self) -> None:
        self.sampler.refresh()

    # -- after training ------------------------------------------------------
    def evaluate(self, samples: int | None = None, sweeps: int | None = None,
                 thermalization: int | None = None, between_blocks=None) -> dict:
        """Energy and observables from fresh samples with frozen parameters.

        ``samples`` is the global count (over all ranks). The walkers continue
        from the training sampler but draw from an independent random stream.
        A block of measurements with any non-finite local energy (on any rank)
        is discarded on every rank and drawn again from the continuing chains,
        at most :data:`MAX_EVALUATION_REDRAWS` times; the discarded count is
        reported as ``nonfinite`` (and logged), never silently dropped.
        ``between_blocks`` is called on every rank between blocks (it may run
        collectives and raise to stop, e.g. on a pre-emption signal).
        """
        ev = self.cfg.evaluation
        samples = ev.samples if samples is None else samples
        sweeps = ev.sweeps_per_sample if sweeps is None else sweeps
        therm = ev.thermalization if thermalization is None else thermalization
        w = self.sampler.walkers
        m = max(1, -(-samples // (w * self.comm.size)))
        sampler = make_sampler(self.wf, self.sampler.x.numpy(), self.sampler.proposal_step(),
                               self.seed, self.comm, self.cfg, self.dtype, purpose=2,
                               name="eval_sampler")
        t0 = time.perf_counter()
        sampler.thermalize(therm, adapt=self.cfg.sampler.adapt != "never")
        nd = self.system.particles * self.system.dim
        per_block = max(1, min(m, (1 << 22) // max(w * nd, 1)))
        es, xs_all, accs = [], [], []
        done, redraws, discarded = 0, 0, 0
        while done < m:
            if between_blocks is not None:
                between_blocks()
            k = min(per_block, m - done)
            xs, acc = sampler.sample(k, sweeps)
            e = self.local_energy(xs.reshape((k * w,) + xs.shape[2:])).reshape(k, w)
            bad = int(self.comm.allreduce(np.array([float(np.sum(~np.isfinite(e)))]))[0])
            if bad:
                redraws += 1
                discarded += bad
                self.log(f"warning: evaluation: {bad} non-finite local energies in a block of "
                         f"{k * w * self.comm.size}; the block is discarded and drawn again "
                         f"({redraws} of at most {MAX_EVALUATION_REDRAWS})")
                if redraws > MAX_EVALUATION_REDRAWS:
                    raise NonFiniteEnergyError(
                        f"evaluation: non-finite local energies in {redraws} blocks "
                        f"({discarded} values); the wavefunction is not usable as it is")
                continue
            es.append(e)
            xs_all.append(xs)
            accs.append(acc * k)
            done += k
        e = np.concatenate(es)
        xs = np.concatenate(xs_all)
        st = stats.summarize(e, self.comm)
        out = {
            "energy": st.mean, "energy_err": st.error, "variance": st.variance,
            "tau": st.tau, "rhat": st.rhat, "samples": st.n, "nonfinite": discarded,
            "redrawn_blocks": redraws,
            "acceptance": float(sum(accs) / m), "step": float(sampler.step.numpy()),
            "wall_s": time.perf_counter() - t0,
        }
        out["observables"] = observables.radial_moments(
            xs, self.comm, centre_of_mass=bool(self.cfg.sampler.recentre))
        out["radial_density"] = observables.radial_density(xs, ev.bins, ev.r_max, self.comm)
        return out


class LowerState:
    """A state already found, as the penalized search of the next states sees it:
    its wavefunction (frozen), compiled amplitude and a sampler of |psi_j|^2 that
    keeps running (its walkers and stream are part of the run's state)."""

    def __init__(self, wf, sampler, amplitude: Amplitude):
        self.wf, self.sampler, self.amp = wf, sampler, amplitude

    def draw(self, n: int, sweeps: int, minimum: int = 1) -> np.ndarray:
        """About n fresh samples (this rank: ceil(n / walkers) per walker), shape (S, N, D)."""
        w = self.sampler.walkers
        m = max(minimum, -(-n // w))
        xs, _ = self.sampler.sample(m, sweeps)
        return xs.reshape((-1,) + xs.shape[2:])


class PenalizedEnergy(MonteCarloEnergy):
    """E + lambda sum_j S_jk^2 against the lower states (see the module docstring)."""

    implicit_o = False  # its overlap products use the stored O

    def __init__(self, wf, system, cfg, comm, seed: int, lower: list[LowerState],
                 penalty: float, log=print):
        super().__init__(wf, system, cfg, comm, seed, log)
        if self.on_device:  # the overlap penalty's products are NumPy: the host path
            self.on_device = False
            if comm.is_root:
                log("excited states: SR linear algebra on the host after all (the overlap "
                    "penalty's products with O are NumPy)")
        self.lower, self.penalty = lower, float(penalty)
        self.amp = Amplitude(wf, wf.config_shape, self.dtype, cfg.hamiltonian.chunk_size)

    def estimate(self, needs_metric: bool = True) -> tuple[dict, Gradient | None]:
        rec, x, e, st, _ = self._sample()
        rec["penalty"] = self.penalty
        if st.nonfinite > 0:
            return rec, None
        t0 = time.perf_counter()
        o = self.log_derivatives(x)  # (S, P)
        rec["t_jacobian"] = time.perf_counter() - t0
        own = self.amp(x)
        parts = [o.sum(axis=0), np.array([e.sum(), float(len(e))])]
        for low in self.lower:
            r_a = ratio(low.amp(x), own)  # psi_j / psi_k on |psi_k|^2 samples
            xj = low.draw(self.cfg.excited.overlap_samples, self.cfg.sampler.sweeps_per_sample)
            r_b = ratio(self.amp(xj), low.amp(xj))  # psi_k / psi_j on |psi_j|^2 samples
            o_b = self.log_derivatives(xj)
            ok, okb = np.isfinite(r_a), np.isfinite(r_b)
            r_a, r_b = np.where(ok, r_a, 0.0), np.where(okb, r_b, 0.0)
            parts += [np.array([r_a.sum(), float(ok.sum()), r_b.sum(), float(okb.sum())]),
                      r_a @ o, r_b @ o_b]
        sums = self.comm.allreduce_many(parts)
        n = sums[1][1]
        o_mean, e_mean = sums[0] / n, sums[1][0] / n
        extra = np.zeros_like(o_mean)
        overlap_sq = 0.0
        for j in range(len(self.lower)):
            head, ra_o, rb_o = sums[2 + 3 * j: 5 + 3 * j]
            a, b = head[0] / head[1], head[2] / head[3]
            da = ra_o / head[1] - 2.0 * a * o_mean
            db = rb_o / head[3]
            overlap_sq += a * b
            extra += 0.5 * self.penalty * (a * db + b * da)
        rec["overlap_sq"] = float(overlap_sq)
        o -= o_mean  # in place
        return rec, Gradient(o=o, e=e - e_mean, n=n, extra=extra)


class QuadratureEnergy:
    """Grid mode: the quadrature energy of the state with the lower states projected out.

    Deterministic. ``estimate`` returns the energy, its exact gradient and (for
    SR) the exact metric; every ``check_every`` iterations it also measures the
    energy variance <(H - E)^2> of the normalized projected state by quadrature.
    The state has converged when that variance is below ``grid.tolerance``:
    by Temple's inequality the energy is then within variance / gap of the
    exact level (gap: to the next level), and by Weinstein's an exact level
    lies within sqrt(variance) of it.
    """

    deterministic = True
    check_every = 10

    def __init__(self, energy, cfg):
        self.energy = energy  # distvmc.grid.GridEnergy (its wf, grid, lower states)
        self.wf = energy.wf
        self.cfg = cfg
        self.tolerance = cfg.grid.tolerance
        self.calls = 0

    def state(self) -> dict:
        return {"calls": self.calls}

    def set_state(self, state: dict) -> str:
        self.calls = int(state["calls"])
        return ""

    def prepare(self) -> None:
        pass

    def after_update(self) -> None:
        pass

    def estimate(self, needs_metric: bool = True) -> tuple[dict, Gradient | None]:
        t0 = time.perf_counter()
        e, grad, psi_p, psi, norm = self.energy.value_and_grad()
        rec = {"energy": e, "energy_err": 0.0}
        if self.calls % self.check_every == 0:
            rec["variance"] = self.energy.variance()
        self.calls += 1
        if not (np.isfinite(e) and np.all(np.isfinite(grad))):
            rec["nonfinite"] = 1
            return rec, None
        metric = self.energy.metric(psi_p, psi, norm).numpy() if needs_metric else None
        rec["t_eloc"] = time.perf_counter() - t0
        return rec, Gradient(force=0.5 * grad, metric=metric)

    def converged(self, rec: dict) -> bool:
        v = rec.get("variance")
        return self.tolerance > 0 and v is not None and np.isfinite(v) and v < self.tolerance
