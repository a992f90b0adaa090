"""Run a study's sweep with Ray Tune into a run directory (local or inside a Slurm job).

    from pathlib import Path
    from cluster.local import local_ray
    from orchestrator.study import load_study
    from orchestrator.sweep import run_sweep
    with local_ray():
        run_sweep(load_study("fashion-mnist", budget="smoke"), Path("runs/try"))

Ray must be connected: the local back-end starts a private one on this machine
(``cluster.local.local_ray``), a Slurm job connects to its own head node
(``cluster.ray_spec.connect``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

# Tune's default CSV/JSON/TensorBoard loggers would write every result a second time.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# A diverged trial's last result has no validation metrics (it was not evaluated); ASHA
# treats a missing metric as "continue" and the trial ends by itself. Tune's strict check
# would instead fail the whole sweep.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Keeping one checkpoint per trial makes Tune snapshot its state after each new one; that
# is the point (a resumed trial loses little), so its warning about it is noise here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402

from orchestrator.adapter import tune_trainable  # noqa: E402
from orchestrator.adaptive import tune_search  # noqa: E402
from orchestrator.errors import SweepInterrupted  # noqa: E402
from orchestrator.grid import start_order, trial_config  # noqa: E402
from orchestrator.lr_spec import LrRangeTest  # noqa: E402
from orchestrator.progress import LiveDisplay, ProgressCallback  # noqa: E402
from orchestrator.rundir import tune_dir  # noqa: E402
from orchestrator.scheduler import (  # noqa: E402
    EarlyStoppingScheduler,
    PerBatchSizeASHA,
    PerBatchSizeSHA,
    make_scheduler,
)
from orchestrator.sink import ParquetSink  # noqa: E402
from orchestrator.study import Resources, Study  # noqa: E402
from orchestrator.tracking import tracker_callbacks  # noqa: E402
from orchestrator.tune_config import CONFIG_KEY  # noqa: E402
from trainables.contract import write_atomic  # noqa: E402
from trainables.registry import resolve  # noqa: E402

EXPERIMENT = "sweep"
MAX_INFRA_FAILURES = 3
# The sweep keeps its results in RUN_DIR/curves, not in Tune's per-trial result files
# (disabled above), so Tune's end-of-run analysis has nothing to read: not a problem.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


EARLY_STOPPING_RECORD = Path("tune") / "early_stopping.json"


class SchedulerState(tune.Callback):
    """Carries the scheduler's state through Tune's experiment checkpoints, and writes what
    early stopping did to ``RUN_DIR/tune/early_stopping.json`` (``scheduler.record()``) on
    every snapshot and at the end, for the progress display's readers and the report.

    Tune checkpoints and restores callback state (``get_state``/``set_state``) but not a
    scheduler's, so this callback does it for the scheduler it holds.
    """

    def __init__(self, scheduler: EarlyStoppingScheduler, run_dir: Path | None = None) -> None:
        self.scheduler = scheduler
        self.run_dir = None if run_dir is None else Path(run_dir)

    def write_record(self) -> None:
        if self.run_dir is not None:
            write_atomic(self.run_dir / EARLY_STOPPING_RECORD, json.dumps(self.scheduler.record(), indent=1))

    def get_state(self) -> dict[str, Any] | None:
        self.write_record()
        return self.scheduler.state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state(state)

    def on_experiment_end(self, trials: list[tune.experiment.Trial], **info: Any) -> None:
        self.write_record()


def trial_name(trial: tune.experiment.Trial) -> str:
    # Tune's default names spell out the whole config: too long for a directory name.
    return trial.trial_id


def run_config(name: str, storage: Path, callbacks: list[tune.Callback]) -> tune.RunConfig:
    """Where an experiment of the run keeps its state, what it calls, and how it keeps and
    retries trials (the sweep's and each branching phase's)."""
    return tune.RunConfig(
        name=name,
        storage_path=str(storage),
        callbacks=callbacks,
        verbose=0,
        # 2, not 1: a hard kill between a new trial checkpoint and the experiment snapshot
        # would leave the snapshot naming a checkpoint already deleted
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        # Retries are for what kills a trial from outside (a lost node, a killed worker):
        # the trial's own exceptions end it as failed in the adapter, unretried.
        failure_config=tune.FailureConfig(max_failures=MAX_INFRA_FAILURES),
    )


def trial_resources(res: Resources) -> dict[str, float] | tune.PlacementGroupFactory:
    """What Tune reserves for one trial: its CPUs and GPUs, or, for N data-parallel workers,
    a placement group of an empty head bundle (the Tune function, which only relays rank
    0's reports) and one bundle per worker, packed onto as few nodes as hold them."""
    if res.workers_per_trial == 1:
        return {"cpu": res.worker_cpus, "gpu": res.worker_gpus}
    bundle = {"CPU": res.worker_cpus, **({"GPU": res.worker_gpus} if res.worker_gpus else {})}
    return tune.PlacementGroupFactory([{}] + [bundle] * res.workers_per_trial, strategy="PACK")


def run_sweep(
    study: Study,
    run_dir: Path,
    *,
    resume: bool = False,
    display: LiveDisplay | None = None,
    checkpoint_every_s: float = 60.0,
    flush_every_s: float = 30.0,
) -> Path:
    """Run (or resume) every trial of ``study`` on the connected Ray; returns
    RUN_DIR/trials.parquet. ``flush_every_s``: how often a running trial's curve is
    rewritten on disk (``orchestrator.sink``; a trial's end and its checkpoints are written
    whatever it is).

    Raises ``SweepInterrupted`` when Tune stopped early (Ctrl-C, SIGTERM): the curves so
    far and Tune's state are saved, and ``resume=True`` continues from them.
    """
    if not ray.is_initialized():
        raise RuntimeError("run_sweep needs a connected Ray (cluster.local.local_ray, or a Slurm job's)")
    lr = study.search.lr
    if isinstance(lr, LrRangeTest) and lr.centres is None:
        raise RuntimeError("run_sweep needs the range tests' centres (orchestrator.range_test.centred)")
    run_dir = Path(run_dir)
    trials = run_dir / "trials.parquet"
    if resume and trials.is_file():
        return trials  # the sweep had finished (a resume for what came after it: branching, the report)
    # Tune logs the whole traceback of every failed trial task (a lost node, a worker's full
    # disk); it is in the trial's error.txt, and the progress callback says it in one line.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    scheduler = make_scheduler(study)
    # A synchronous rung pauses trials: they checkpoint there, to resume without repeating work.
    at = scheduler.rung_positions() if isinstance(scheduler, PerBatchSizeSHA) else None
    trainable = tune.with_resources(
        tune_trainable(resolve(study.trainable), checkpoint_every_s, checkpoint_at=at),
        trial_resources(study.resources),
    )
    path = tune_dir(run_dir) / EXPERIMENT
    if resume and tune.Tuner.can_restore(str(path)):
        # Tune restores the scheduler and the callbacks (sink, progress, scheduler state)
        # pickled with the experiment, so nothing is built here.
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = _new_tuner(study, run_dir, trainable, scheduler, display, flush_every_s)
    # trials.parquet is written only when every trial has ended (by the sink, which after a
    # restore is Tune's unpickled copy): its presence is the verdict.
    trials.unlink(missing_ok=True)
    tuner.fit()
    if not trials.is_file():
        raise SweepInterrupted(f"the sweep stopped before every trial finished; continue it with --resume {run_dir}")
    return trials


def _new_tuner(
    study: Study,
    run_dir: Path,
    trainable: Any,
    scheduler: tune.schedulers.TrialScheduler,
    display: LiveDisplay | None,
    flush_every_s: float,
) -> tune.Tuner:
    stopping = scheduler if isinstance(scheduler, PerBatchSizeASHA | PerBatchSizeSHA) else None
    early = stopping.early_stopped if stopping else set()
    callbacks: list[tune.Callback] = [
        ParquetSink(run_dir, study.name, early_stopped=early, flush_every_s=flush_every_s),
        ProgressCallback(run_dir, study, early, display, stopped_at=stopping.stopped_at if stopping else None),
    ]
    if stopping:
        callbacks.append(SchedulerState(stopping, run_dir))
    callbacks += tracker_callbacks(study, run_dir, early)  # the study's [tracking], after the sink
    # One grid_search over the configs: Tune creates (and, through the scheduler's
    # choose_trial_to_run, starts) the trials in this list's order.
    points = [trial_config(study, p).to_dict() for p in start_order(study)]
    space: dict[str, Any] = {CONFIG_KEY: tune.grid_search(points)}
    search: dict[str, Any] = {"num_samples": 1}
    if study.search.strategy == "adaptive":
        # The searcher suggests each trial's config itself (orchestrator.adaptive).
        space, search = {}, tune_search(study, run_dir)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            **search,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=run_config(EXPERIMENT, tune_dir(run_dir), callbacks),
    )
