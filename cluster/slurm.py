"""The Slurm back-end: one submitit job runs the job's own Ray cluster and the sweep.

    python -m orchestrator.launch --cluster slurm --nodes 2 --time 08:00:00 [--follow]

``SlurmBackend.launch`` renders the sbatch script with submitit's ``SlurmExecutor`` (folder
RUN_DIR/slurm, one task per node), checks it with ``sbatch --test-only`` and submits it;
``follow`` shows the sweep's progress from RUN_DIR (a shared filesystem) until the job
leaves the queue. What runs inside the job is ``cluster.job.SweepJob``.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from cluster import lease as leases
from cluster.backend import SweepRequest, Workers, follow_lease
from cluster.job import SweepJob
from cluster.lease import Lease
from cluster.ports import WORKER_PORTS
from cluster.slurm_flags import SlurmFlags
from trainables.contract import UsageError

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
    options: SlurmFlags = SlurmFlags()
    """The other options (qos, constraint, memory, ..., setup lines, extra sbatch options)."""


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


def resources_for(
    flags: SlurmFlags,
    cpus_per_trial: float,
    gpus_per_trial: float,
    workers_per_trial: int = 1,
    refuse_unfit: bool = True,
) -> SlurmResources:
    """Resources from the flags, defaulting to what one trial needs. With
    ``workers_per_trial`` N > 1 the per-trial figures are each worker's, the default is
    each node's share of the N workers, and an allocation that cannot hold them all is
    refused (one line naming resources.workers_per_trial) unless not ``refuse_unfit``."""
    per = "worker" if workers_per_trial > 1 else "trial"
    nodes = 1 if flags.nodes is None else flags.nodes
    if nodes < 1:
        raise UsageError(f"--nodes: must be >= 1, got {nodes}")
    share = math.ceil(workers_per_trial / nodes)  # workers per node, spread evenly
    gpus = math.ceil(gpus_per_trial) * share if flags.gpus_per_node is None else flags.gpus_per_node
    if gpus < 0:
        raise UsageError(f"--gpus-per-node: must be >= 0, got {gpus}")
    if gpus < math.ceil(gpus_per_trial):
        raise UsageError(f"--gpus-per-node: {gpus} is less than resources.gpus_per_{per} = {gpus_per_trial}")
    trials_per_node = max(share, math.floor(gpus / gpus_per_trial)) if gpus_per_trial else share
    cpus = math.ceil(cpus_per_trial * trials_per_node) if flags.cpus_per_node is None else flags.cpus_per_node
    if cpus < math.ceil(cpus_per_trial):
        raise UsageError(f"--cpus-per-node: {cpus} is less than resources.cpus_per_{per} = {cpus_per_trial}")
    if workers_per_trial > 1 and refuse_unfit:
        Workers(workers_per_trial, cpus_per_trial, gpus_per_trial).check(nodes, cpus, gpus, "the Slurm allocation")
    # every concurrent trial is a Ray worker process holding one of the node's worker ports
    if math.ceil(cpus / cpus_per_trial) > WORKER_PORTS - 8:
        raise UsageError(
            f"--cpus-per-node: {cpus} CPUs / resources.cpus_per_trial = {cpus_per_trial} "
            f"would run more trials per node than the {WORKER_PORTS - 8} Ray worker ports "
            f"reserved per job; raise cpus_per_trial"
        )
    return SlurmResources(
        nodes=nodes,
        cpus_per_node=cpus,
        gpus_per_node=gpus,
        time_min=parse_time(flags.time or DEFAULT_TIME),
        partition=flags.partition,
        account=flags.account,
        options=flags,
    )


def _executor(name: str, run_dir: Path, res: SlurmResources, trainable: str) -> submitit.SlurmExecutor:
    ex = submitit.SlurmExecutor(folder=Path(run_dir).resolve() / "slurm", max_num_timeout=MAX_REQUEUES_ON_TIMEOUT)
    params: dict[str, Any] = dict(
        job_name=f"batchscale-{name}",
        nodes=res.nodes,
        ntasks_per_node=1,
        cpus_per_task=res.cpus_per_node,
        time=res.time_min,
        signal_delay_s=120,  # USR2 two minutes before the limit: submitit requeues the job
        # the job imports the trainable again from the shared filesystem: say which one
        setup=[
            "export PYTHONUNBUFFERED=1",
            f"# trainable: {trainable} (imported from cwd {Path.cwd()})",
            *res.options.setup,
        ],
    )
    o = res.options
    params.update(
        {
            k: v
            for k, v in (
                ("qos", o.qos),
                ("constraint", o.constraint),
                ("mem", o.mem),
                ("mem_per_gpu", o.mem_per_gpu),
                ("exclude", o.exclude),
                ("mail_user", o.mail_user),
                ("mail_type", o.mail_type),
                ("exclusive", o.exclusive),
            )
            if v is not None
        }
    )
    if o.additional_parameters():
        params["additional_parameters"] = o.additional_parameters()
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


def check_feasible(script: str) -> None:
    """``sbatch --test-only``: a request the cluster can never satisfy (more nodes than the
    partition has, say) is refused here, where a plain sbatch would queue it forever."""
    try:
        r = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UsageError("--cluster slurm: sbatch not found on PATH (is this a Slurm login node?)") from None
    if r.returncode != 0:
        raise UsageError(f"sbatch refused the job: {_sbatch_error(r.stderr or r.stdout)}")


def _sbatch_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln.lower()]
    return (errors or lines or ["no message"])[0].removeprefix("sbatch: error: ")


# squeue -j shows a finished job for a while (MinJobAge); these states mean it is over.
_ENDED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "SPECIAL_EXIT",
    "REVOKED",
}


def job_state(job_id: str) -> str | None:
    """The job's state (PENDING, RUNNING, ...; a requeued job pends again), or None once
    it has ended."""
    r = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    if r.returncode != 0:
        # gone from slurmctld's memory; any other failure (a busy controller) is not an end
        return None if "invalid job id" in r.stderr.lower() else "UNKNOWN"
    state = r.stdout.strip().splitlines()[0] if r.stdout.strip() else None
    return None if state is None or state in _ENDED else state


class SlurmBackend:
    """Submits the sweep as one Slurm job through submitit."""

    name = "slurm"

    def __init__(self, flags: SlurmFlags) -> None:
        self.flags = flags

    def _executor(self, req: SweepRequest) -> submitit.SlurmExecutor:
        res = resources_for(self.flags, req.cpus_per_trial, req.gpus_per_trial, req.workers_per_trial)
        return _executor(req.name, req.run_dir, res, req.trainable)

    def capacity(self, req: SweepRequest) -> str:
        """How many data-parallel trials the allocation holds at once (flags as given)."""
        res = resources_for(
            self.flags, req.cpus_per_trial, req.gpus_per_trial, req.workers_per_trial, refuse_unfit=False
        )
        return req.workers.line(res.nodes, res.cpus_per_node, res.gpus_per_node, "the Slurm allocation")

    def describe(self, req: SweepRequest) -> str:
        """The exact sbatch script ``launch`` would submit (writes nothing)."""
        return _script(self._executor(req))

    def check(self, req: SweepRequest) -> None:
        check_feasible(self.describe(req))

    def launch(self, req: SweepRequest, resume: bool) -> Lease:
        """Submit the job (it resumes whatever RUN_DIR/tune holds); print how to follow it."""
        ex = self._executor(req)
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured):  # submitit echoes sbatch's stderr itself
                job = ex.submit(SweepJob(req.run_dir, req.drive))
        except (submitit.core.utils.FailedJobError, FileNotFoundError) as e:
            raise UsageError(f"sbatch refused the job: {_sbatch_error(str(e))}") from None
        run_dir = req.run_dir
        print(f"submitted Slurm job {job.job_id}")
        print(f"RUN_DIR  {Path(run_dir).resolve()}")
        print(f"follow   python -m cluster.slurm follow {run_dir} {job.job_id}")
        print(f"logs     {job.paths.stdout}")
        print(f"cancel   scancel {job.job_id}")
        print(f"resume   python -m orchestrator.launch --cluster slurm --resume {run_dir}  (after a cancel)")
        return leases.submitted(run_dir, str(job.job_id))

    def is_alive(self, lease: Lease) -> bool:
        return lease.job_id is not None and job_state(lease.job_id) is not None

    def follow(self, run_dir: Path, lease: Lease, show: Callable[[bool], None]) -> None:
        last: list[str | None] = [None]

        def on_poll() -> None:
            state = job_state(lease.job_id) if lease.job_id else None
            if state != last[0]:
                print(f"job {lease.job_id}: {state}", file=sys.stderr)
                last[0] = state

        follow_lease(self, run_dir, lease, show, on_poll=on_poll)
