"""The generalization gap and the sharpness the report shows, recomputed independently from
the run's own files: per batch size, at the best trial's LR, the last validation loss minus
the last training-subset loss of the same weights, and trials.parquet's sharpness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analysis
from analysis.synthetic import write_synthetic_run
from trainables.contract import read_curves


def test_report_gap_and_sharpness_match_the_run_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_synthetic_run(run, train_eval=True)
    trials = pq.read_table(run / "trials.parquet").to_pandas()
    rng = np.random.default_rng(3)
    trials["sharpness"] = rng.uniform(1.0, 50.0, len(trials))  # known, distinct per trial
    pq.write_table(pa.Table.from_pandas(trials, preserve_index=False), run / "trials.parquet")
    out = analysis.write_report(run, n_boot=50)

    curves = read_curves(run / "curves").to_pandas().sort_values(["trial_id", "step"])
    last = curves.groupby("trial_id").agg(val=("val_loss", "last"), train=("train_eval_loss", "last"))
    table = pd.read_csv(out / "tables" / "per_batch.csv")
    fits = json.loads((out / "fits.json").read_text())
    assert [int(b) for b in table.batch_size] == [p["batch_size"] for p in fits["per_batch"]]
    checked = 0
    for row in table.itertuples():
        if not np.isfinite(row.best_trial_lr):
            continue
        same = trials[
            (trials.batch_size == row.batch_size)
            & np.isclose(trials.lr, row.best_trial_lr)
            & (trials.status != "diverged")
        ]
        gaps = last.loc[same.trial_id, "val"] - last.loc[same.trial_id, "train"]
        assert row.generalization_gap == pytest.approx(float(gaps.mean()), rel=1e-9)
        assert row.sharpness == pytest.approx(float(same.sharpness.mean()), rel=1e-9)
        checked += 1
    assert checked >= 5
    assert "sharpness" in (out / "report.md").read_text().lower()
