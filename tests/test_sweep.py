"""The sweep through real Ray Tune: per-batch-size ASHA and the Parquet sink."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.local import local_ray
from orchestrator.study import Study, validate
from orchestrator.sweep import run_sweep
from support import write_tiny_fashion_mnist
from trainables.contract import CURVES_SCHEMA, TRIALS_SCHEMA, read_curves

CAP = 2**18


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    with local_ray(num_cpus=2):  # private token and temp dir, as a local run has
        yield


def nqm_study(per_batch_size: bool) -> Study:
    """Large batches are far worse per example early on: at the first rung (8192
    examples) B=1024 has taken 8 steps, B=4 has taken 2048."""
    return validate(
        {
            "name": "nqm-asha",
            "trainable": "nqm",
            "trainable_config": {"dim": 1000},
            "search": {"batch_sizes": [4, 64, 1024], "lr": {"min": 0.01, "max": 1.0, "points": 4}, "momentum": 0.0},
            "budget": {"max_examples": CAP, "stop_at_target": False},
            "target": {"metric": "val_loss", "mode": "min", "value": 0.01},
            "early_stopping": {
                "scheduler": "asha",
                "per_batch_size": per_batch_size,
                "metric": "val_loss",
                "mode": "min",
                "grace_examples": 8192,
                "reduction_factor": 3,
            },
        }
    )


def finished_at_cap(run_dir: Path) -> dict[int, int]:
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    full = trials[(trials.status == "completed") & (trials.examples_seen >= CAP)]
    return {int(b): int((full.batch_size == b).sum()) for b in sorted(trials.batch_size.unique())}


def test_asha_per_batch_size_carries_every_batch_size_to_the_end(tmp_path: Path) -> None:
    run_sweep(nqm_study(per_batch_size=True), tmp_path / "per_b")
    per_b = finished_at_cap(tmp_path / "per_b")
    assert set(per_b) == {4, 64, 1024}, per_b  # every batch size of the study has trials
    assert all(n >= 1 for n in per_b.values()), per_b
    statuses = pq.read_table(tmp_path / "per_b" / "trials.parquet").column("status").to_pylist()
    assert "early_stopped" in statuses  # ASHA did prune, within each batch size

    # The same study with one shared ASHA state loses the largest batch size entirely:
    # the bias the per-batch-size scheduler exists to remove.
    run_sweep(nqm_study(per_batch_size=False), tmp_path / "shared")
    shared = finished_at_cap(tmp_path / "shared")
    assert set(shared) == {4, 64, 1024}, shared
    assert shared[1024] == 0, shared


def test_sink_schema_unique_and_readable_while_running(tmp_path: Path) -> None:
    data = write_tiny_fashion_mnist(tmp_path / "data", n=3000)
    study = validate(
        {
            "name": "sink-test",
            "trainable": "fashion_mnist",
            "trainable_config": {"data_dir": str(data), "val_size": 500, "hidden": 64},
            "search": {"batch_sizes": [8, 64], "lr": {"min": 0.005, "max": 0.02, "points": 2}},
            "budget": {"max_examples": 40000, "stop_at_target": False},
            "target": {"metric": "val_accuracy", "mode": "max", "value": 0.99},
            "early_stopping": {"scheduler": "none"},
        }
    )
    run_dir = tmp_path / "run"
    reads: list[dict[str, int]] = []  # per read while the sweep runs: rows per trial
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            if (run_dir / "curves").is_dir():
                try:
                    ids = read_curves(str(run_dir / "curves")).column("trial_id").to_pylist()
                    reads.append(dict(Counter(ids)))
                except BaseException as e:  # noqa: BLE001 - any failure to read is the finding
                    errors.append(e)
            time.sleep(0.2)

    t = threading.Thread(target=reader)
    t.start()
    try:
        run_sweep(study, run_dir, flush_every_s=0.5)  # trials of seconds: rewrite them while they run
    finally:
        done.set()
        t.join()
    assert not errors, errors[:3]
    final = read_curves(str(run_dir / "curves"))
    final_rows = dict(Counter(final.column("trial_id").to_pylist()))
    totals = [sum(r.values()) for r in reads]
    assert max(totals) <= final.num_rows
    assert any(0 < n < final.num_rows for n in totals), f"no partial read while the sweep ran: {totals}"
    # and a curve is readable while its own trial runs: some read saw a trial's file with
    # some of its rows but not all (a sink that wrote each curve only when its trial ended
    # would pass the check above, not this one)
    partial = [(t, n) for r in reads for t, n in r.items() if 0 < n < final_rows[t]]
    assert partial, f"no trial's curve was ever read part-way: {reads[-3:]} vs {final_rows}"
    assert all(n <= final_rows[t] for r in reads for t, n in r.items())
    assert final.schema == CURVES_SCHEMA
    df = final.to_pandas()
    assert not df.duplicated(["trial_id", "step"]).any()
    assert sorted(df.batch_size.unique()) == [8, 64]
    assert (df.examples_seen == df.step * df.batch_size).all()
    assert df.groupby("trial_id").step.max().eq(40000 // df.groupby("trial_id").batch_size.first()).all()
    assert sorted(p.name for p in (run_dir / "curves").iterdir()) == ["batch_size=64", "batch_size=8"]
    assert not list((run_dir / "curves").rglob("*.tmp"))
    trials = pq.read_table(run_dir / "trials.parquet")
    assert trials.schema == TRIALS_SCHEMA
    assert trials.num_rows == 4
    assert set(trials.column("status").to_pylist()) == {"completed"}


def test_diverged_trial_is_recorded_under_asha(tmp_path: Path) -> None:
    """A trial that diverges ends at once and is `diverged`; the sweep goes on."""
    data = write_tiny_fashion_mnist(tmp_path / "data", n=2000)
    study = validate(
        {
            "name": "diverge",
            "trainable": "fashion_mnist",
            "trainable_config": {"data_dir": str(data), "val_size": 500, "hidden": 32, "sharpness_examples": 0},
            "search": {"batch_sizes": [32], "lr": {"min": 0.01, "max": 30.0, "points": 2}},
            "budget": {"max_examples": 20000, "stop_at_target": False},
            "target": {"metric": "val_accuracy", "mode": "max", "value": 0.99},
            "early_stopping": {"scheduler": "asha", "grace_examples": 2000, "reduction_factor": 3},
        }
    )
    run_sweep(study, tmp_path / "run")
    trials = pq.read_table(tmp_path / "run" / "trials.parquet").to_pandas().set_index("lr")
    assert trials.loc[30.0, "status"] == "diverged"
    assert trials.loc[30.0, "steps"] < 20000 // 32
    assert trials.loc[0.01, "status"] == "completed" and trials.loc[0.01, "steps"] == 20000 // 32
    curves = read_curves(str(tmp_path / "run" / "curves")).to_pandas()
    rows = curves[curves.lr == 30.0].sort_values("step")
    first, last = rows.iloc[0], rows.iloc[-1]
    assert not last.train_loss < 10 * first.train_loss  # the blow-up is in the curve (or NaN)
