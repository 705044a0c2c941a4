"""Batched Metropolis-Hastings sampling of |psi|^2.

All walkers move at once: every particle of every walker gets a Gaussian
displacement of width ``step`` and the move is accepted with probability
min(1, |psi(x')|^2 / |psi(x)|^2). A run of sweeps is one XLA-compiled
``tf.function`` (no Python loop over walkers or sweeps).

Randomness is counter-based: sweep number c of a rank draws from the
stateless Philox stream keyed by (key, c), where ``key`` derives from
(seed, rank). The whole random state is therefore the integer ``counter``,
which makes checkpoints exact and gives every rank an independent stream.

With ``moves="one"`` a sweep moves the particles one at a time: particle 1
gets a Gaussian displacement and is accepted or rejected, then particle 2 from
the updated configuration, and so on, so a sweep costs N evaluations of psi
(each a full network evaluation: the networks couple all particles, so nothing
is reused between the moves). Each species group has its own step width,
adapted from that group's own acceptance. For large N, all-particle moves need a
step ~ 1/sqrt(N) to keep any acceptance; one-particle moves keep an O(1) step.
The proposals of sweep c use the same stateless Philox stream keyed by (key, c).

With ``recentre=True`` (translation-invariant systems: nuclei) every walker's
centre of mass is moved to the origin after each sweep. For a psi that depends
only on x_i - x_cm this changes neither |psi|^2 nor any acceptance decision:
the internal coordinates follow exactly the chain they would follow without
it, while the centre of mass no longer diffuses away (tests/test_nuclei.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from distvmc.state import AllRanks, PerRank, local


def stream_key(seed: int, rank: int, purpose: int = 0) -> int:
    """A 63-bit key for the random stream of (seed, rank, purpose)."""
    state = np.random.SeedSequence([seed, rank, purpose]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 62) - 1)


LOCAL_SIZE_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "HOROVOD_LOCAL_SIZE",
                        "SLURM_NTASKS_PER_NODE")


_RANDOM_POOL: ThreadPoolExecutor | None = None


def _random_pool() -> ThreadPoolExecutor:
    """One background thread for drawing the next chunk's random numbers (NumPy's
    generators release the GIL, so the draw overlaps the compiled sweeps)."""
    global _RANDOM_POOL
    if _RANDOM_POOL is None:
        _RANDOM_POOL = ThreadPoolExecutor(1, thread_name_prefix="distvmc-random")
    return _RANDOM_POOL


def numpy_chunk(key: int, start: int, count: int, length: int, shape: tuple, dtype):
    """Standard normals (length, *shape) and log-uniforms (length, shape[0]) of the
    sweeps start ... start + count - 1 of stream ``key`` (rows from count on are 0).
    A pure function of its arguments: SFC64 seeded by SeedSequence([key, start, 0x5EED])."""
    gen = np.random.Generator(np.random.SFC64(np.random.SeedSequence([key, start, 0x5EED])))
    z = np.zeros((length,) + tuple(shape), dtype=np.float64)
    log_u = np.zeros((length, shape[0]), dtype=np.float64)
    gen.standard_normal(out=z[:count])
    gen.random(out=log_u[:count])
    np.log(log_u[:count], out=log_u[:count])
    return z.astype(dtype, copy=False), log_u.astype(dtype, copy=False)


def auto_walker_groups(walkers: int) -> tuple[int, str]:
    """(walker groups, why) for ``sampler.walker_groups: 0``: 1 when a GPU is visible
    (one large kernel is better there); on a CPU, the cores this process may use
    divided by the ranks on this node (launcher variables), capped by TensorFlow's
    inter-op threads when set, by 8, and by walkers // 64."""
    import os

    if tf.config.get_visible_devices("GPU"):
        return 1, "a GPU is visible"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local = 1
    for var in LOCAL_SIZE_VARIABLES:
        try:
            local = max(1, int(os.environ[var]))
            break
        except (KeyError, ValueError):
            continue
    n = max(1, cores // local)
    why = f"{cores} core(s), {local} rank(s) on this node"
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    if inter > 0 and inter < n:
        n, why = inter, why + f", {inter} inter-op thread(s)"
    return max(1, min(n, 8, walkers // 64)), why


class MetropolisSampler(tf.Module):
    """Walkers, step width and random-stream position of one rank.

    Attributes:
      x: walker positions, variable of shape (W, N, D).
      logp: 2 log|psi(x)|, shape (W,), kept consistent with x and the parameters.
      step: proposal width (same on every rank; adapted from global acceptance);
        with moves "one" the mean of ``steps``.
      steps: moves "one": proposal width per species group, shape (G,).
      counter: number of sweeps drawn from this rank's random stream so far.
    """

    def __init__(self, log_abs, x0: np.ndarray, step: float, key: int, comm,
                 target_acceptance: float = 0.5, dtype=tf.float64, name="sampler",
                 recentre: bool = False, moves: str = "all", groups=None, walker_groups: int = 1):
        super().__init__(name=name)
        if moves not in ("all", "one"):
            raise ValueError(f"moves must be 'all' or 'one', not {moves!r}")
        self.moves = moves
        self.walker_groups = max(1, min(int(walker_groups), int(np.shape(x0)[0])))
        n = int(np.shape(x0)[1])
        self.groups = (np.zeros(n, dtype=np.int64) if groups is None
                       else np.asarray(groups, dtype=np.int64).reshape(n))
        self.n_groups = int(self.groups.max()) + 1 if n else 1
        self.last_group_acceptance: np.ndarray | None = None
        self._log_abs = log_abs
        self.comm = comm
        self.target = target_acceptance
        self.recentre = bool(recentre)
        if self.recentre:
            x0 = np.asarray(x0) - np.mean(x0, axis=1, keepdims=True)
        self.x = tf.Variable(x0, dtype=dtype, name="walkers")
        self.logp = tf.Variable(tf.zeros(x0.shape[0], dtype=dtype), name="logp")
        steps = np.broadcast_to(np.asarray(step, dtype=np.float64), (self.n_groups,)) \
            if np.ndim(step) else np.full(self.n_groups, float(step))
        if moves == "one":
            self.steps = tf.Variable(steps, dtype=dtype, name="steps")
            step = float(np.mean(steps))
        self.step = tf.Variable(float(step) if np.ndim(step) == 0 else float(np.mean(step)),
                                dtype=dtype, name="step")
        self.key = tf.constant(key, dtype=tf.int64)
        self._key_int = int(key) & 0xFFFFFFFFFFFFFFFF  # seeds the NumPy chunks (no device read)
        self.counter = tf.Variable(0, dtype=tf.int64, name="counter")
        # moves "all": the next chunk's random numbers are drawn in a background
        # thread while the current chunk's sweeps run (keyed by its stream position,
        # so a prefetch that does not match the next request is simply dropped)
        self.prefetch = True
        self._pending: dict = {}
        self.refresh()

    @property
    def walkers(self) -> int:
        return int(self.x.shape[0])

    @tf.function(jit_compile=True)
    def _refresh(self):
        self.logp.assign(2.0 * self._log_abs(self.x))

    def refresh(self):
        """Recompute log|psi|^2 of the walkers (after the parameters changed)."""
        self._refresh()

    # Random numbers are drawn for a chunk of sweeps at once (one Philox call
    # instead of one per sweep: about twice as fast for small walker batches),
    # at most this many numbers per chunk so memory stays bounded.
    CHUNK_NUMBERS = 1 << 21

    def _chunk_sweeps(self, n_sweeps: int) -> int:
        per_sweep = int(np.prod(self.x.shape)) + int(self.x.shape[0]) * (
            int(self.x.shape[1]) if self.moves == "one" else 1)
        return max(1, min(n_sweeps, self.CHUNK_NUMBERS // per_sweep))

    def _chain(self, n_measure: int, n_sweeps: int):
        if self.moves == "one":
            return self._chain_one(n_measure, n_sweeps)
        return self._chain_all(n_measure, n_sweeps)

    @tf.function(jit_compile=True)
    def _chain_one(self, n_measure: int, n_sweeps: int):
        """As :meth:`_chain_all` with one-particle moves: accepted moves per walker and
        particle, shape (W, N). A chunk's proposals (c, W, N, D) are scaled per particle
        by its group's step, its uniforms are (c, W, N)."""
        shape = self.x.shape
        n = int(shape[1])
        c = self._chunk_sweeps(n_sweeps)
        n_chunks = -(-n_sweeps // c)
        scale = tf.gather(self.steps.read_value(), tf.constant(self.groups))[None, None, :, None]
        ta = tf.TensorArray(self.x.dtype, size=n_measure, element_shape=shape)
        acc = tf.zeros(shape[:2], tf.int64)
        x, logp = self.x.read_value(), self.logp.read_value()
        for m in tf.range(n_measure):
            for j in tf.range(n_chunks):
                z, log_u = self._draw(m * n_sweeps + j * c, c, (n,))
                noise = scale * z

                def sweep(i, x, logp, acc, noise=noise, log_u=log_u):
                    def move(p, x, logp, acc):
                        onehot = tf.one_hot(p, n, dtype=x.dtype)
                        prop = x + noise[i] * onehot[None, :, None]  # particle p only
                        logp_new = 2.0 * self._log_abs(prop)
                        accept = tf.gather(log_u[i], p, axis=1) < logp_new - logp
                        x_new = tf.where(accept[:, None, None], prop, x)
                        hit = tf.cast(accept, tf.int64)[:, None] * tf.one_hot(p, n, dtype=tf.int64)
                        return p + 1, x_new, tf.where(accept, logp_new, logp), acc + hit

                    _, x, logp, acc = tf.while_loop(lambda p, *_: p < n, move, (0, x, logp, acc))
                    if self.recentre:
                        x = x - tf.reduce_mean(x, axis=1, keepdims=True)
                    return i + 1, x, logp, acc

                k = tf.minimum(c, n_sweeps - j * c)
                _, x, logp, acc = tf.while_loop(lambda i, *_: i < k, sweep, (0, x, logp, acc))
            ta = ta.write(m, x)
        self.x.assign(x)
        self.logp.assign(logp)
        self.counter.assign_add(tf.cast(n_measure * n_sweeps, tf.int64))
        return ta.stack(), acc

    def _draw(self, first, c: int, per_walker: tuple):
        """The random numbers of the chunk of ``c`` sweeps starting at sweep counter + first:
        standard-normal proposals (c, W, N, D) and log-uniforms (c, W, *per_walker), from
        the stateless stream seeded by (key, counter + first). Shared by both move kinds."""
        shape = tuple(self.x.shape)
        seeds = tf.random.experimental.stateless_split(
            tf.stack([self.key, self.counter + tf.cast(first, tf.int64)]), 2)
        z = tf.random.stateless_normal((c,) + shape, seeds[0], dtype=self.x.dtype)
        log_u = tf.math.log(tf.random.stateless_uniform((c, shape[0]) + tuple(per_walker),
                                                        seeds[1], dtype=self.x.dtype))
        return z, log_u

    def _chain_all(self, n_measure: int, n_sweeps: int):
        """n_measure blocks of n_sweeps sweeps; returns the positions after each
        block, shape (n_measure, W, N, D), and accepted moves per walker (W,).

        The sweeps run in XLA-compiled loops, a chunk of sweeps per call, on
        ``walker_groups`` slices of the walkers launched side by side (the
        executor runs them on separate cores; a walker's chain does not depend
        on the slicing). A chunk's random numbers come from NumPy
        (:meth:`_random_chunk`): its ziggurat normals cost a fraction of
        TensorFlow's float64 Box-Muller, which took half of a small network's sweep.
        """
        w = self.walkers
        per_sweep = int(np.prod(self.x.shape)) + w
        cap = max(1, self.CHUNK_NUMBERS // per_sweep)
        if n_sweeps <= cap:  # whole blocks per call
            per_call, inner = max(1, min(n_measure, cap // n_sweeps)), n_sweeps
        else:  # each block in equal calls of <= cap sweeps, the last possibly shorter
            per_call, inner = 1, -(-n_sweeps // -(-n_sweeps // cap))
        length = per_call * inner
        # the calls' (first sweep, sweeps) in order; their random numbers are drawn
        # one call ahead
        if n_sweeps <= cap:
            calls = [(first * n_sweeps, min(per_call, n_measure - first) * inner)
                     for first in range(0, n_measure, per_call)]
        else:
            calls = [(m * n_sweeps + done, min(inner, n_sweeps - done))
                     for m in range(n_measure) for done in range(0, n_sweeps, inner)]
        base = int(self.counter.numpy())
        x, logp = self.x.read_value(), self.logp.read_value()
        step = self.step.read_value()
        acc = tf.zeros([w], tf.int64)
        records = []
        for k, (first, count) in enumerate(calls):
            z, log_u = self._random_chunk(base + first, count, length)
            if self.prefetch:  # the next call's numbers, or the next sample()'s first
                nxt = (calls[k + 1] if k + 1 < len(calls)
                       else (n_measure * n_sweeps + calls[0][0], calls[0][1]))
                self._request(base + nxt[0], nxt[1], length)
            if n_sweeps <= cap:
                nb = count // inner
                rec, x, logp, a = self._grouped(x, logp, z, log_u, step, tf.constant(nb),
                                                tf.constant(inner), inner)
                records.append(rec[:nb])
            else:
                _, x, logp, a = self._grouped(x, logp, z, log_u, step, tf.constant(1),
                                              tf.constant(count), inner)
                if (first + count) % n_sweeps == 0:
                    records.append(x[None])
            acc += a
        self.x.assign(x)
        self.logp.assign(logp)
        self.counter.assign_add(n_measure * n_sweeps)
        return tf.concat(records, axis=0), acc

    def _request(self, start: int, count: int, length: int) -> None:
        """Start drawing the random numbers of sweeps start ... in the background."""
        spec = (start, count, length)
        if spec not in self._pending:
            self._pending = {k: v for k, v in self._pending.items() if k[0] >= start - count}
            self._pending[spec] = _random_pool().submit(
                numpy_chunk, self._key_int, start, count, length, tuple(self.x.shape),
                self.x.dtype.as_numpy_dtype)

    def _random_chunk(self, start: int, count: int, length: int):
        """Standard normals (length, W, N, D) and log-uniforms (length, W) for the sweeps
        start ... start + count - 1 of this rank's stream (rows beyond count are zero: a
        call's arrays keep one shape, so its loop compiles once): :func:`numpy_chunk`,
        taken from the background draw when one was requested. The stream is a function
        of the sweep counter, so checkpoints stay exact."""
        fut = self._pending.pop((start, count, length), None)
        if fut is not None:
            z, log_u = fut.result()
        else:
            z, log_u = numpy_chunk(self._key_int, start, count, length, tuple(self.x.shape),
                                   self.x.dtype.as_numpy_dtype)
        return tf.constant(z), tf.constant(log_u)

    @property
    def group_bounds(self) -> tuple:
        """(start, stop) of each walker group, in walker order."""
        edges = np.linspace(0, self.walkers, self.walker_groups + 1).round().astype(int)
        return tuple((int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]))

    def _grouped(self, x, logp, z, log_u, step, n_blocks, n_inner, every: int):
        if self.walker_groups == 1:
            return self._sweeps(x, logp, z, log_u, step, n_blocks, n_inner, every)
        return self._sweeps_side_by_side(x, logp, z, log_u, step, n_blocks, n_inner, every,
                                         self.group_bounds)

    @tf.function
    def _sweeps_side_by_side(self, x, logp, z, log_u, step, n_blocks, n_inner, every: int,
                             bounds: tuple):
        """:meth:`_sweeps` on each walker group: independent compiled launches that
        the executor's inter-op threads run at the same time."""
        outs = [self._sweeps(x[a:b], logp[a:b], z[:, a:b], log_u[:, a:b], step, n_blocks,
                             n_inner, every) for a, b in bounds]
        return (tf.concat([o[0] for o in outs], axis=1), tf.concat([o[1] for o in outs], axis=0),
                tf.concat([o[2] for o in outs], axis=0), tf.concat([o[3] for o in outs], axis=0))

    @tf.function(jit_compile=True)
    def _sweeps(self, x, logp, z, log_u, step, n_blocks, n_inner, every: int):
        """n_blocks blocks of n_inner sweeps (sweep i of block b uses row b * every + i of
        z and log_u); the positions after each block (length // every, W, N, D; rows
        from n_blocks on are unused), the final x and logp and accepted moves (W,)."""
        shape = x.shape
        records = tf.TensorArray(x.dtype, size=z.shape[0] // every, element_shape=shape)
        acc = tf.zeros(shape[:1], tf.int64)
        for b in tf.range(n_blocks):
            def sweep(i, x, logp, acc, b=b):
                prop = x + step * z[b * every + i]
                logp_new = 2.0 * self._log_abs(prop)
                accept = log_u[b * every + i] < logp_new - logp  # NaN proposals are rejected
                x_new = tf.where(accept[:, None, None], prop, x)
                if self.recentre:  # |psi|^2 is translation invariant: logp stays valid
                    x_new = x_new - tf.reduce_mean(x_new, axis=1, keepdims=True)
                return (i + 1, x_new,
                        tf.where(accept, logp_new, logp), acc + tf.cast(accept, tf.int64))

            _, x, logp, acc = tf.while_loop(lambda i, *_: i < n_inner, sweep, (0, x, logp, acc))
            records = records.write(b, x)
        return records.stack(), x, logp, acc

    def _global_acceptance(self, accepted: np.ndarray, sweeps: int) -> float:
        if self.moves == "one":  # accepted (W, N): per group, one allreduce
            g = self.n_groups
            per = np.bincount(self.groups, weights=accepted.sum(axis=0).astype(np.float64),
                              minlength=g)
            tries = (np.bincount(self.groups, minlength=g).astype(np.float64)
                     * accepted.shape[0] * sweeps)
            tot = self.comm.allreduce(np.concatenate([per, tries]))
            self.last_group_acceptance = tot[:g] / tot[g:]
            return float(tot[:g].sum() / tot[g:].sum())
        tot = self.comm.allreduce(np.array([float(accepted.sum()), float(accepted.size * sweeps)]))
        return float(tot[0] / tot[1])

    def adapt(self, acceptance: float) -> None:
        """Scale the step width toward the target acceptance (same on every rank).

        Moves "one": every group's step from that group's own acceptance in the last
        :meth:`sample` or thermalization block (``acceptance`` is then not used).
        """
        if self.moves == "one" and self.last_group_acceptance is not None:
            factor = np.clip(self.last_group_acceptance / self.target, 0.5, 2.0)
            steps = self.steps.numpy() * factor
            self.steps.assign(steps)
            self.step.assign(float(np.mean(steps)))
            return
        factor = float(np.clip(acceptance / self.target, 0.5, 2.0))
        self.step.assign(self.step * factor)

    def proposal_step(self):
        """The step to start another sampler of the same kind from: a float, or the
        per-group steps (moves "one")."""
        return self.steps.numpy().copy() if self.moves == "one" else float(self.step.numpy())

    def thermalize(self, sweeps: int, adapt: bool = True, block: int = 20) -> float:
        """Run ``sweeps`` sweeps without measuring, adapting the step every block."""
        acceptance = float("nan")
        done = 0
        while done < sweeps:
            n = min(block, sweeps - done)
            _, acc = self._chain(1, n)
            acceptance = self._global_acceptance(acc.numpy(), n)
            if adapt:
                self.adapt(acceptance)
            done += n
        return acceptance

    def sample(self, n_measure: int, sweeps_per_sample: int,
               as_tensor: bool = False) -> tuple[np.ndarray, float]:
        """Measurements: n_measure configurations per walker, each after
        ``sweeps_per_sample`` sweeps.

        Returns:
          (x, acceptance): x of shape (n_measure, W, N, D) (a NumPy array, or with
          ``as_tensor`` the ``tf.Tensor`` where the chain left it: the device) and
          the global acceptance rate.
        """
        xs, acc = self._chain(n_measure, sweeps_per_sample)
        acceptance = self._global_acceptance(acc.numpy(), n_measure * sweeps_per_sample)
        return (xs if as_tensor else xs.numpy()), acceptance

    # State for snapshots and checkpoints: everything that makes the next sweep
    # reproducible. Walkers and stream position differ between ranks.
    def state(self) -> dict:
        out = {"x": PerRank(self.x.numpy().copy()), "counter": PerRank(np.int64(self.counter.numpy())),
               "step": float(self.step.numpy())}
        if self.moves == "one":
            out["steps"] = self.steps.numpy().copy()
        return out

    def set_state(self, state: dict) -> None:
        """Back to a :meth:`state` of this rank (walkers of the same shape)."""
        self.x.assign(local(state["x"]))
        self.step.assign(float(state["step"]))
        if self.moves == "one":  # older states have no per-group steps: all start at step
            steps = state.get("steps")
            steps = (np.full(self.n_groups, float(state["step"])) if steps is None
                     else np.asarray(local(steps), dtype=np.float64).reshape(self.n_groups))
            self.steps.assign(steps)
        self.counter.assign(int(local(state["counter"])))
        self.refresh()


def walkers_for_rank(state: dict, comm) -> tuple[np.ndarray, int, str]:
    """This rank's walkers and stream position from a sampler :meth:`~MetropolisSampler.state`.

    A state restored from a checkpoint holds every rank's walkers
    (:class:`~distvmc.state.AllRanks`, shape (R, W, N, D)). With R == ranks each
    rank gets back exactly its own. Otherwise the R*W walkers are dealt out in
    rank order, ceil(R W / ranks) per rank (fewer ranks concatenate, more ranks
    split); when that does not divide, the missing walkers are copies of others
    (the caller re-thermalizes). Every rank's stream continues from the largest
    counter, never reusing random numbers.

    Returns (x (W', N, D), counter, note): note is "" for an exact restore, else
    a description of the redistribution ("copies" in it when walkers were copied).
    """
    x, counter = state["x"], state["counter"]
    if not isinstance(x, AllRanks) or x.ranks == comm.size:
        return np.asarray(local(x, comm)), int(local(counter, comm)), ""
    walkers = np.asarray(x.value).reshape((-1,) + np.shape(x.value)[2:])
    g = walkers.shape[0]
    per = -(-g // comm.size)
    missing = per * comm.size - g
    dealt = np.concatenate([walkers, walkers[np.arange(missing) % g]]) if missing else walkers
    verb = "concatenated" if comm.size < x.ranks else "split"
    note = (f"checkpoint of {x.ranks} rank(s) resumed on {comm.size}: its {g} walkers {verb} "
            f"into {per} per rank, random streams continue from sweep {int(np.max(counter.value))}")
    if missing:
        note += f"; {missing} walker(s) added as copies of others"
    return dealt[comm.rank * per:(comm.rank + 1) * per], int(np.max(counter.value)), note
