"""A local sweep whose driver is SIGKILLed, alone or with its process group, at arbitrary
moments: nothing it started outlives it by more than a few seconds, the curves stay
readable by pyarrow, pandas and DuckDB at every moment, and ``--resume`` finishes the run
with every evaluation of every trial exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from cluster import procs
from support import REPO, launch
from trainables.contract import read_curves, step_cap
from trainables.schedule import eval_steps

# 2 batch sizes x 3 LRs of the smoke study, slowed down by a short eval spacing so that
# kills land in the middle of training, sink writes and Tune snapshots
STUDY = ["--budget", "smoke", "--set", "search.batch_sizes=[16, 64]", "--set", 'early_stopping.scheduler="none"']


def _start(run_dir: Path, resume: bool) -> subprocess.Popen[str]:
    args = ["--resume", str(run_dir)] if resume else [*STUDY, "--out", str(run_dir)]
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "launch_spy.py"), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # curves rewritten every 0.3 s, not 30: kills land during sink writes
        env={**os.environ, "PYTHONUNBUFFERED": "1", "BS_TEST_FLUSH_EVERY_S": "0.3"},
        start_new_session=True,
    )


def _rows(run_dir: Path) -> int:
    return read_curves(run_dir / "curves").num_rows if list((run_dir / "curves").rglob("*.parquet")) else 0


def _readable(run_dir: Path) -> int:
    """The row count, read three ways; they must agree."""
    arrow = read_curves(run_dir / "curves").num_rows
    frame = len(pd.read_parquet(run_dir / "curves"))
    glob = str(run_dir / "curves" / "**" / "*.parquet")
    duck = duckdb.sql(f"select count(*) from read_parquet('{glob}', hive_partitioning = true)").fetchall()
    assert arrow == frame == duck[0][0]
    return arrow


def _kill_when(proc: subprocess.Popen[str], run_dir: Path, min_rows: int, group: bool) -> None:
    deadline = time.monotonic() + 120
    while _rows(run_dir) < min_rows and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the driver ended before the kill: {proc.stderr.read()[-2000:] if proc.stderr else ''}"
    started = procs.descendants(proc.pid)
    assert started, "the driver started no process (no Ray?)"
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    t0 = time.monotonic()
    while [p for p in started if procs.alive(p)] and time.monotonic() - t0 < 10:
        time.sleep(0.2)
    left = [(p, procs.cmdline(p)[:2]) for p in started if procs.alive(p)]
    assert left == [], f"still alive 10 s after the driver's SIGKILL: {left}"
    _readable(run_dir)


def test_sigkill_of_the_driver_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start(run_dir, resume=False)
    _kill_when(proc, run_dir, min_rows=5, group=False)
    for min_rows, group in ((_rows(run_dir) + 15, True), (_rows(run_dir) + 40, False)):
        proc = _start(run_dir, resume=True)
        _kill_when(proc, run_dir, min_rows=min_rows, group=group)
        assert not (run_dir / "trials.parquet").exists()

    r = launch("--resume", str(run_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    curves = read_curves(run_dir / "curves").to_pandas()
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert len(trials) == 6 and set(trials.trial_id) == set(curves.trial_id)
    assert not curves.duplicated(["trial_id", "step"]).any()
    # no evaluation step missing: each trial's steps are its eval schedule up to its end
    for t in trials.itertuples():
        steps = sorted(curves.loc[curves.trial_id == t.trial_id, "step"])
        schedule = eval_steps(step_cap(t.batch_size, 150, 20_000))
        expect = [s for s in schedule if s <= steps[-1]]
        if t.status == "diverged":  # its last row is the step it blew up at, off schedule
            expect = [s for s in schedule if s < steps[-1]] + [steps[-1]]
        assert steps == expect, (t.trial_id, t.status)
    assert (run_dir / "report" / "fits.json").is_file()
