"""Loading runs and per-trial steps to target, on small hand-written curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import load_run, per_batch_summary
from analysis.load import RunError
from analysis.steps import trial_table

CURVE_TYPES = {
    "study": pa.string(),
    "trial_id": pa.string(),
    "batch_size": pa.int64(),
    "micro_batch_size": pa.int64(),
    "lr": pa.float64(),
    "seed": pa.int64(),
    "step": pa.int64(),
    "examples_seen": pa.int64(),
    "epoch": pa.float64(),
    "wall_time_s": pa.float64(),
    "train_loss": pa.float64(),
    "val_loss": pa.float64(),
    "val_accuracy": pa.float64(),
    "lr_current": pa.float64(),
    "grad_noise_scale": pa.float64(),
}


def write_study(run_dir: Path, metric: str = "val_accuracy", mode: str = "max", value: float = 0.85) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "study.toml").write_text(
        f'name = "hand"\ntrainable = "nqm"\n[search]\nbatch_sizes = [32, 64]\n'
        f"lr = {{ min = 0.01, max = 1.0, points = 3 }}\n"
        f'[target]\nmetric = "{metric}"\nmode = "{mode}"\nvalue = {value}\n'
    )


def write_trial(
    run_dir: Path,
    trial_id: str,
    batch_size: int,
    lr: float,
    steps: list[int],
    acc: list[float | None] | None = None,
    val_loss: list[float | None] | None = None,
    wall: list[float] | None = None,
    with_batch_column: bool = True,
    gns_type: pa.DataType = pa.float64(),
) -> None:
    n = len(steps)
    cols = {
        "study": ["hand"] * n,
        "trial_id": [trial_id] * n,
        "batch_size": [batch_size] * n,
        "micro_batch_size": [batch_size] * n,
        "lr": [lr] * n,
        "seed": [0] * n,
        "step": steps,
        "examples_seen": [s * batch_size for s in steps],
        "epoch": [s * batch_size / 6e4 for s in steps],
        "wall_time_s": wall or [float(s) / 10 for s in steps],
        "train_loss": [1.0 / (1 + s) for s in steps],
        "val_loss": val_loss or [1.2 / (1 + s) for s in steps],
        "val_accuracy": acc or [None] * n,
        "lr_current": [lr] * n,
        "grad_noise_scale": [None] * n,
    }
    schema = pa.schema([(k, gns_type if k == "grad_noise_scale" else t) for k, t in CURVE_TYPES.items()])
    table = pa.table({k: pa.array(v, schema.field(k).type) for k, v in cols.items()}, schema=schema)
    if not with_batch_column:
        table = table.drop_columns(["batch_size"])
    part = run_dir / "curves" / f"batch_size={batch_size}"
    part.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, part / f"{trial_id}.parquet")


def test_crossing_is_interpolated_linearly_in_log_step(tmp_path: Path) -> None:
    write_study(tmp_path)
    write_trial(tmp_path, "a", 32, 0.1, [10, 100, 1000], acc=[0.8, 0.9, 0.95], wall=[1.0, 10.0, 100.0])
    t = trial_table(load_run(tmp_path)).set_index("trial_id")
    # 0.85 is half-way from 0.8 to 0.9, so half-way in log step: sqrt(10 * 100).
    assert t.loc["a", "steps_to_target"] == pytest.approx(math.sqrt(1000))
    assert t.loc["a", "examples_to_target"] == pytest.approx(32 * math.sqrt(1000))
    assert t.loc["a", "wall_time_to_target_s"] == pytest.approx(1.0 + (math.sqrt(1000) - 10) / 90 * 9)
    assert bool(t.loc["a", "reached"])


def test_first_evaluation_already_past_target_gives_that_step(tmp_path: Path) -> None:
    write_study(tmp_path)
    write_trial(tmp_path, "a", 32, 0.1, [50, 100], acc=[0.9, 0.95])
    t = trial_table(load_run(tmp_path)).set_index("trial_id")
    assert t.loc["a", "steps_to_target"] == 50


def test_min_mode_skips_null_validation_rows(tmp_path: Path) -> None:
    write_study(tmp_path, metric="val_loss", mode="min", value=0.7)
    # Validation only every other report: the crossing is between steps 20 and 40.
    write_trial(tmp_path, "a", 64, 0.1, [10, 20, 30, 40], val_loss=[None, 1.0, None, 0.4])
    t = trial_table(load_run(tmp_path)).set_index("trial_id")
    assert t.loc["a", "steps_to_target"] == pytest.approx(math.exp(math.log(20) + 0.5 * math.log(2)))


def test_never_reached_and_diverged_trials_do_not_reach(tmp_path: Path) -> None:
    write_study(tmp_path)
    write_trial(tmp_path, "slow", 32, 0.01, [10, 100], acc=[0.5, 0.6])
    write_trial(tmp_path, "boom", 32, 1.0, [10, 100], acc=[0.9, None])
    write_trial(tmp_path, "ok", 32, 0.1, [10, 100], acc=[0.8, 0.9])
    trials = pa.table(
        {
            "trial_id": ["slow", "boom", "ok", "lost"],
            "study": ["hand"] * 4,
            "batch_size": [32, 32, 32, 32],
            "lr": [0.01, 1.0, 0.1, 0.3],
            "seed": [0, 0, 0, 0],
            "status": ["early_stopped", "diverged", "completed", "failed"],
            "sharpness": pa.array([None, None, 3.0, None], pa.float64()),
        }
    )
    pq.write_table(trials, tmp_path / "trials.parquet")
    t = trial_table(load_run(tmp_path)).set_index("trial_id")
    assert not t.loc["slow", "reached"] and np.isnan(t.loc["slow", "steps_to_target"])
    # The curve crossed 0.85 before diverging; a diverged trial still never counts.
    assert not t.loc["boom", "reached"]
    assert t.loc["ok", "reached"]
    summary = per_batch_summary(load_run(tmp_path)).set_index("batch_size")
    # "lost" failed before writing any curve: it was tried, so it counts.
    assert summary.loc[32, "trials"] == 4
    assert summary.loc[32, "reached"] == 1
    assert summary.loc[32, "best_trial_id"] == "ok"


def test_loader_reads_partition_key_and_unifies_schemas(tmp_path: Path) -> None:
    write_study(tmp_path)
    write_trial(tmp_path, "a", 32, 0.1, [10, 100], acc=[0.8, 0.9], with_batch_column=False, gns_type=pa.null())
    write_trial(tmp_path, "b", 64, 0.1, [10, 100], acc=[0.8, 0.9])
    run = load_run(tmp_path)
    assert run.curves["batch_size"].dtype == np.int64
    assert sorted(run.curves["batch_size"].unique().tolist()) == [32, 64]
    assert run.curves["grad_noise_scale"].dtype == np.float64
    assert run.study["target"]["metric"] == "val_accuracy"


def test_without_trials_parquet_every_trial_is_completed(tmp_path: Path) -> None:
    write_study(tmp_path)
    write_trial(tmp_path, "a", 32, 0.1, [10, 100], acc=[0.8, 0.9])
    write_trial(tmp_path, "b", 32, 0.3, [10, 100], acc=[0.5, 0.6])
    run = load_run(tmp_path)
    assert run.trials_synthesised
    assert run.trials is not None
    assert set(run.trials["status"]) == {"completed"}
    assert sorted(run.trials["trial_id"]) == ["a", "b"]
    assert run.trials.set_index("trial_id").loc["a", "steps"] == 100


def test_bad_inputs_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="study.toml"):
        load_run(tmp_path)
    write_study(tmp_path)
    with pytest.raises(RunError, match="curves"):
        load_run(tmp_path)
    write_trial(tmp_path, "a", 32, 0.1, [10], acc=[0.8])
    (tmp_path / "study.toml").write_text('name = "x"\n[target]\nmetric = "val_top5"\nmode = "max"\nvalue = 0.5\n')
    with pytest.raises(RunError, match="val_top5"):
        load_run(tmp_path)
