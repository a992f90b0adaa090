"""The Slurm back-end: one submitit job runs the job's own Ray cluster and the sweep.

    python -m orchestrator.launch --cluster slurm --nodes 2 --time 08:00:00 [--follow]

``submit`` renders the sbatch script with submitit's ``SlurmExecutor`` (folder
RUN_DIR/slurm, one task per node) and submits it; ``follow`` shows the sweep's progress
from RUN_DIR (a shared filesystem) until the job leaves the queue.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from cluster.job import SweepJob
from cluster.ports import WORKER_PORTS
from orchestrator.errors import UsageError
from orchestrator.progress import LiveDisplay, read_snapshot
from orchestrator.study import Study

DEFAULT_TIME = "04:00:00"
# A job that hits its time limit is requeued and resumes; this bounds how often.
MAX_REQUEUES_ON_TIMEOUT = 20
_TIME = re.compile(r"^(?:(\d+)-)?(\d{1,3}):(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class SlurmResources:
    """The allocation of one sweep job."""

    nodes: int
    """Nodes; one task per node (the first runs the Ray head and the Tune driver)."""
    cpus_per_node: int
    """CPUs per node given to Ray (never the whole node unless asked for)."""
    gpus_per_node: int
    """GPUs per node (``--gpus-per-node``); 0 for CPU-only studies."""
    time_min: int
    """Time limit in minutes; at the limit the job requeues itself and resumes."""
    partition: str | None = None
    """Slurm partition; None for the cluster's default."""
    account: str | None = None
    """Slurm account; None for the user's default."""


def parse_time(text: str) -> int:
    """``[D-]HH:MM:SS`` as whole minutes (rounded up), for sbatch ``--time``."""
    m = _TIME.match(text)
    if not m or int(m.group(3)) > 59 or int(m.group(4)) > 59:
        raise UsageError(f"--time: expected HH:MM:SS or D-HH:MM:SS, got {text!r}")
    days, h, mi, s = (int(g or 0) for g in m.groups())
    minutes = math.ceil(((days * 24 + h) * 60 + mi) + s / 60)
    if minutes < 1:
        raise UsageError("--time: must be at least one minute")
    return minutes


def resources_from(args: Any, study: Study) -> SlurmResources:
    """Resources from the launch flags, defaulting to what one trial of ``study`` needs."""
    r = study.resources
    nodes = 1 if args.nodes is None else args.nodes
    if nodes < 1:
        raise UsageError(f"--nodes: must be >= 1, got {nodes}")
    gpus = math.ceil(r.gpus_per_trial) if args.gpus_per_node is None else args.gpus_per_node
    if gpus < 0:
        raise UsageError(f"--gpus-per-node: must be >= 0, got {gpus}")
    if gpus < math.ceil(r.gpus_per_trial):
        raise UsageError(f"--gpus-per-node: {gpus} is less than resources.gpus_per_trial = {r.gpus_per_trial}")
    trials_per_node = max(1, math.floor(gpus / r.gpus_per_trial)) if r.gpus_per_trial else 1
    cpus = math.ceil(r.cpus_per_trial * trials_per_node) if args.cpus_per_node is None else args.cpus_per_node
    if cpus < math.ceil(r.cpus_per_trial):
        raise UsageError(f"--cpus-per-node: {cpus} is less than resources.cpus_per_trial = {r.cpus_per_trial}")
    # every concurrent trial is a Ray worker process holding one of the node's worker ports
    if math.ceil(cpus / r.cpus_per_trial) > WORKER_PORTS - 8:
        raise UsageError(f"--cpus-per-node: {cpus} CPUs / resources.cpus_per_trial = {r.cpus_per_trial} "
                         f"would run more trials per node than the {WORKER_PORTS - 8} Ray worker ports "
                         f"reserved per job; raise cpus_per_trial")
    return SlurmResources(nodes=nodes, cpus_per_node=cpus, gpus_per_node=gpus,
                          time_min=parse_time(args.time or DEFAULT_TIME),
                          partition=args.partition, account=args.account)


def _executor(study: Study, run_dir: Path, res: SlurmResources) -> submitit.SlurmExecutor:
    ex = submitit.SlurmExecutor(folder=Path(run_dir).resolve() / "slurm",
                                max_num_timeout=MAX_REQUEUES_ON_TIMEOUT)
    params: dict[str, Any] = dict(
        job_name=f"batchscale-{study.name}",
        nodes=res.nodes,
        ntasks_per_node=1,
        cpus_per_task=res.cpus_per_node,
        time=res.time_min,
        signal_delay_s=120,  # USR2 two minutes before the limit: submitit requeues the job
        setup=["export PYTHONUNBUFFERED=1"],
    )
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.partition:
        params["partition"] = res.partition
    if res.account:
        params["account"] = res.account
    ex.update_parameters(**params)
    return ex


def _script(ex: submitit.SlurmExecutor) -> str:
    return ex._make_submission_file_text(ex._submitit_command_str, "<submission-id>")


def sbatch_script(study: Study, run_dir: Path, res: SlurmResources) -> str:
    """The exact sbatch script ``submit`` would submit (writes nothing)."""
    return _script(_executor(study, run_dir, res))


def check_feasible(script: str) -> None:
    """``sbatch --test-only``: a request the cluster can never satisfy (more nodes than the
    partition has, say) is refused here, where a plain sbatch would queue it forever."""
    try:
        r = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UsageError("--cluster slurm: sbatch not found on PATH (is this a Slurm login node?)") from None
    if r.returncode != 0:
        raise UsageError(f"sbatch refused the job: {_sbatch_error(r.stderr or r.stdout)}")


def submit(study: Study, run_dir: Path, res: SlurmResources) -> str:
    """Submit the sweep job; prints the job id, RUN_DIR and how to follow or cancel it."""
    ex = _executor(study, run_dir, res)
    check_feasible(_script(ex))
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):  # submitit echoes sbatch's stderr itself
            job = ex.submit(SweepJob(run_dir))
    except (submitit.core.utils.FailedJobError, FileNotFoundError) as e:
        raise UsageError(f"sbatch refused the job: {_sbatch_error(str(e))}") from None
    print(f"submitted Slurm job {job.job_id}")
    print(f"RUN_DIR  {Path(run_dir).resolve()}")
    print(f"follow   python -m cluster.slurm follow {run_dir} {job.job_id}")
    print(f"logs     {job.paths.stdout}")
    print(f"cancel   scancel {job.job_id}")
    print(f"resume   python -m orchestrator.launch --cluster slurm --resume {run_dir}  (after a cancel)")
    return str(job.job_id)


def _sbatch_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln.lower()]
    return (errors or lines or ["no message"])[0].removeprefix("sbatch: error: ")


# squeue -j shows a finished job for a while (MinJobAge); these states mean it is over.
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
          "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED"}


def job_state(job_id: str) -> str | None:
    """The job's state (PENDING, RUNNING, ...; a requeued job pends again), or None once
    it has ended."""
    r = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    if r.returncode != 0:
        # gone from slurmctld's memory; any other failure (a busy controller) is not an end
        return None if "invalid job id" in r.stderr.lower() else "UNKNOWN"
    state = r.stdout.strip().splitlines()[0] if r.stdout.strip() else None
    return None if state is None or state in _ENDED else state


def follow(run_dir: Path, job_id: str, poll_s: float = 2.0) -> int:
    """Show the sweep's progress until the job ends; 0 if the report was written."""
    display = LiveDisplay(sys.stderr, every_s=30.0)
    last_state = None
    while (state := job_state(job_id)) is not None:
        if state != last_state:
            print(f"job {job_id}: {state}", file=sys.stderr)
            last_state = state
        snap = read_snapshot(run_dir)
        if snap is not None:
            display.show(snap)
        time.sleep(poll_s)
    snap = read_snapshot(run_dir)
    if snap is not None:
        display.show(snap, force=True)
    report = Path(run_dir) / "report" / "report.md"
    if report.is_file():
        print(f"report: {report}")
        return 0
    logs = sorted((Path(run_dir) / "slurm").glob(f"{job_id}_*_log.*"))
    print(f"job {job_id} ended without a report; logs: {' '.join(str(p) for p in logs) or run_dir}",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m cluster.slurm follow RUN_DIR JOB_ID``: follow a job submitted earlier."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "follow":
        print("usage: python -m cluster.slurm follow RUN_DIR JOB_ID", file=sys.stderr)
        return 2
    return follow(Path(args[1]), args[2])


if __name__ == "__main__":
    sys.exit(main())
