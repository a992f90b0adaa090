"""The CLI end to end in a subprocess: the smoke budget of the built-in study."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support import launch
from trainables.contract import CURVES_SCHEMA, TRIAL_STATUSES, read_curves


def test_smoke_study_end_to_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    home = tmp_path / "home"
    home.mkdir()
    r = launch("--cluster", "local", "--budget", "smoke", "--out", str(run_dir), env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr[-3000:]
    # Ray's own default would leave a world-readable token in ~/.ray/auth_token
    assert not (home / ".ray" / "auth_token").exists()

    assert sorted(p.name for p in run_dir.iterdir()) == [
        "curves", "lease.json", "manifest.json", "report", "study.toml", "trials.parquet", "tune"]
    held = json.loads((run_dir / "lease.json").read_text())
    assert held["backend"] == "local" and held["released"] is True
    study = tomllib.loads((run_dir / "study.toml").read_text())
    assert study["name"] == "fashion-mnist" and study["search"]["batch_sizes"] == [16, 64, 256]
    assert study["trainable_config"]["val_size"] == 5000  # the trainable's defaults are frozen too

    curves = read_curves(str(run_dir / "curves"))
    assert curves.schema == CURVES_SCHEMA
    df = curves.to_pandas()
    assert not df.duplicated(["trial_id", "step"]).any()
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert len(trials) == 9 and set(trials.trial_id) == set(df.trial_id)
    assert set(trials.status) <= set(TRIAL_STATUSES)
    assert "failed" not in set(trials.status)
    # every trial's last row is its final state in trials.parquet
    last = df.sort_values("step").groupby("trial_id").last()
    for t in trials.itertuples():
        assert last.loc[t.trial_id, "step"] == t.steps
    # --budget smoke caps every trial at 20,000 examples (and 150 steps)
    assert df.examples_seen.max() <= 20_000 and df.step.max() <= 150

    # the live display went to stderr, the summary table to stdout, then the report
    assert "trials done" in r.stderr
    assert "batch_size" in r.stdout and "best_lr" in r.stdout
    report = run_dir / "report"
    assert (report / "report.md").is_file() and (report / "report.html").is_file()
    fits = json.loads((report / "fits.json").read_text())
    assert [p["batch_size"] for p in fits["per_batch"]] == [16, 64, 256]
    # the printed summary is fits.json's per-batch table: same batch sizes, LRs and steps
    lines = r.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["batch_size", "best_lr"])
    cols = lines[head].split()
    printed = [dict(zip(cols, ln.split())) for ln in lines[head + 1: head + 1 + len(fits["per_batch"])]]
    for row, p in zip(printed, fits["per_batch"], strict=True):
        assert int(row["batch_size"]) == p["batch_size"]
        assert float(row["best_lr"]) == pytest.approx(p["best_lr"], rel=1e-3)
        assert int(row["trials"]) == p["trials"] and int(row["reached"]) == p["reached"]
        if p["steps_to_target"] is None:
            assert row["steps_to_target"] == "-"
        else:
            assert float(row["steps_to_target"]) == pytest.approx(p["steps_to_target"], rel=1e-3)
    assert str(report / "report.md") in r.stdout
