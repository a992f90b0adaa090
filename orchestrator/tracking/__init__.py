"""Experiment trackers: every trial one run in MLflow, TensorBoard or W&B, and the study's fits
(RUN_DIR/report/fits.json) as a study run after the report.

The study's ``[tracking]`` table (``orchestrator.study.Tracking``) turns them on:

    [tracking]
    mlflow = true          # a file store under RUN_DIR/mlruns, or a tracking URI string
    tensorboard = true     # event files under RUN_DIR/tensorboard
    wandb = "offline"      # W&B offline files under RUN_DIR/wandb ("online" only if asked)

Each tracker is Ray Tune's own integration (``MLflowLoggerCallback``, ``TBXLoggerCallback``,
``WandbLoggerCallback``) subclassed so that a run holds what the curves hold: the contract's
metrics with the trial's ``step`` as the step, tagged with batch size, LR, seed and, when the
trial ends, its status (the sink's rule, ``trainables.contract.decide_status``). A step
Tune reports again after a resume is not logged twice.

    from orchestrator.tracking import tracker_callbacks, log_fits
    callbacks += tracker_callbacks(study, run_dir, early_stopped)   # orchestrator.sweep
    log_fits(study, run_dir, report_dir)                             # orchestrator.run

The trackers' packages are imported only when a study turns them on; a study that names one
that is not installed is refused at launch (``Tracking``'s validation).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ray.tune import Callback

from orchestrator.study import Study
from trainables.contract import METRIC_COLUMNS, TrialConfig, decide_status, write_atomic

TRACKING_FILE = "tracking.json"
"""RUN_DIR/tracking.json: where each tracker's study run is (MLflow URI, experiment, run id)."""

STUDY_RUN = "study"
"""The name of the run that holds the fits (TensorBoard's run directory, W&B's run name)."""


def run_name(cfg: TrialConfig, trial_id: str) -> str:
    """One trial's run name in every tracker."""
    return f"B={cfg.batch_size} lr={cfg.lr:.4g} seed={cfg.seed} ({trial_id})"


def trial_tags(cfg: TrialConfig, trial_id: str, study: str) -> dict[str, Any]:
    """What every tracker tags a trial's run with (``status`` is added when it ends)."""
    return {"study": study, "trial_id": trial_id, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed}


def trial_params(cfg: TrialConfig) -> dict[str, Any]:
    """The trial's hyperparameters as flat scalars (MLflow params, W&B config)."""
    return {
        "batch_size": cfg.batch_size,
        "micro_batch_size": cfg.micro_batch_size,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "optimizer": cfg.optimizer,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "warmup_examples": cfg.warmup_examples,
        "max_steps": cfg.max_steps,
        "max_examples": cfg.max_examples,
        "target": f"{cfg.target.metric} {'>=' if cfg.target.mode == 'max' else '<='} {cfg.target.value:g}",
    }


class TrialWatch:
    """What a tracker needs of each trial's results: the metrics of each new step, and the
    trial's status at its end (diverged, failed, early-stopped by the scheduler or completed)."""

    def __init__(self, early_stopped: set[str]) -> None:
        self.early_stopped = early_stopped  # shared with the scheduler, as the sink's
        self.last_step: dict[str, int] = {}
        self.diverged: set[str] = set()
        self.errored: set[str] = set()

    def observe(self, trial_id: str, result: dict[str, Any]) -> tuple[int, dict[str, float]] | None:
        """The step and finite metrics of a result, or None (no step, or a step logged already)."""
        if result.get("diverged"):
            self.diverged.add(trial_id)
        if result.get("error"):
            self.errored.add(trial_id)
        if "step" not in result:
            return None
        step = int(result["step"])
        if step <= self.last_step.get(trial_id, -1):
            return None
        self.last_step[trial_id] = step
        metrics = {}
        for col in (*METRIC_COLUMNS, "examples_seen"):
            v = result.get(col)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                metrics[col] = float(v)
        return step, metrics

    def status(self, trial_id: str, failed: bool = False) -> str:
        return decide_status(
            diverged=trial_id in self.diverged,
            errored=failed or trial_id in self.errored,
            early_stopped=trial_id in self.early_stopped,
        )

    def state(self) -> dict[str, Any]:
        return {"last_step": dict(self.last_step), "diverged": sorted(self.diverged), "errored": sorted(self.errored)}

    def load(self, state: dict[str, Any]) -> None:
        self.last_step = {k: int(v) for k, v in state["last_step"].items()}
        self.diverged, self.errored = set(state["diverged"]), set(state["errored"])


def mlflow_uri(setting: bool | str, run_dir: Path) -> str:
    """``mlflow = true``: a file store under RUN_DIR/mlruns; a string: that tracking URI."""
    uri = (Path(run_dir).resolve() / "mlruns").as_uri() if setting is True else str(setting)
    if uri.startswith("file:") or "://" not in uri:
        # MLflow 3 refuses its file store unless asked (it recommends a database): asked here.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def project_of(study: Study) -> str:
    return study.tracking.project or study.name


def read_record(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / TRACKING_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_record(run_dir: Path, tracker: str, entry: dict[str, Any]) -> None:
    write_atomic(Path(run_dir) / TRACKING_FILE, json.dumps({**read_record(run_dir), tracker: entry}, indent=1))


def tracker_callbacks(study: Study, run_dir: Path, early_stopped: set[str]) -> list[Callback]:
    """The Tune callbacks of the trackers ``study.tracking`` turns on (none by default)."""
    t, run_dir = study.tracking, Path(run_dir)
    out: list[Callback] = []
    if t.mlflow is not False:
        from .mlflow_tracker import MlflowTracker

        out.append(MlflowTracker(mlflow_uri(t.mlflow, run_dir), project_of(study), run_dir, study.name, early_stopped))
    if t.tensorboard:
        from .tensorboard_tracker import TensorBoardTracker

        out.append(TensorBoardTracker(run_dir, study.name, early_stopped))
    if t.wandb is not False:
        from .wandb_tracker import WandbTracker

        out.append(WandbTracker(run_dir, t.wandb, project_of(study), study.name, early_stopped))
    return out


def flatten_fits(fits: dict[str, Any]) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]], dict[str, str]]:
    """fits.json as tracker metrics: the study's numbers by dotted key, the per-batch numbers as
    ``key -> [(batch_size, value)]``, and its words and yes/no answers as labels."""
    scalars: dict[str, float] = {}
    labels: dict[str, str] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        elif isinstance(v, list) and len(v) == 2 and prefix.endswith("ci95"):
            walk(f"{prefix}_low", v[0])
            walk(f"{prefix}_high", v[1])
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(f"{prefix}.{i}", x)
        elif isinstance(v, bool | str):
            labels[prefix] = str(v).lower() if isinstance(v, bool) else v
        elif isinstance(v, int | float) and math.isfinite(v):
            scalars[prefix] = float(v)

    walk("", {k: v for k, v in fits.items() if k != "per_batch"})
    per_batch: dict[str, list[tuple[int, float]]] = {}
    for row in sorted(fits.get("per_batch", []), key=lambda r: r["batch_size"]):
        for k, v in row.items():
            if k != "batch_size" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                per_batch.setdefault(f"per_batch.{k}", []).append((int(row["batch_size"]), float(v)))
    return scalars, per_batch, labels


def log_fits(study: Study, run_dir: Path, report_dir: Path) -> None:
    """Log ``report_dir/fits.json`` to the study run of every tracker the study turns on:
    the numbers as metrics (per-batch ones with the batch size as the step)."""
    t, run_dir = study.tracking, Path(run_dir)
    if t.mlflow is False and not t.tensorboard and t.wandb is False:
        return
    fits = json.loads((Path(report_dir) / "fits.json").read_text())
    scalars, per_batch, labels = flatten_fits(fits)
    if t.mlflow is not False:
        from .mlflow_tracker import log_study_run as mlflow_study

        mlflow_study(
            run_dir,
            mlflow_uri(t.mlflow, run_dir),
            project_of(study),
            study.name,
            scalars,
            per_batch,
            labels,
            Path(report_dir),
        )
    if t.tensorboard:
        from .tensorboard_tracker import log_study_run as tensorboard_study

        tensorboard_study(run_dir, scalars, per_batch, labels)
    if t.wandb is not False:
        from .wandb_tracker import log_study_run as wandb_study

        wandb_study(run_dir, t.wandb, project_of(study), scalars, per_batch, labels)
