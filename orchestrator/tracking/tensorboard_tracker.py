"""TensorBoard: one run directory per trial under RUN_DIR/tensorboard, and a ``study`` run.

Ray Tune's ``TBXLoggerCallback`` (tensorboardX) writes each trial's results into the trial's
Tune directory, every key under ``ray/tune/`` and stepped by Tune's iteration; this subclass
writes the curves' metrics under their own names, stepped by the trial's ``step``, into
``RUN_DIR/tensorboard/batch_size=B/lr=..._seed=S_<trial_id>``, and its hparams (batch size,
LR, seed, status) when the trial ends. ``tensorboard --logdir RUN_DIR/tensorboard`` shows them.

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator("RUN_DIR/tensorboard/batch_size=16/lr=0.25_seed=0_ab12c_00000").Reload()
    [(e.step, e.value) for e in acc.Scalars("val_loss")]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.logger import TBXLoggerCallback

from orchestrator.tracking.common import STUDY_RUN, TrialWatch
from orchestrator.tune_config import config_of

LOG_DIR = "tensorboard"


def trial_dir(run_dir: Path, batch_size: int, lr: float, seed: int, trial_id: str) -> Path:
    """A trial's TensorBoard run: grouped by batch size, named by LR and seed."""
    return Path(run_dir) / LOG_DIR / f"batch_size={batch_size}" / f"lr={lr:.4g}_seed={seed}_{trial_id}"


class TensorBoardTracker(TBXLoggerCallback):
    """Tune callback: every trial a TensorBoard run of the curves' metrics."""

    def __init__(self, run_dir: Path, study: str, early_stopped: set[str]) -> None:
        super().__init__()  # tensorboardX's SummaryWriter, as Tune's own logger uses it
        self.run_dir = Path(run_dir)
        self.study = study
        self.watch = TrialWatch(early_stopped)
        self.writers: dict[str, Any] = {}
        self.last: dict[str, dict[str, float]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "writers": {}}  # open event files stay with this process

    def log_trial_start(self, trial: Trial) -> None:
        tid = trial.trial_id
        if tid not in self.writers:  # a new trial, or one resumed: appends to its run
            cfg = config_of(trial)
            path = trial_dir(self.run_dir, cfg.batch_size, cfg.lr, cfg.seed, tid)
            self.writers[tid] = self._summary_writer_cls(str(path), flush_secs=10)
            self.last.setdefault(tid, {})

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        self.log_trial_start(trial)
        got = self.watch.observe(trial.trial_id, result)
        if got is None:
            return
        step, values = got
        writer = self.writers[trial.trial_id]
        for key, value in values.items():
            writer.add_scalar(key, value, global_step=step)
        self.last[trial.trial_id].update(values)
        writer.flush()

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        writer = self.writers.pop(trial.trial_id, None)
        if writer is None:
            return
        cfg = config_of(trial)
        hparams = {
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "status": self.watch.status(trial.trial_id, failed),
        }
        write_hparams(writer, hparams, self.last.get(trial.trial_id, {}))
        writer.close()

    def get_state(self) -> dict[str, Any]:
        return {"watch": self.watch.state(), "last": self.last}

    def set_state(self, state: dict[str, Any]) -> None:
        self.watch.load(state["watch"])
        self.last = {k: dict(v) for k, v in state["last"].items()}


def write_hparams(writer: Any, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
    """TensorBoard's HPARAMS record of a run (what Tune's TBX logger writes at a trial's end)."""
    from tensorboardX.summary import hparams as hparams_summary

    for summary in hparams_summary(hparam_dict=hparams, metric_dict=metrics):
        writer.file_writer.add_summary(summary)


def log_study_run(
    run_dir: Path, scalars: dict[str, float], per_batch: dict[str, list[tuple[int, float]]], labels: dict[str, str]
) -> Path:
    """The fits as RUN_DIR/tensorboard/study: the study's numbers at step 0, the per-batch ones
    stepped by batch size, its words as text. Returns the run directory."""
    from tensorboardX import SummaryWriter

    path = Path(run_dir) / LOG_DIR / STUDY_RUN
    writer = SummaryWriter(str(path))
    try:
        for key, value in scalars.items():
            writer.add_scalar(key, value, global_step=0)
        for key, points in per_batch.items():
            for batch_size, value in points:
                writer.add_scalar(key, value, global_step=batch_size)
        for key, text in labels.items():
            writer.add_text(key, text, global_step=0)
    finally:
        writer.close()
    return path
