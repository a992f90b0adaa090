"""ASHA decides the same after an interruption and a resume: on a deterministic study (NQM,
expected mode, one trial at a time) the set of trials stopped early is identical with and
without a Ctrl-C in the middle of the sweep. Tune does not persist a scheduler's state;
the sweep does (``orchestrator.sweep.SchedulerState``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from support import REPO, launch

STUDY = [
    "--study",
    "nqm",
    "--set",
    'early_stopping.scheduler="asha"',
    "--set",
    "early_stopping.grace_examples=2000",
    "--set",
    "search.batch_sizes=[4, 64]",
    "--set",
    "search.lr={min = 0.0078125, max = 2.0, points = 7}",
    "--set",
    "budget.max_steps=20000",
    "--set",
    "trainable_config.dim=1000",
    # one trial at a time on the 2 CPUs of the local Ray: the trial order is the grid's
    "--set",
    "resources.cpus_per_trial=2",
]


def _stopped(run_dir: Path) -> set[tuple[int, float]]:
    t = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert len(t) == 14
    return {(int(r.batch_size), float(r.lr)) for r in t.itertuples() if r.status == "early_stopped"}


def _done(run_dir: Path) -> int:
    try:
        snap = json.loads((run_dir / "tune" / "progress.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(b["completed"] + b["early_stopped"] + b["diverged"] + b["failed"] for b in snap["batches"])


def test_asha_stops_the_same_trials_after_an_interruption(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    r = launch(*STUDY, "--out", str(straight))
    assert r.returncode == 0, r.stderr[-2000:]
    expected = _stopped(straight)
    assert 0 < len(expected) < 14, expected  # ASHA did decide something

    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.launch", *STUDY, "--out", str(run_dir)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    # early: trials start from the centre LRs, so the later ones (the grid's edges) are
    # stopped at their first rung within seconds and a late Ctrl-C would find none left
    while _done(run_dir) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before the interruption"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    assert not (run_dir / "trials.parquet").exists()  # interrupted: not every trial ended
    r = launch("--resume", str(run_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    assert _stopped(run_dir) == expected
