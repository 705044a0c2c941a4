"""The Python API: what ``distvmc run`` does, callable from a script or a notebook.

    import distvmc
    res = distvmc.run("configs/hydrogen.yaml", {"optimizer.iterations": 100})
    print(res.energy, res.energy_err, res.run_dir)
    res.history[-1]["energy"]               # per-iteration records
    res.wavefunction(x)                     # (sign, log|psi|) for x of shape (W, N, D)
    again = distvmc.load(res.run_dir)       # a finished run from its directory

A potential can be a Python function instead of a ``module:function`` string
(``distvmc.run(cfg, potential=fn)``, fn: positions (W, N, D) -> energies (W,),
TensorFlow operations), and the ansatz a builder of your own
(``wavefunction=lambda cfg, system, seed: ...``) or a factor class registered
with :func:`distvmc.wavefunctions.register_factor`. The command line calls
:func:`run` too, so the same config and seed give bitwise the same result.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from distvmc import __version__
from distvmc import config as config_mod
from distvmc.config import ConfigError
from distvmc.lazytf import import_tensorflow_quietly


@dataclasses.dataclass
class Result:
    """A finished run: its directory, summary, history and (state 0's) wavefunction."""

    run_dir: str
    summary: dict
    history: list
    wavefunction: object = None
    config: object = None
    job: object = None

    @property
    def energy(self) -> float:
        return self.summary["energy"]

    @property
    def energy_err(self) -> float:
        return self.summary["energy_err"]

    @property
    def states(self) -> list:
        """Per-state rows (energy, error, ...) of a grid or excited-state run; [] otherwise."""
        return self.summary.get("energies", [])

    def __repr__(self):
        return (f"Result(energy={self.energy!r}, energy_err={self.energy_err!r}, "
                f"run_dir={self.run_dir!r})")


def _overrides(overrides) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        import yaml

        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in overrides.items()]
    return list(overrides)


def resolve(config=None, overrides=None, out=None, resume=None):
    """(cfg, config_dir, resume) from a path, a raw dict, a Section or None (the default job)."""
    from distvmc.hooks import check_min_free

    ov = _overrides(overrides)
    config_path = config if isinstance(config, (str, os.PathLike)) else None
    if resume is not None:
        from distvmc.resume import prepare_resume

        if out is not None and os.path.abspath(out) != os.path.abspath(resume):
            raise ConfigError(f"--out {out!r} with --resume {resume!r}: a resumed run "
                              "stays in its run directory")
        res = prepare_resume(str(resume), str(config_path) if config_path else None, ov)
        cfg = res.cfg
    else:
        res = None
        if config is None or config_path is not None:
            cfg = config_mod.load(str(config_path) if config_path else None, ov)
        else:
            raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            cfg = config_mod.validate(config_mod.apply_overrides(raw, ov))
        if out is not None:
            cfg = config_mod.validate(config_mod.apply_overrides(cfg.to_dict(),
                                                                 [f"output.dir={out}"]))
    config_dir = os.path.dirname(os.path.abspath(config_path)) if config_path else None
    check_min_free(cfg.output.dir, cfg.checkpoint.min_free_mb)  # before TensorFlow
    return cfg, config_dir, res


def make_system(cfg, config_dir=None, potential=None):
    """The config's :class:`~distvmc.systems.System`; a Python ``potential`` function
    (positions (W, N, D) -> energies (W,)) replaces the config's potential."""
    from distvmc.systems import build_system

    system = build_system(cfg, config_dir)
    if potential is not None:
        import numpy as np
        import tensorflow as tf

        x = tf.constant(np.random.default_rng(0).standard_normal(
            (3, system.particles, system.dim)) + 0.1, dtype=tf.float64)
        shape = tuple(np.shape(potential(x)))
        if shape != (3,):
            raise ConfigError(f"potential {getattr(potential, '__name__', potential)!r} returned "
                              f"shape {shape} for 3 walkers; it must return one energy per "
                              "walker, shape (walkers,)")
        system.potential = potential
    return system


def run(config=None, overrides=None, *, out=None, resume=None, potential=None,
        wavefunction=None, comm=None, log=None) -> Result:
    """Optimize and evaluate: the lowest ``excited.states`` states of a config.

    Args:
      config: a YAML path, a raw config dict, a validated Section, or None (the bundled
        hydrogen job).
      overrides: {"sampler.walkers": 2048, ...} or ["sampler.walkers=2048", ...].
      out: run directory (default runs/<name>-<timestamp>).
      resume: a run directory to continue from its latest valid checkpoint.
      potential: a Python function (W, N, D) -> (W,) used instead of the config's potential.
      wavefunction: a builder (cfg, system, seed) -> Wavefunction instead of the config's factors.
      comm: a communicator (default: from ``distributed.backend``).
      log: print-like function (default: print on rank 0).

    Raises :class:`distvmc.preemption.Preempted` after SIGTERM/SIGUSR1 (with the
    signal handlers of :func:`distvmc.preemption.install`; the checkpoint is written),
    :class:`distvmc.objectives.NonFiniteEnergyError` when recovery gives up,
    :class:`ConfigError` for a bad config.
    """
    cfg, config_dir, res = resolve(config, overrides, out, resume)
    import_tensorflow_quietly()
    from distvmc import hooks, io, outputs
    from distvmc.comm import make_communicator
    from distvmc.job import Job

    comm = comm or make_communicator(cfg.distributed.backend, require_gpu=cfg.distributed.require_gpu)
    say = log or print
    log = say if comm.is_root else (lambda *a, **k: None)
    run_dir = io.make_run_dir(cfg.output.dir, cfg.name) if comm.is_root else None
    run_dir = comm.bcast_object(run_dir)
    system = make_system(cfg, config_dir, potential)
    job = Job(cfg, comm, system, log, wavefunction)
    t0 = time.perf_counter()
    if res is not None:
        for message in res.messages:
            log(message)
        if res.changes:
            log("config changed on resume: " + ", ".join(f"{k} {a!r} -> {b!r}"
                                                          for k, a, b in res.changes))
        job.history[:] = res.checkpoint["history"]
        note = job.set_state(res.checkpoint["state"])
        log(f"resumed from {res.checkpoint['path']} at iteration {job.total_iterations}"
            + (f"; {note}" if note else f" on the same {comm.size} rank(s): walkers and "
               "random streams restored exactly"))
    else:
        job.start_state(0)
    if comm.is_root:
        n_p = job.wf.n_parameters
        walkers = cfg.sampler.walkers * comm.size
        hooks.check_free_space(run_dir, cfg, hooks.estimate_bytes(cfg, walkers, system.particles,
                                                                  system.dim, n_p))
        io.write_config(run_dir, cfg.to_dict())
    history = io.History(run_dir, outputs.history_fields(job)) if comm.is_root else None
    if history is not None and job.history:
        history.rewrite(job.history)  # the checkpoint's history, not rows written after it
    mode = (f"integrator grid, {cfg.excited.states} state(s)" if cfg.integrator == "grid"
            else f"{cfg.sampler.walkers * comm.size} walkers on {comm.size} rank(s) ({comm.name})"
            + (f", {cfg.excited.states} states" if cfg.excited.states > 1 else ""))
    log(f"distvmc {__version__}: {cfg.name}: {system.particles} particle(s) in {system.dim}D, "
        f"{job.wf.n_parameters} parameters, {mode}, optimizer {cfg.optimizer.type}; "
        f"run directory {run_dir}")
    board = None
    if cfg.output.tensorboard and comm.is_root:
        from distvmc.tensorboard import Scalars

        board = Scalars(os.path.join(run_dir, "tensorboard"))
    ckpt = hooks.Checkpointer(job, run_dir, log)
    if res is not None:
        ckpt.last_path = res.checkpoint["path"]

    def hooks_for(j):
        out = [hooks.HistoryFile(history, j)] if history is not None else []
        if board is not None:
            out.append(hooks.Board(board, j))
        return out + [ckpt]  # collective, last: may raise Preempted

    try:
        job.run(hooks_for, between_blocks=ckpt.during_evaluation)
    finally:
        if board is not None:
            board.close()
    wall = time.perf_counter() - t0
    digest = parameters_agree(job, comm)
    if comm.size > 1:
        log(f"parameters bitwise equal on all {comm.size} ranks (sha256 {digest[:16]})")
    w = job.walkers_per_rank
    meta = {"ranks": comm.size, "backend": comm.name, "walkers_global": w * comm.size,
            "walkers_per_rank": w, "wall_s": wall,
            "train_s": sum(f.train_s for f in job.found),
            "resumed_at": res.checkpoint["meta"]["iteration"] if res is not None else None,
            "parameters_sha256": digest}
    if not job.multi:
        n_train = meta["walkers_global"] * cfg.sampler.samples_per_walker * job.found[0].iterations
        meta["samples_per_s"] = n_train / meta["train_s"] if meta["train_s"] > 0 else float("nan")
    summary = outputs.write(job, run_dir, meta) if comm.is_root else None
    summary = comm.bcast_object(summary)
    outputs.report(job, summary, log)
    ref = cfg.reference_energy
    diff = f" (reference {ref}, difference {summary['energy'] - ref:+.2e})" if ref is not None else ""
    err = f" ± {summary['energy_err']:.7f}" if cfg.integrator != "grid" else \
        f" ± {summary['energy_err']:.1e} (bound from the energy variances)"
    e_unit, l_unit = outputs.units(cfg)
    unit = f" {e_unit}" if e_unit else ""
    radius = ""
    obs = summary.get("observables") or {}
    if cfg.sampler.recentre and "rms_radius" in obs and cfg.integrator != "grid":
        rr = obs["rms_radius"]
        who = "nucleon" if cfg.system.units == "nuclear" else "particle"
        radius = (f"; point-{who} rms radius about the centre of mass {rr['mean']:.4f} ± "
                  f"{rr['error']:.4f}{' ' + l_unit if l_unit else ''}")
    log(f"E = {summary['energy']:.7f}{err}{unit}{diff}{radius}"
        + (f"; variance {summary['variance']:.3e}" if summary.get("variance") is not None else "")
        + f"; wall {wall:.1f} s; results in {run_dir}")
    wf = job.found[0].wf if job.found[0].wf is not None else job.wf
    return Result(run_dir, summary, list(job.history), wf, cfg, job)


def parameters_agree(job, comm) -> str:
    """sha256 of every found state's parameters, checked equal on every rank.

    Ranks apply the same broadcast update, so their parameters must stay bitwise
    equal; a difference means a rank's result cannot be trusted (a silent wrong
    answer), so it raises instead. Returns the hex digest (rank 0's, = everyone's)."""
    import hashlib

    h = hashlib.sha256()
    for f in job.found:
        if f.wf is not None:
            h.update(np.ascontiguousarray(f.wf.get_flat(), dtype=np.float64).tobytes())
    digest = h.hexdigest()
    if comm.size > 1:
        mine = np.frombuffer(bytes.fromhex(digest), dtype=np.uint8).astype(np.float64)
        every = comm.allgather(mine[None, :])
        bad = [r for r in range(comm.size) if not np.array_equal(every[r], every[0])]
        if bad:
            raise RuntimeError(f"parameters differ between ranks after training (ranks {bad} "
                               f"against rank 0): the ranks' updates diverged; do not trust "
                               f"this run")
    return digest


def load(run_dir: str, potential=None, wavefunction=None) -> Result:
    """A finished run from its directory: summary, history, config and state 0's
    wavefunction with its trained parameters (pass ``potential``/``wavefunction`` again
    when the run was given Python objects)."""
    import json

    from distvmc import io

    cfg_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isdir(run_dir):
        raise ConfigError(f"run directory {run_dir!r} not found")
    if not os.path.exists(cfg_path):
        raise ConfigError(f"{cfg_path!r} not found: not a distvmc run directory")
    cfg = config_mod.load(cfg_path)
    params = os.path.join(run_dir, "params.h5")
    if not os.path.exists(params):
        raise ConfigError(f"{params!r} not found: the run did not finish")
    import_tensorflow_quietly()
    from distvmc.wavefunctions import build_wavefunction

    system = make_system(cfg, None, potential)
    wf = (wavefunction or build_wavefunction)(cfg, system, cfg.seed)
    io.load_parameters(params, wf)
    summary = {}
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    return Result(run_dir, summary, io.read_history(run_dir), wf, cfg)


def evaluate(run_dir: str, samples: int | None = None, seed: int | None = None, comm=None,
             potential=None, log=None) -> dict:
    """Sample a finished run's (state 0) wavefunction with frozen parameters; writes
    observables.json and replaces results.h5's /evaluation. ``samples``: global count."""
    if samples is not None and samples < 1:
        raise ConfigError(f"--samples = {samples}: must be an integer >= 1")
    loaded = load(run_dir, potential)
    from distvmc import io, outputs, results
    from distvmc.comm import make_communicator
    from distvmc.objectives import MonteCarloEnergy

    cfg = loaded.config
    if seed is not None:
        cfg = config_mod.validate(config_mod.apply_overrides(cfg.to_dict(), [f"seed={seed}"]))
    comm = comm or make_communicator(cfg.distributed.backend)
    say = log or print
    log = say if comm.is_root else (lambda *a, **k: None)
    objective = MonteCarloEnergy(loaded.wavefunction, make_system(cfg, None, potential),
                                 cfg, comm, cfg.seed, log)
    result = objective.evaluate(samples=samples)
    if comm.is_root:
        io.write_json(os.path.join(run_dir, "observables.json"), outputs.observables_record(result))
        if os.path.exists(os.path.join(run_dir, "results.h5")):
            results.replace_evaluation(os.path.join(run_dir, "results.h5"), result)
    return result

