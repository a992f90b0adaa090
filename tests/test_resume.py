"""An interrupted local sweep resumes with --resume: nothing duplicated, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from support import REPO, launch
from trainables.contract import read_curves


def test_interrupt_then_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.launch", "--budget", "smoke", "--out", str(run_dir),
         "--set", "search.batch_sizes=[16, 64]"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((run_dir / "curves").rglob("*.parquet"))) < 2:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    assert f"--resume {run_dir}" in err
    assert not (run_dir / "trials.parquet").exists()  # nothing pretends to be final
    assert not (run_dir / "report").exists()
    before = read_curves(str(run_dir / "curves")).to_pandas()
    assert len(before) > 0

    r = launch("--resume", str(run_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    after = read_curves(str(run_dir / "curves")).to_pandas()
    assert not after.duplicated(["trial_id", "step"]).any()
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert len(trials) == 6 and set(trials.trial_id) == set(after.trial_id)
    # every row written before the interruption is still there, unchanged
    merged = before.merge(after, on=["trial_id", "step"], suffixes=("_b", "_a"))
    assert len(merged) == len(before)
    assert (merged.val_loss_b.fillna(-1) == merged.val_loss_a.fillna(-1)).all()
    assert (run_dir / "report" / "fits.json").is_file()
