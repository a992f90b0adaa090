"""What runs inside the Slurm job: one task per node, submitted by ``cluster.slurm``.

The task on the first node starts the job's own Ray head (token auth, ports and temp dir
derived from the job id, see ``cluster.ray_cluster``), waits for every node, runs the Tune
driver, writes the report and stops its Ray processes; the other tasks join as Ray workers
and serve until the head is gone. Nothing here assumes it runs once: when Slurm requeues
the job (time limit, preemption), the sweep resumes from RUN_DIR/tune.
"""

from __future__ import annotations

import logging
from pathlib import Path

import submitit

TOKEN_FILE = "ray.token"


class SweepJob(submitit.helpers.Checkpointable):
    """The submitted callable; ``checkpoint`` (submitit, on USR2/timeout) requeues it as is."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir).resolve()

    def __call__(self) -> str | None:
        from cluster import ray_cluster

        spec = ray_cluster.RayClusterSpec.from_slurm(token_file=self.run_dir / "slurm" / TOKEN_FILE)
        if not spec.is_head:
            ray_cluster.run_worker(spec)
            return None
        return self._drive(spec)

    def _drive(self, spec: "ray_cluster.RayClusterSpec") -> str:  # noqa: F821
        import ray

        from cluster import ray_cluster
        from orchestrator import outcome, rundir
        from orchestrator.sweep import EXPERIMENT, run_sweep, tune_dir

        study = rundir.load_frozen(self.run_dir)
        resume = (tune_dir(self.run_dir) / EXPERIMENT).is_dir()  # a requeued job continues
        with ray_cluster.head(spec):
            ray_cluster.connect(spec, log_to_driver=False, logging_level=logging.WARNING)
            try:
                run_sweep(study, self.run_dir, resume=resume)
            finally:
                ray.shutdown()
        print(outcome.summary_text(self.run_dir), flush=True)
        return str(outcome.write_report(self.run_dir))
