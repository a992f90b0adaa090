"""What the trackers share: run names, tags and params of a trial, the watch over a trial's
steps and status, and RUN_DIR/tracking.json (where each tracker's study run is)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

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
