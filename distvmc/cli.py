"""Command line: ``distvmc run``, ``distvmc evaluate``, ``distvmc plot``, ``distvmc config``.

Configs are validated before TensorFlow is imported, so a bad key costs a
fraction of a second and prints one line (exit code 2).

Exit codes: 0 done; 1 failure; 2 bad config or command line (also: nothing to
resume, a refused config change on resume, too little disk space); 75
(:data:`distvmc.preemption.EXIT_PREEMPTED`) stopped by SIGTERM/SIGUSR1 after
writing a checkpoint: continue with ``distvmc run --resume RUN_DIR``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from distvmc import __version__
from distvmc import config as config_mod
from distvmc.config import ConfigError

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distvmc", description="Variational Monte Carlo with "
                                "neural-network wavefunctions.")
    p.add_argument("--version", action="version", version=f"distvmc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="optimize a wavefunction and evaluate it")
    r.add_argument("config", nargs="?", help="YAML config (default: the bundled hydrogen job)")
    r.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sampler.walkers=2048")
    r.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    r.add_argument("--resume", metavar="RUN_DIR",
                   help="continue RUN_DIR from its latest valid checkpoint (a CONFIG or "
                        "overrides may change only optimizer.iterations, output.*, "
                        "evaluation.*, checkpoint.*, distributed.backend, recovery.max_rewinds)")

    e = sub.add_parser("evaluate", help="sample a finished run's wavefunction; write observables.json")
    e.add_argument("run_dir")
    e.add_argument("--samples", type=int, help="samples per rank (default: evaluation.samples)")
    e.add_argument("--seed", type=int, help="seed for the evaluation stream (default: the run's)")

    pl = sub.add_parser("plot", help="PNG figures of a run (energy, variance, acceptance, "
                        "radial density); needs matplotlib")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="directory for the PNGs (default RUN_DIR/plots)")

    c = sub.add_parser("config", help="print the resolved config (validates it)")
    c.add_argument("config", nargs="?")
    c.add_argument("overrides", nargs="*")
    c.add_argument("--reference", action="store_true",
                   help="print the Markdown reference of every key instead")
    return p


def _split_config_arg(args):
    """``distvmc run key=value`` (no file) puts the first override in ``config``."""
    if args.config is not None and "=" in args.config and not os.path.exists(args.config):
        args.overrides = [args.config] + list(args.overrides)
        args.config = None
    return args


def cmd_run(args) -> int:
    from distvmc import preemption

    preemption.install()  # SIGTERM/SIGUSR1: checkpoint after the current iteration, exit 75
    resume = None
    if args.resume is not None:
        from distvmc import checkpoint

        if args.out is not None and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise ConfigError(f"--out {args.out!r} with --resume {args.resume!r}: a resumed run "
                              "stays in its run directory")
        resume = checkpoint.prepare_resume(args.resume, args.config, args.overrides)
        cfg = resume.cfg
        config_dir = (os.path.dirname(os.path.abspath(args.config)) if args.config
                      else resume.config_dir)
    else:
        cfg = config_mod.load(args.config, args.overrides)
        if args.out is not None:
            cfg = config_mod.validate(config_mod.apply_overrides(cfg.to_dict(),
                                                                 [f"output.dir={args.out}"]))
        config_dir = os.path.dirname(os.path.abspath(args.config)) if args.config else None
    from distvmc import checkpoint

    checkpoint.check_min_free(cfg.output.dir, cfg.checkpoint.min_free_mb)  # before TensorFlow
    from distvmc import io, results
    from distvmc.comm import make_communicator
    from distvmc.driver import VMC, NonFiniteEnergyError

    comm = make_communicator(cfg.distributed.backend)
    run_dir = io.make_run_dir(cfg.output.dir, cfg.name) if comm.is_root else None
    run_dir = comm.bcast_object(run_dir)
    if cfg.integrator == "grid" or cfg.excited.states > 1:  # distvmc.excited: grid, excited states
        if resume is not None:
            raise ConfigError("--resume: grid-mode and excited-state runs write no checkpoints")
        from distvmc.excited import run_states

        return run_states(cfg, comm, config_dir, run_dir)
    vmc = VMC(cfg, comm, config_dir)
    log = vmc.log
    if comm.is_root:
        checkpoint.check_free_space(run_dir, vmc)
    t0 = time.perf_counter()
    if resume is not None:
        for message in resume.messages:
            log(message)
        if resume.changes:
            log("config changed on resume: " + ", ".join(f"{k} {a!r} -> {b!r}"
                                                          for k, a, b in resume.changes))
        checkpoint.restore(vmc, resume.state if comm.is_root else None, log)
    log(f"distvmc {__version__}: {cfg.name}: {vmc.system.particles} particle(s) in "
        f"{vmc.system.dim}D, {vmc.wf.n_parameters} parameters, "
        f"{vmc.global_walkers} walkers on {comm.size} rank(s) ({comm.name}), "
        f"optimizer {cfg.optimizer.type}; run directory {run_dir}")
    start_iteration = vmc.iteration
    history = io.History(run_dir) if comm.is_root else None
    if history is not None and resume is not None:
        history.rewrite(vmc.history)  # the checkpoint's history, not rows written after it
    if comm.is_root:
        io.write_config(run_dir, cfg.to_dict())
    board = None
    if cfg.output.tensorboard and comm.is_root:
        from distvmc.tensorboard import Scalars

        board = Scalars(os.path.join(run_dir, "tensorboard"))
    ckpt = checkpoint.Checkpointer(vmc, run_dir, config_dir, log)
    if resume is not None:
        ckpt.last_path = resume.state["path"]
    vmc.on_evaluation_block = ckpt.during_evaluation

    def on_iteration(rec):
        if history is not None:
            if "rewind" in rec:
                history.rewrite(vmc.history)
            else:
                history.append(rec)
        if board is not None:
            shift = (cfg.optimizer.shift * vmc.optimizer.shift_scale
                     if cfg.optimizer.type == "sr" else None)
            board.write(rec, shift, len(vmc.rewinds))
        ckpt.after_iteration(rec)  # collective; raises Preempted after a signal

    try:
        vmc.train(on_iteration=on_iteration)
        train_s = time.perf_counter() - t0
        log(f"evaluating with {cfg.evaluation.samples * comm.size} fresh samples ...")
        result = vmc.evaluate()
    except preemption.Preempted:
        return preemption.EXIT_PREEMPTED
    except NonFiniteEnergyError as e:
        # Every rank raises it at the same iteration (the count of non-finite
        # energies is global), so no rank waits for another: one line, exit 1.
        if comm.is_root:
            print(f"distvmc: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if board is not None:
            board.close()
    wall = time.perf_counter() - t0
    n_samples_train = (vmc.global_walkers * cfg.sampler.samples_per_walker
                       * (vmc.iteration - start_iteration))
    summary = {
        "name": cfg.name,
        "energy": result["energy"], "energy_err": result["energy_err"],
        "variance": result["variance"], "tau": result["tau"], "rhat": result["rhat"],
        "acceptance": result["acceptance"],
        "reference_energy": cfg.reference_energy,
        "iterations": vmc.iteration,
        "parameters": vmc.wf.n_parameters,
        "ranks": comm.size, "backend": comm.name,
        "walkers_per_rank": vmc.sampler.walkers, "walkers_global": vmc.global_walkers,
        "eval_samples": result["samples"],
        "train_s": train_s, "eval_s": result["wall_s"], "wall_s": wall,
        "samples_per_s": n_samples_train / train_s if train_s > 0 else float("nan"),
        "observables": result["observables"],
        "rewinds": vmc.rewinds,
        "resumed_at": start_iteration if resume is not None else None,
        "version": __version__,
    }
    if comm.is_root:
        import tensorflow as tf

        io.save_parameters(os.path.join(run_dir, "params.h5"), vmc.wf)
        io.write_json(os.path.join(run_dir, "summary.json"), summary)
        io.write_json(os.path.join(run_dir, "observables.json"), _observables(result))
        results.write(os.path.join(run_dir, "results.h5"), cfg.to_dict(), vmc.history, result, {
            "name": cfg.name, "tensorflow_version": tf.__version__, "ranks": comm.size,
            "backend": comm.name, "iterations": vmc.iteration,
            "parameters": vmc.wf.n_parameters, "walkers_global": vmc.global_walkers,
            "rewinds": len(vmc.rewinds)})
    ref = cfg.reference_energy
    diff = f" (reference {ref}, difference {result['energy'] - ref:+.2e})" if ref is not None else ""
    log(f"E = {result['energy']:.7f} ± {result['energy_err']:.7f}{diff}; "
        f"variance {result['variance']:.3e}; wall {wall:.1f} s; results in {run_dir}")
    return 0


def _observables(result: dict) -> dict:
    return {"energy": {k: result[k] for k in ("energy", "energy_err", "variance", "tau", "rhat")},
            **result["observables"], "radial_density": result["radial_density"],
            "samples": result["samples"]}


def cmd_evaluate(args) -> int:
    from distvmc import io

    cfg_path = os.path.join(args.run_dir, "config.yaml")
    if not os.path.isdir(args.run_dir):
        raise ConfigError(f"run directory {args.run_dir!r} not found")
    if not os.path.exists(cfg_path):
        raise ConfigError(f"{cfg_path!r} not found: not a distvmc run directory")
    overrides = [f"seed={args.seed}"] if args.seed is not None else []
    cfg = config_mod.load(cfg_path, overrides)
    if args.samples is not None and args.samples < 1:
        raise ConfigError(f"--samples = {args.samples}: must be an integer >= 1")
    params = os.path.join(args.run_dir, "params.h5")
    if not os.path.exists(params):
        raise ConfigError(f"{params!r} not found: the run did not finish")
    from distvmc.comm import make_communicator
    from distvmc.driver import VMC

    comm = make_communicator(cfg.distributed.backend)
    vmc = VMC(cfg, comm, args.run_dir)
    io.load_parameters(params, vmc.wf)
    vmc.sampler.refresh()
    result = vmc.evaluate(samples=args.samples)
    if comm.is_root:
        io.write_json(os.path.join(args.run_dir, "observables.json"), _observables(result))
        if os.path.exists(os.path.join(args.run_dir, "results.h5")):
            from distvmc import results

            results.replace_evaluation(os.path.join(args.run_dir, "results.h5"), result)
    o = result["observables"]
    vmc.log(f"E = {result['energy']:.7f} ± {result['energy_err']:.7f}  "
            f"<r> = {o['r']['mean']:.5f} ± {o['r']['error']:.5f}  "
            f"<r^2> = {o['r2']['mean']:.5f} ± {o['r2']['error']:.5f}  "
            f"<1/r> = {o['inv_r']['mean']:.5f} ± {o['inv_r']['error']:.5f}; "
            f"wrote {os.path.join(args.run_dir, 'observables.json')}")
    return 0


def cmd_plot(args) -> int:
    from distvmc.plot import plot_run

    paths = plot_run(args.run_dir, args.out)
    print("distvmc plot: wrote " + ", ".join(paths))
    return 0


def cmd_config(args) -> int:
    import yaml

    if args.reference:
        print("| key | default | meaning |\n|---|---|---|")
        print("\n".join(config_mod.reference()))
        return 0
    cfg = config_mod.load(args.config, args.overrides)
    sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return 0


def main(argv=None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options: ``run CONFIG --out DIR key=value``.
    unknown = [a for a in extra if a.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error("unrecognized arguments: " + " ".join(unknown))
    if extra:
        args.overrides = list(args.overrides) + extra
    if hasattr(args, "config"):
        args = _split_config_arg(args)
    try:
        return {"run": cmd_run, "evaluate": cmd_evaluate, "plot": cmd_plot,
                "config": cmd_config}[args.command](args)
    except ConfigError as e:
        print(f"distvmc: error: {e}", file=sys.stderr)
        _end_other_ranks(EXIT_CONFIG)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("distvmc: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # On several ranks: "distvmc: rank R failed: Type: message", then end
        # every rank, so none stays blocked in a collective. One rank: the usual traceback.
        from distvmc import comm as comm_mod

        c = comm_mod.current()
        if c is None or c.size == 1:
            raise
        comm_mod.fail(e, c, EXIT_FAILURE)
        return EXIT_FAILURE


def _end_other_ranks(code: int) -> None:
    """After an error on a multi-rank job, end every rank (they may wait for this one)."""
    from distvmc import comm as comm_mod

    c = comm_mod.current()
    if c is not None and c.size > 1:
        c.abort(code)


if __name__ == "__main__":
    sys.exit(main())
