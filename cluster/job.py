"""What runs inside the Slurm job: one task per node, submitted by ``cluster.slurm``.

The task on the first node starts the job's own Ray head (token auth, ports and temp dir
derived from the job id, see ``cluster.ray_spec``), waits for every node, connects and
calls the driver it was given (``orchestrator.run.run_study``: the sweep, the summary and
the report), then stops its Ray processes; the other tasks join as Ray workers and serve
until the head is gone. Nothing here assumes it runs once: when Slurm requeues the job
(time limit, preemption), the driver resumes from RUN_DIR/tune.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import submitit

if TYPE_CHECKING:
    from cluster.backend import Driver

TOKEN_FILE = "ray.token"


class SweepJob(submitit.helpers.Checkpointable):
    """The submitted callable; ``checkpoint`` (submitit, on USR2/timeout) requeues it as is."""

    def __init__(self, run_dir: Path, drive: Driver) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.drive = drive

    def __call__(self) -> None:
        import ray

        from cluster.ray_roles import head, run_worker
        from cluster.ray_spec import RayClusterSpec, connect

        spec = RayClusterSpec.from_slurm(token_file=self.run_dir / "slurm" / TOKEN_FILE)
        if not spec.is_head:
            run_worker(spec)
            return
        with head(spec):
            connect(spec, log_to_driver=False, logging_level=logging.WARNING)
            try:
                # resume=True: a first start finds nothing to restore and starts afresh
                self.drive(self.run_dir, True, "slurm")
            finally:
                ray.shutdown()
