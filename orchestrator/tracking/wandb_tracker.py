"""Weights & Biases: one run per trial (offline files under RUN_DIR/wandb unless the study asks
for ``wandb = "online"``), grouped by RUN_DIR, and a ``study`` run of the fits.

Ray Tune's ``WandbLoggerCallback`` runs each trial's ``wandb`` run in a small Ray actor on
the driver's node; this subclass sends it the curves' metrics stepped by the trial's
``step`` (as Tune's ``training_iteration``, which the actor logs as W&B's step), the trial's
hyperparameters as its config, and its status as ``config.status`` when it ends.
``wandb sync RUN_DIR/wandb/offline-run-*`` uploads offline runs later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.air.constants import TRAINING_ITERATION
from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem, _WandbLoggingActor
from ray.tune.experiment import Trial

from orchestrator.tracking.common import STUDY_RUN, TrialWatch, run_name, trial_params, trial_tags
from orchestrator.tune_config import config_of

# no console capture, no banner: the launcher's output stays the launcher's
SETTINGS = {"silent": True, "console": "off", "quiet": True}


def group_of(run_dir: Path) -> str:
    """The W&B group of a run directory's runs: its name."""
    return Path(run_dir).resolve().name


class _FinishingActor(_WandbLoggingActor):
    """Tune's logging actor, which then waits for W&B's service to write the run's end:
    Tune kills the actor as soon as ``run`` returns, before W&B's exit hook, and a run of
    a trial that ended last could be left "running" (then "crashed") on a busy machine."""

    def run(self) -> None:
        super().run()
        self._wandb.teardown()


class WandbTracker(WandbLoggerCallback):
    """Tune callback: every trial a W&B run (``mode`` "offline" or "online")."""

    _logger_actor_cls = _FinishingActor

    def __init__(self, run_dir: Path, mode: str, project: str, study: str, early_stopped: set[str]) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.mode = mode
        self.study = study
        self.watch = TrialWatch(early_stopped)
        super().__init__(project=project, group=group_of(run_dir), mode=mode, dir=str(self.run_dir), settings=SETTINGS)

    def setup(self, *args: Any, **kwargs: Any) -> None:
        import os

        if self.mode == "offline":
            # Tune asks for an API key unless W&B's own variable says offline; offline needs none
            os.environ["WANDB_MODE"] = "offline"
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial: Trial) -> None:
        cfg = config_of(trial)
        tid = trial.trial_id
        config = {**trial_params(cfg), **trial_tags(cfg, tid, self.study)}
        init = dict(
            id=tid,
            name=run_name(cfg, tid),
            group=self.group,
            project=self.project,
            config=config,
            job_type="trial",
            tags=[f"batch_size={cfg.batch_size}"],
            allow_val_change=True,
        )
        init.update(self.kwargs)
        self._start_logging_actor(trial, [*self._exclude_results, *self.excludes, "config"], **init)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        if trial not in self._trial_logging_actors:
            self.log_trial_start(trial)
        got = self.watch.observe(trial.trial_id, result)
        if got is not None:
            step, values = got
            self._trial_queues[trial].put((_QueueItem.RESULT, {**values, TRAINING_ITERATION: step}))

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        if trial in self._trial_queues:
            status = self.watch.status(trial.trial_id, failed)
            last = self.watch.last_step.get(trial.trial_id)
            self._trial_queues[trial].put((_QueueItem.RESULT, {"config": {"status": status}, TRAINING_ITERATION: last}))
        super().log_trial_end(trial, failed)

    def get_state(self) -> dict[str, Any]:
        return {"watch": self.watch.state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.watch.load(state["watch"])


def log_study_run(
    run_dir: Path,
    mode: str,
    project: str,
    scalars: dict[str, float],
    per_batch: dict[str, list[tuple[int, float]]],
    labels: dict[str, str],
) -> str:
    """The fits as a W&B run named ``study`` in the run directory's group: the study's numbers
    and words in its summary, the per-batch numbers logged with the batch size as the step."""
    import wandb

    run_dir = Path(run_dir).resolve()
    run = wandb.init(
        mode="online" if mode == "online" else "offline",
        dir=str(run_dir),
        project=project,
        group=group_of(run_dir),
        name=STUDY_RUN,
        job_type="analysis",
        config={"run_dir": str(run_dir)},
        settings=SETTINGS,
    )
    try:
        steps = sorted({b for points in per_batch.values() for b, _ in points})
        for b in steps:
            run.log({k: v for k, points in per_batch.items() for bb, v in points if bb == b}, step=b)
        run.summary.update({**scalars, **labels})
        return str(run.id)
    finally:
        run.finish()
