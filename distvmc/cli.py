"""Command line: ``distvmc run``, ``distvmc evaluate``, ``distvmc plot``, ``distvmc config``,
``distvmc doctor`` (:mod:`distvmc.doctor`).

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
    e.add_argument("--samples", type=int, help="samples in total, over all ranks "
                   "(default: evaluation.samples)")
    e.add_argument("--seed", type=int, help="seed for the evaluation stream (default: the run's)")

    pl = sub.add_parser("plot", help="PNG figures of a run (energy, variance, acceptance, "
                        "radial density); needs matplotlib")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="directory for the PNGs (default RUN_DIR/plots)")

    d = sub.add_parser("doctor", help="check an install: versions, devices, collectives, SR "
                       "solvers, two tiny exact-physics runs; ends with OK or what to fix")
    d.add_argument("--backend", default="auto", choices=["auto", "single", "mpi", "horovod"])
    d.add_argument("--no-physics", action="store_true", help="skip the two tiny runs")

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
    from distvmc import api

    try:
        api.run(args.config, args.overrides, out=args.out, resume=args.resume)
    except preemption.Preempted:
        return preemption.EXIT_PREEMPTED
    except ConfigError:
        raise
    except Exception as e:
        from distvmc.objectives import NonFiniteEnergyError  # not before: it imports TensorFlow

        if not isinstance(e, NonFiniteEnergyError):
            raise
        # Every rank raises it at the same iteration (the count of non-finite
        # energies is global), so no rank waits for another: one line, exit 1.
        from distvmc import comm as comm_mod

        c = comm_mod.current()
        if c is None or c.is_root:
            print(f"distvmc: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def cmd_evaluate(args) -> int:
    from distvmc import api

    result = api.evaluate(args.run_dir, samples=args.samples, seed=args.seed)
    o = result["observables"]
    from distvmc import comm as comm_mod

    c = comm_mod.current()
    if c is None or c.is_root:
        print(f"E = {result['energy']:.7f} ± {result['energy_err']:.7f}  "
              f"<r> = {o['r']['mean']:.5f} ± {o['r']['error']:.5f}  "
              f"<r^2> = {o['r2']['mean']:.5f} ± {o['r2']['error']:.5f}  "
              f"<1/r> = {o['inv_r']['mean']:.5f} ± {o['inv_r']['error']:.5f} "
              f"({result['samples']} samples); "
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
        if args.command == "doctor":
            from distvmc import doctor

            return doctor.main(args)
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
