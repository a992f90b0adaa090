"""Run a study in its run directory: the sweep (and its ``[branching]``), then the summary
and the report.

The one driver both back-ends call: ``cluster.local.LocalBackend`` here, in the
foreground, and ``cluster.job.SweepJob`` on the head node of a Slurm job. Ray must be
connected already (each back-end provides its own); the driver holds the run's lease
(``cluster.lease``) until the report is written.

    from pathlib import Path
    from cluster.local import local_ray
    from orchestrator.run import run_study
    with local_ray():
        run_study(Path("runs/mine"))          # RUN_DIR made by orchestrator.rundir.create
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import analysis
from cluster import lease
from orchestrator import rundir
from orchestrator.branching import run_branching
from orchestrator.errors import SweepInterrupted
from orchestrator.progress import LiveDisplay
from orchestrator.range_test import centred
from orchestrator.study import Study
from orchestrator.sweep import run_sweep
from orchestrator.tracking import log_fits

# a full disk, a quota, a read-only or unwritable RUN_DIR: the sweep cannot go on, but
# nothing is lost and --resume continues once it can write again
_UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

SUMMARY_COLUMNS = ("batch_size", "best_lr", "lr_on_edge", "steps_to_target", "examples_to_target", "trials", "reached")


def summary_text(run_dir: Path) -> str:
    """Per batch size: best LR, steps to target, examples to target (from ``analysis``)."""
    table = analysis.per_batch_summary(analysis.load_run(run_dir))
    return table[[c for c in SUMMARY_COLUMNS if c in table.columns]].to_string(index=False, na_rep="-")


def run_study(run_dir: Path, resume: bool = False, backend: str = "local") -> Path:
    """Run (or resume) the sweep of RUN_DIR's frozen study, print the per-batch summary,
    write RUN_DIR/report; returns the report's directory.

    Raises ``SweepInterrupted`` when the sweep stopped early (the lease is released, and
    ``resume=True`` continues it).
    """
    study = rundir.load_frozen(run_dir)
    display = LiveDisplay(sys.stderr) if backend == "local" else None
    job_id = os.environ.get("SLURM_JOB_ID") if backend == "slurm" else None
    try:
        with lease.held(run_dir, backend, job_id=job_id):
            study = centred(study, run_dir, resume=resume)  # an LR range test's grids, else the study
            run_sweep(study, run_dir, resume=resume, display=display)
            run_branching(study, run_dir, resume=resume)
            print(summary_text(run_dir), flush=True)
            report = analysis.write_report(run_dir)
            log_fits_to_trackers(study, run_dir, report)
    except Exception as e:
        if (cause := unwritable(e)) is None:
            raise
        raise SweepInterrupted(
            f"cannot write {cause.filename or run_dir}: {cause.strerror}; "
            f"make room, then continue with --resume {run_dir}"
        ) from e
    print(f"report: {report / 'report.md'}", flush=True)
    return report


def log_fits_to_trackers(study: Study, run_dir: Path, report: Path) -> None:
    """The fits as the study run of each tracker [tracking] turns on; a tracker that fails
    here costs a warning, not the run (the report is written)."""
    try:
        log_fits(study, run_dir, report)
    except Exception as e:  # a tracker's server, disk or version: any of them
        print(f"warning: logging the fits to the trackers failed: {type(e).__name__}: {e}", file=sys.stderr)


def unwritable(exc: BaseException) -> OSError | None:
    """The disk-full or permission error behind ``exc`` (Tune wraps what its callbacks raise)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _UNWRITABLE:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None
