"""Entry point: run a batch-size × learning-rate study locally or as one Slurm job.

    python -m orchestrator.launch --cluster local --budget smoke      # a first try, < 1 min
    python -m orchestrator.launch --cluster local                     # the built-in study
    python -m orchestrator.launch --cluster slurm --nodes 2 --time 08:00:00 --follow
    python -m orchestrator.launch --study studies/nqm.toml --set search.seeds=3 --dry-run

Exit codes: 0 success; 2 bad input (one line naming the key or flag; nothing started,
submitted or written); 1 anything else. The CLI only parses and validates: the work is
``orchestrator.run.run_study`` on a back-end of ``cluster.backend``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster import lease as leases
from cluster.backend import Backend, SweepRequest
from cluster.local import LocalBackend
from cluster.slurm import SlurmBackend
from cluster.slurm_flags import SlurmFlags, from_table, user_defaults
from orchestrator import manifest, rundir
from orchestrator.errors import SweepInterrupted
from orchestrator.follow import backend_of, follow_run
from orchestrator.grid import format_grid
from orchestrator.lr_spec import LrRangeTest
from orchestrator.run import run_study
from orchestrator.study import Study, load_study
from trainables.contract import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, exit 2
        raise UsageError(message)


def build_parser(prog: str = "python -m orchestrator.launch") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=(__doc__ or "").split("\n")[0])
    p.add_argument("--cluster", choices=("local", "slurm"), default="local", help="where the sweep runs")
    p.add_argument("--study", help="built-in study name (studies/NAME.toml) or a TOML path; default fashion-mnist")
    p.add_argument("--out", type=Path, help="RUN_DIR (default runs/<study>-<timestamp>)")
    p.add_argument("--budget", choices=("smoke", "full"), default="full", help="smoke: a < 1 min version of the study")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a study key (dotted, TOML value), e.g. search.seeds=3; repeatable",
    )
    p.add_argument("--dry-run", action="store_true", help="print the trial grid (and sbatch script); run nothing")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument(
        "--new-trainable",
        type=Path,
        metavar="FILE.py",
        help="write a commented template of your own trainable to FILE.py and exit",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="--resume even though the code, package versions or study differ from the run's",
    )
    p.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="slurm: show progress until the job ends (default: return after submitting)",
    )
    SlurmFlags.add_to(p.add_argument_group("slurm"))
    return p


def _check_flags(args: argparse.Namespace) -> None:
    flags = SlurmFlags.from_args(args).given()
    if args.cluster == "local":
        given = [f"--{f.replace('_', '-')}" for f in (*flags, *(["follow"] if args.follow is not None else []))]
        if given:
            raise UsageError(f"{given[0]}: only with --cluster slurm")


def _backend(args: argparse.Namespace, study: Study) -> Backend:
    """The back-end; Slurm options from the flags, then the study's [slurm], then the user's file."""
    if args.cluster == "local":
        return LocalBackend()
    defaults = from_table(study.slurm, "slurm").over(user_defaults())
    return SlurmBackend(SlurmFlags.from_args(args).over(defaults))


def _resolve(args: argparse.Namespace) -> tuple[Study, Path]:
    if args.resume is not None:
        if args.study or args.overrides or args.out or args.budget != "full":
            raise UsageError("--resume: takes the frozen study of RUN_DIR; drop --study/--set/--out/--budget")
        study = rundir.load_frozen(args.resume)
        held = leases.read(args.resume)
        if held is not None and backend_of(held).is_alive(held):
            where = f"Slurm job {held.job_id}" if held.job_id else f"pid {held.pid} on {held.host}"
            hint = " (scancel it first)" if held.job_id else ""
            raise UsageError(f"--resume: the sweep of {args.resume} is still running: {where}{hint}")
        changed = manifest.differences(args.resume, study)
        if changed and not args.force:
            raise UsageError(
                f"--resume: {args.resume} was made with other code or settings: "
                f"{'; '.join(changed)} (--force continues anyway, mixing them)"
            )
        return study, args.resume
    if args.force:
        raise UsageError("--force: only with --resume")
    study = load_study(args.study, args.overrides, args.budget)
    run_dir = args.out or rundir.default_run_dir(study)
    rundir.check_new(run_dir)
    return study, run_dir


def _new_trainable(path: Path) -> int:
    from trainables import template

    if path.suffix != ".py":
        raise UsageError(f"--new-trainable: {path} must end in .py")
    if path.exists():
        raise UsageError(f"--new-trainable: {path} exists; not overwriting it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(Path(template.__file__).read_text())
    print(f'wrote {path}: in a study file, trainable = "{path}:train" (README: Your model)')
    return 0


def _preflight(study: Study) -> None:
    import trainables

    try:
        trainables.preflight(study.trainable, study.trainable_settings())
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None


def main(argv: list[str] | None = None, prog: str = "python -m orchestrator.launch") -> int:
    created: Path | None = None
    existed = False
    try:
        args = build_parser(prog).parse_args(argv)
        if args.new_trainable is not None:
            return _new_trainable(args.new_trainable)
        _check_flags(args)
        study, run_dir = _resolve(args)
        backend = _backend(args, study)
        res = study.resources  # per worker: the trial itself unless workers_per_trial > 1
        req = SweepRequest(
            run_dir=run_dir,
            name=study.name,
            trainable=study.trainable,
            cpus_per_trial=res.worker_cpus,
            gpus_per_trial=res.worker_gpus,
            workers_per_trial=res.workers_per_trial,
            drive=run_study,
        )
        if args.dry_run:
            print(format_grid(study))
            if study.search.strategy == "adaptive":
                from orchestrator.adaptive import format_plan

                print(format_plan(study))
            if study.branching is not None:
                from orchestrator.branching import format_branching

                print(format_branching(study))
            if isinstance(study.search.lr, LrRangeTest):
                from orchestrator.range_test import format_range_test

                print(format_range_test(study))
            if res.workers_per_trial > 1:
                print(backend.capacity(req))
            if backend.name != "local":
                print(backend.describe(req))
            return 0
        _preflight(study)
        backend.check(req)
        if args.resume is None:
            existed = run_dir.exists()
            rundir.create(run_dir, study)
            created = run_dir
        if backend.name == "local":
            print(f"RUN_DIR {run_dir}", file=sys.stderr)
            created = None  # the sweep writes into it from here: an error later keeps it
        submitted = backend.launch(req, resume=args.resume is not None)
        created = None  # the sweep (or the job) owns RUN_DIR now
        if submitted is not None and args.follow:
            return follow_run(run_dir)
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
