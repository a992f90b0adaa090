"""Entry point: run a batch-size × learning-rate study locally or as one Slurm job.

    python -m orchestrator.launch --cluster local --budget smoke      # a first try, < 1 min
    python -m orchestrator.launch --cluster local                     # the built-in study
    python -m orchestrator.launch --cluster slurm --nodes 2 --time 08:00:00 --follow
    python -m orchestrator.launch --study studies/nqm.toml --set search.seeds=3 --dry-run

Exit codes: 0 success; 2 bad input (one line naming the key or flag; nothing started,
submitted or written); 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.errors import SweepInterrupted, UsageError

SLURM_FLAGS = ("nodes", "gpus_per_node", "cpus_per_node", "partition", "account", "time")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m orchestrator.launch", description=__doc__.split("\n")[0])
    p.add_argument("--cluster", choices=("local", "slurm"), default="local", help="where the sweep runs")
    p.add_argument("--study", help="built-in study name (studies/NAME.toml) or a TOML path; default fashion-mnist")
    p.add_argument("--out", type=Path, help="RUN_DIR (default runs/<study>-<timestamp>)")
    p.add_argument("--budget", choices=("smoke", "full"), default="full", help="smoke: a < 1 min version of the study")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a study key (dotted, TOML value), e.g. search.seeds=3; repeatable")
    p.add_argument("--dry-run", action="store_true", help="print the trial grid (and sbatch script); run nothing")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--follow", action=argparse.BooleanOptionalAction, default=None,
                   help="slurm: show progress until the job ends (default: return after submitting)")
    g = p.add_argument_group("slurm")
    g.add_argument("--nodes", type=int, help="nodes of the allocation (default 1)")
    g.add_argument("--gpus-per-node", type=int, help="GPUs per node (default: enough for one trial)")
    g.add_argument("--cpus-per-node", type=int, help="CPUs per node (default: enough for one trial)")
    g.add_argument("--partition", help="Slurm partition")
    g.add_argument("--account", help="Slurm account")
    g.add_argument("--time", help="time limit HH:MM:SS (the job requeues itself at the limit)")
    return p


def _resolve(args: argparse.Namespace):
    from orchestrator import rundir
    from orchestrator.study import load_study

    if args.cluster == "local":
        given = [f"--{f.replace('_', '-')}" for f in (*SLURM_FLAGS, "follow") if getattr(args, f) is not None]
        if given:
            raise UsageError(f"{given[0]}: only with --cluster slurm")
    if args.resume is not None:
        if args.study or args.overrides or args.out or args.budget != "full":
            raise UsageError("--resume: takes the frozen study of RUN_DIR; drop --study/--set/--out/--budget")
        study = rundir.load_frozen(args.resume)
        rundir.check_not_running(args.resume)
        return study, args.resume
    study = load_study(args.study, args.overrides, args.budget)
    run_dir = args.out or rundir.default_run_dir(study)
    rundir.check_new(run_dir)
    return study, run_dir


def _preflight(study) -> None:
    import trainables

    try:
        trainables.preflight(study.trainable, study.trainable_settings())
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    from orchestrator import rundir
    from orchestrator.grid import format_grid

    created: Path | None = None
    existed = False
    try:
        args = build_parser().parse_args(argv)
        study, run_dir = _resolve(args)
        slurm_res = None
        if args.cluster == "slurm":
            from cluster.slurm import resources_from

            slurm_res = resources_from(args, study)
        if args.dry_run:
            print(format_grid(study))
            if slurm_res is not None:
                from cluster.slurm import sbatch_script

                print(sbatch_script(study, run_dir, slurm_res))
            return 0
        _preflight(study)
        if args.resume is None:
            existed = run_dir.exists()
            rundir.create(run_dir, study)
            created = run_dir
        if args.cluster == "local":
            from cluster.local import run_local

            run_local(study, run_dir, resume=args.resume is not None)
            return 0
        from cluster.slurm import follow, submit

        job_id = submit(study, run_dir, slurm_res)
        created = None  # the job owns RUN_DIR now
        if args.follow:
            return follow(run_dir, job_id)
        return 0
    except UsageError as e:
        if created is not None:
            rundir.remove_written(created, keep_dir=existed)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SweepInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
