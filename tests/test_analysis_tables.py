"""The report's tables of seeds (analysis.seeds: per (batch size, LR), how many seeds reach
the target and their spread) and of the forgetting probe (analysis.probe), each checked
against the trials computed directly, and absent when there is nothing to show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import load_run, write_report
from analysis.fits import analyse
from analysis.probe import probe_table
from analysis.seeds import seed_table
from analysis.synthetic import write_synthetic_run


def test_reached_counts_and_spread_match_the_trials(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, batch_sizes=(64, 256, 1024), seeds=3, noise=0.2, budget=[3, 3, 0.8])
    a = analyse(load_run(tmp_path), n_boot=50)
    got = seed_table(a)
    assert got is not None
    data, text = got
    t = a.trials
    assert len(data) == t.groupby(["batch_size", "lr"]).ngroups and (data.seeds == 3).all()
    for row in data.itertuples():
        g = t[(t.batch_size == row.batch_size) & (t.lr == row.lr)]
        assert row.reached == int(g.reached.sum())
        steps = g.steps_to_target[g.reached].to_numpy(dtype=float)
        if len(steps) >= 2:
            assert row.steps_to_target_sd == pytest.approx(np.std(steps, ddof=1))
            assert (row.steps_to_target_min, row.steps_to_target_max) == (steps.min(), steps.max())
        elif len(steps) == 0:
            assert np.isnan(row.steps_to_target_mean)
        assert row.final_val_accuracy_mean == pytest.approx(g.final_metric.mean())
    # the short budget at B = 1024 leaves some seeds short of the target: "k of 3" says so
    assert set(text.reached) >= {"3 of 3"} and any(r != "3 of 3" for r in text.reached)
    assert data.reached.sum() == int(t.reached.sum())


def test_the_report_shows_it_with_seeds_and_not_without(tmp_path: Path) -> None:
    many, one = tmp_path / "many", tmp_path / "one"
    write_synthetic_run(many, batch_sizes=(64, 256), seeds=2)
    write_synthetic_run(one, batch_sizes=(64, 256), seeds=1)
    md = (write_report(many, n_boot=50) / "report.md").read_text()
    assert "Seeds per batch size and LR" in md and " of 2 " in md
    csv = pd.read_csv(many / "report" / "tables" / "seeds.csv")
    assert list(csv.columns[:4]) == ["batch_size", "lr", "seeds", "reached"]
    assert "Seeds per batch size and LR" not in (write_report(one, n_boot=50) / "report.md").read_text()
    assert not (one / "report" / "tables" / "seeds.csv").exists()


def test_the_forgetting_probe_table_averages_the_probed_trials_per_batch_size(tmp_path: Path) -> None:
    """Probe values written into a synthetic run's trials.parquet (every other trial, as if
    the rest were stopped early): the table's means per batch size are those trials' means,
    and a run without any probe value has no such table."""
    write_synthetic_run(tmp_path, batch_sizes=(64, 256), seeds=1)
    path = tmp_path / "trials.parquet"
    trials = pq.read_table(path).to_pandas()
    rng = np.random.default_rng(0)
    probed = np.arange(len(trials)) % 2 == 0
    for col in ("probe_recent_loss", "probe_early_loss", "probe_early_age_epochs", "probe_heldout_loss"):
        trials[col] = np.where(probed, rng.uniform(0.2, 0.6, len(trials)), np.nan)
    pq.write_table(pa.Table.from_pandas(trials, schema=pq.read_schema(path), preserve_index=False), path)
    a = analyse(load_run(tmp_path), n_boot=50)
    got = probe_table(a)
    assert got is not None
    data, text = got
    for row in data.itertuples():
        mine = trials[probed & (trials.batch_size == row.batch_size)]
        assert row.trials == len(mine)
        assert row.probe_recent_loss == pytest.approx(mine.probe_recent_loss.mean())
        assert row.early_minus_heldout == pytest.approx((mine.probe_early_loss - mine.probe_heldout_loss).mean())
    md = (write_report(tmp_path, n_boot=50) / "report.md").read_text()
    assert "Forgetting probe" in md and (tmp_path / "report" / "tables" / "forgetting_probe.csv").is_file()
    other = tmp_path / "plain"
    write_synthetic_run(other, batch_sizes=(64, 256))
    assert probe_table(analyse(load_run(other), n_boot=50)) is None
