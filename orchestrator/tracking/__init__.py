"""Experiment trackers: every trial one run in MLflow, TensorBoard or W&B, and the study's fits
(RUN_DIR/report/fits.json) as a study run after the report.

The study's ``[tracking]`` table (``orchestrator.tracking_spec.Tracking``) turns them on:

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
from pathlib import Path
from typing import Any

from ray.tune import Callback

from orchestrator.study import Study
from orchestrator.tracking.common import mlflow_uri, project_of


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
