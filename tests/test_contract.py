"""Each rule of the trial contract exists once: the target check, the step/example cap
and the status decision give the same answer everywhere they are used (trainable, adapter,
scheduler, sink, progress, analysis), shown on their edge cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from ray.tune.experiment import Trial

from analysis.load import Run
from analysis.steps import trial_table
from orchestrator.grid import trial_config, trial_grid
from orchestrator.progress import ProgressCallback
from orchestrator.scheduler import PerBatchSizeASHA
from orchestrator.sink import ParquetSink
from orchestrator.study import load_study
from orchestrator.tune_config import CONFIG_KEY
from support import trial
from trainables import nqm
from trainables.contract import Target, TrialConfig, decide_status, step_cap


def _tune_trial(tid: str, cfg: TrialConfig) -> Trial:
    return Trial("fn", config={CONFIG_KEY: cfg.to_dict()}, trial_id=tid, stub=True)


def test_a_nan_metric_never_reaches_the_target_anywhere(tmp_path: Path) -> None:
    t = Target(metric="val_accuracy", mode="max", value=0.5)
    assert t.reached(0.6) and not t.reached(float("nan")) and not t.reached(None) and not t.reached(math.inf)
    assert list(t.reached(np.array([np.nan, 0.4, 0.7]))) == [False, False, True]
    cfg = trial(
        {
            "batch_size": 8,
            "lr": 0.1,
            "max_steps": 10,
            "target_metric": "val_accuracy",
            "target_mode": "max",
            "target_value": 0.5,
        }
    )
    assert not cfg.ends_at({"val_accuracy": float("nan")}) and cfg.ends_at({"val_accuracy": 0.6})

    # the progress display: a NaN result is no best value and no target reached
    study = load_study("fashion-mnist", budget="smoke")
    progress = ProgressCallback(tmp_path, study, set(), None)
    tr = _tune_trial("a", trial_config(study, trial_grid(study)[0]))
    progress.on_trial_result(0, [tr], tr, {"val_accuracy": float("nan"), "examples_seen": 10})
    assert progress.best == {} and progress.reached == {}

    # the analysis: the first crossing skips the NaN evaluation before it
    curves = pd.DataFrame(
        {
            "trial_id": "a",
            "batch_size": 16,
            "lr": 0.1,
            "seed": 0,
            "step": [1, 2, 3, 4],
            "examples_seen": [16, 32, 48, 64],
            "val_accuracy": [0.1, np.nan, 0.2, 0.9],
        }
    )
    trials = pd.DataFrame({"trial_id": ["a"], "batch_size": [16], "lr": [0.1], "seed": [0], "status": ["completed"]})
    run = Run(curves, trials, {"name": "x", "target": t.model_dump()}, tmp_path)
    row = trial_table(run).iloc[0]
    assert bool(row["reached"]) and 3 < row["steps_to_target"] <= 4  # a NaN "hit" would give <= 2


def test_one_cap_and_a_target_on_the_last_step() -> None:
    """The trainable, the study's examples cap, the scheduler's budget end and the
    progress budget all use ``step_cap``; a trial reaching the target exactly at its cap
    ends there, at the target, and is not early-stopped."""
    study = load_study(
        "nqm", overrides=["search.batch_sizes=[64]", "budget.max_steps=500", "budget.max_examples=20000"]
    )
    cap = step_cap(64, 500, 20_000)
    assert cap == 312 == 20_000 // 64
    assert study.budget.examples_cap(64) == cap * 64
    assert PerBatchSizeASHA.for_study(study)._max_t((64, 1.0)) == cap * 64
    cfg = trial_config(study, trial_grid(study)[0])
    assert cfg.step_cap == cap

    rows: list[dict] = []
    nqm.train(cfg, lambda m, checkpoint=None: rows.append(m))
    assert rows[-1]["step"] == cap and rows[-1]["examples_seen"] == cap * 64
    # a target met first on the very last evaluation
    target = Target(metric="val_loss", mode="min", value=rows[-1]["val_loss"])
    at_last = cfg.__class__(**{**cfg.__dict__, "target": target})
    assert [at_last.ends_at(r) for r in rows].index(True) == len(rows) - 1

    sched = PerBatchSizeASHA(
        metric="val_loss", mode="min", grace_examples=64, reduction_factor=3, max_examples_by_batch={64: cap * 64}
    )
    tr = _tune_trial("last", at_last)
    sched.on_trial_add(None, tr)
    assert sched.on_trial_result(None, tr, rows[-1]) == "STOP"  # the budget's end...
    assert sched.early_stopped == set()  # ...is not early stopping


def test_diverged_then_errored_is_diverged_in_the_sink_and_the_progress(tmp_path: Path) -> None:
    assert decide_status(diverged=True, errored=True, early_stopped=True) == "diverged"
    assert decide_status(diverged=False, errored=True, early_stopped=True) == "failed"
    assert decide_status(diverged=False, errored=False, early_stopped=True) == "early_stopped"
    assert decide_status(diverged=False, errored=False, early_stopped=False) == "completed"

    study = load_study("fashion-mnist", budget="smoke")
    tr = _tune_trial("d", trial_config(study, trial_grid(study)[0]))
    sink = ParquetSink(tmp_path, study.name)
    progress = ProgressCallback(tmp_path, study, set(), None)
    diverged_row = {"step": 3, "examples_seen": 48, "train_loss": float("inf"), "diverged": True}
    for cb in (sink, progress):
        cb.on_trial_result(0, [tr], tr, diverged_row)
    tr.status = Trial.ERROR  # then its code raised
    sink.on_trial_error(0, [tr], tr)
    sink.on_experiment_end([tr])
    status = pq.read_table(tmp_path / "trials.parquet").column("status").to_pylist()
    snap = progress.snapshot([tr], done=True)
    counts = {k: sum(b[k] for b in snap["batches"]) for k in ("diverged", "failed", "completed")}
    assert status == ["diverged"] and counts == {"diverged": 1, "failed": 0, "completed": 0}


def test_the_sink_writes_a_checkpointed_trial_before_tune_records_its_checkpoint(tmp_path: Path) -> None:
    # Rows after a trial's last checkpoint are reported again on a resume; rows up to it are
    # not, so they must be on disk when Tune saves the experiment state that names it.
    study = load_study("fashion-mnist", budget="smoke")
    first, second = (_tune_trial(n, trial_config(study, g)) for n, g in zip("ab", trial_grid(study)[:2], strict=True))
    sink = ParquetSink(tmp_path, study.name)
    for tr in (first, second):
        sink.on_trial_result(0, [first, second], tr, {"step": 1, "examples_seen": 16, "train_loss": 1.0})
    sink.on_trial_result(0, [first, second], first, {"step": 2, "examples_seen": 32, "checkpoint_dir_name": "c0"})
    sink.on_trial_result(0, [first, second], second, {"step": 2, "examples_seen": 32, "checkpoint_dir_name": None})
    sink.get_state()

    written = sink._path(sink.records[first.trial_id])
    assert pq.read_table(written).column("step").to_pylist() == [1, 2]
    assert not sink._path(sink.records[second.trial_id]).exists()  # within its first 30 s, not checkpointed
