"""Follow a run from anywhere that sees RUN_DIR: its live progress until the driver ends.

    python -m orchestrator.follow RUN_DIR        # e.g. a Slurm job submitted earlier

The run's lease (``cluster.lease``) says which back-end drives it (a local process or a
Slurm job) and that back-end says whether it is still alive.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cluster import lease as leases
from cluster.backend import Backend
from cluster.local import LocalBackend
from cluster.slurm import SlurmBackend
from cluster.slurm_flags import SlurmFlags
from orchestrator.progress import LiveDisplay, read_snapshot


def backend_of(lease: leases.Lease) -> Backend:
    """The back-end that holds ``lease`` (flags are not needed to ask about a run)."""
    return LocalBackend() if lease.backend == "local" else SlurmBackend(SlurmFlags())


def follow_run(run_dir: Path) -> int:
    """Show the progress until the run's driver ends; 0 if the report was written."""
    held = leases.read(run_dir)
    if held is None:
        print(f"error: {run_dir} has no lease: no sweep was started there", file=sys.stderr)
        return 2
    display = LiveDisplay(sys.stderr, every_s=30.0)

    def show(final: bool) -> None:
        snap = read_snapshot(run_dir)
        if snap is not None:
            display.show(snap, force=final)

    backend_of(held).follow(run_dir, held, show)
    report = Path(run_dir) / "report" / "report.md"
    if report.is_file():
        print(f"report: {report}")
        return 0
    logs = sorted((Path(run_dir) / "slurm").glob(f"{held.job_id}_*_log.*")) if held.job_id else []
    print(
        f"the sweep of {run_dir} ended without a report; logs: {' '.join(str(p) for p in logs) or run_dir}",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orchestrator.follow RUN_DIR", file=sys.stderr)
        return 2
    return follow_run(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
