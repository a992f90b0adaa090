"""MLflow: one run per trial, children of one study run that gets the fits after the report.

Ray Tune's ``MLflowLoggerCallback`` sets the tracking URI and creates (or reuses) the
experiment; this subclass logs what the curves hold, with ``step`` as the step, through one
``MlflowClient.log_batch`` per result, and keeps trial -> run across ``--resume`` (Tune
restores it with the callback's state). The study run's id is in RUN_DIR/tracking.json.

    from mlflow.tracking import MlflowClient       # reading it back
    client = MlflowClient("file:///abs/RUN_DIR/mlruns")   # MLFLOW_ALLOW_FILE_STORE=true (MLflow 3)
    exp = client.get_experiment_by_name("nqm")
    runs = client.search_runs([exp.experiment_id], "tags.batch_size = '16'")
    client.get_metric_history(runs[0].info.run_id, "val_loss")     # .step, .value
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.experiment import Trial

from orchestrator.tracking.common import (
    STUDY_RUN,
    TrialWatch,
    read_record,
    run_name,
    trial_params,
    trial_tags,
    write_record,
)
from orchestrator.tune_config import config_of

PARENT_TAG = "mlflow.parentRunId"


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _metrics(values: dict[str, float], step: int) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, now, step) for k, v in values.items()]


def _experiment(client: Any, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else client.create_experiment(name)


def study_run(run_dir: Path, uri: str, experiment: str, study: str) -> str:
    """The study run of RUN_DIR (made on first use, its id kept in RUN_DIR/tracking.json)."""
    rec = read_record(run_dir).get("mlflow", {})
    if rec.get("tracking_uri") == uri and rec.get("run_id"):
        return str(rec["run_id"])
    client = _client(uri)
    exp_id = _experiment(client, experiment)
    run = client.create_run(
        exp_id,
        run_name=f"{study} ({Path(run_dir).resolve().name})",
        tags={"study": study, "run_dir": str(Path(run_dir).resolve()), "kind": STUDY_RUN},
    )
    write_record(
        run_dir,
        "mlflow",
        {"tracking_uri": uri, "experiment": experiment, "experiment_id": exp_id, "run_id": run.info.run_id},
    )
    return str(run.info.run_id)


class MlflowTracker(MLflowLoggerCallback):
    """Tune callback: every trial an MLflow run under the study run."""

    def __init__(self, tracking_uri: str, experiment: str, run_dir: Path, study: str, early_stopped: set[str]) -> None:
        super().__init__(tracking_uri, experiment_name=experiment)
        self.run_dir = Path(run_dir)
        self.study = study
        self.watch = TrialWatch(early_stopped)
        self.run_ids: dict[str, str] = {}
        self.parent_id: str | None = None
        self._mlflow_client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_mlflow_client": None}  # a client holds a store: made anew

    @property
    def client(self) -> Any:
        if self._mlflow_client is None:
            self._mlflow_client = _client(str(self.tracking_uri))
        return self._mlflow_client

    def setup(self, *args: Any, **kwargs: Any) -> None:
        super().setup(*args, **kwargs)  # the tracking URI, and the experiment made if new
        self.parent_id = study_run(self.run_dir, str(self.tracking_uri), str(self.experiment_name), self.study)

    def log_trial_start(self, trial: Trial) -> None:
        tid = trial.trial_id
        if tid in self.run_ids:  # unpaused, retried or resumed: the same run goes on
            return
        cfg = config_of(trial)
        client = self.client
        tags = {k: str(v) for k, v in trial_tags(cfg, tid, self.study).items()}
        if self.parent_id:
            tags[PARENT_TAG] = self.parent_id
        run = client.create_run(self.mlflow_util.experiment_id, run_name=run_name(cfg, tid), tags=tags)
        self.run_ids[tid] = run.info.run_id
        from mlflow.entities import Param

        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in trial_params(cfg).items()])

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        if trial.trial_id not in self.run_ids:
            self.log_trial_start(trial)
        got = self.watch.observe(trial.trial_id, result)
        if got is not None and got[1]:
            step, values = got
            self.client.log_batch(self.run_ids[trial.trial_id], metrics=_metrics(values, step))

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        run_id = self.run_ids.get(trial.trial_id)
        if run_id is None:
            return
        status = self.watch.status(trial.trial_id, failed)
        self.client.set_tag(run_id, "status", status)
        self.client.set_terminated(run_id, "FAILED" if status == "failed" else "FINISHED")

    def get_state(self) -> dict[str, Any]:
        return {"run_ids": dict(self.run_ids), "watch": self.watch.state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.run_ids = dict(state["run_ids"])
        self.watch.load(state["watch"])


def log_study_run(
    run_dir: Path,
    uri: str,
    experiment: str,
    study: str,
    scalars: dict[str, float],
    per_batch: dict[str, list[tuple[int, float]]],
    labels: dict[str, str],
    report_dir: Path,
) -> str:
    """The fits as the study run's metrics (per-batch ones stepped by batch size), its words as
    tags, fits.json and report.pdf as artifacts; the run ends FINISHED. Returns its id."""
    run_id = study_run(run_dir, uri, experiment, study)
    client = _client(uri)
    metrics = _metrics(scalars, 0)
    for key, points in per_batch.items():
        metrics += [m for b, v in points for m in _metrics({key: v}, b)]
    for i in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    for key, text in labels.items():
        client.set_tag(run_id, key, text[:5000])
    for name in ("fits.json", "report.pdf", "report.md"):
        if (Path(report_dir) / name).is_file():
            client.log_artifact(run_id, str(Path(report_dir) / name))
    client.set_terminated(run_id, "FINISHED")
    return run_id
