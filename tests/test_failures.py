"""Failing trials through real Ray Tune: a trial whose code raises is ``failed`` with the
exception's last line, is not retried, and the sweep goes on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cluster.local import local_ray
from orchestrator.study import validate
from orchestrator.sweep import run_sweep


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    with local_ray(num_cpus=2):
        yield


def test_a_raising_trial_is_failed_with_its_reason_and_not_retried(tmp_path: Path) -> None:
    # nqm refuses adamw in its first line: a deterministic bug of the trial's own code
    study = validate(
        {
            "name": "fails",
            "trainable": "nqm",
            "trainable_config": {"dim": 100},
            "search": {"batch_sizes": [8, 64], "lr": {"min": 0.1, "max": 0.1, "points": 1}, "optimizer": "adamw"},
            "budget": {"max_steps": 50},
            "target": {"metric": "val_loss", "mode": "min", "value": 0.0},
            "early_stopping": {"scheduler": "none"},
        }
    )
    run_sweep(study, tmp_path / "run")
    trials = pq.read_table(tmp_path / "run" / "trials.parquet").to_pandas()
    assert sorted(trials.batch_size) == [8, 64]
    assert set(trials.status) == {"failed"}
    assert set(trials.error) == {
        "ValueError: nqm supports optimizer 'sgd' only (got 'adamw'); "
        "use trainable_config.precondition to model adaptive optimizers"
    }
    # Tune never saw an error, so it retried nothing (it writes error.txt per failure)
    assert not list((tmp_path / "run" / "tune").rglob("error.txt"))


OUT_OF_MEMORY = """
import torch


def train(config, report):
    for step in (1, 2, 3):
        report({"step": step, "examples_seen": step * config.batch_size, "train_loss": 1.0 / step, "val_loss": 1.0})
        if config.batch_size >= 64:  # activations of a batch too large for this machine's memory
            torch.empty(config.batch_size << 40)
"""


def test_a_trial_out_of_memory_is_failed_with_that_reason(tmp_path: Path) -> None:
    # A real failed allocation (8 PiB at B=64), not a raised stand-in: what a researcher sees
    # when a batch size does not fit. The sweep goes on with the batch size that fits.
    (tmp_path / "oom.py").write_text(OUT_OF_MEMORY)
    study = validate(
        {
            "name": "oom",
            "trainable": str(tmp_path / "oom.py") + ":train",
            "search": {"batch_sizes": [8, 64], "lr": {"min": 0.1, "max": 0.1, "points": 1}},
            "budget": {"max_steps": 3},
            "target": {"metric": "val_loss", "mode": "min", "value": 0.0},
            "early_stopping": {"scheduler": "none"},
        }
    )
    run_sweep(study, tmp_path / "run")
    trials = pq.read_table(tmp_path / "run" / "trials.parquet").to_pandas().set_index("batch_size")
    assert trials.loc[8, "status"] == "completed" and pd.isna(trials.loc[8, "error"])
    assert trials.loc[64, "status"] == "failed"
    assert "can't allocate memory" in trials.loc[64, "error"], trials.loc[64, "error"]
    assert trials.loc[64, "steps"] == 1  # the rows before the failure are kept
    assert not list((tmp_path / "run" / "tune").rglob("error.txt"))
