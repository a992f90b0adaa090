"""The disk of RUN_DIR fills during a sweep: the sweep stops with one line naming the path,
what was written stays readable, and ``--resume`` finishes the run once there is room.

Runs RUN_DIR on a 64 MiB tmpfs of its own (root only, as in CI) and fills it from outside."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support import REPO, launch
from trainables.contract import read_curves


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_stops_the_sweep_and_resume_finishes_it(small_disk: Path) -> None:
    run_dir = small_disk / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.launch", "--budget", "smoke", "--out", str(run_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    while len(list((run_dir / "curves").rglob("*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # fill the disk to its last byte
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(run_dir) in lines[0], err[-2000:]
    assert f"--resume {run_dir}" in lines[0]
    assert "Traceback" not in err
    before = read_curves(run_dir / "curves").to_pandas()  # what was written stays readable
    assert len(before) > 0 and not (run_dir / "trials.parquet").exists()

    filler.unlink()
    r = launch("--resume", str(run_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    after = read_curves(run_dir / "curves").to_pandas()
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert len(trials) == 9 and set(after.trial_id) == set(trials.trial_id)
    assert not after.duplicated(["trial_id", "step"]).any()
    kept = before.merge(after, on=["trial_id", "step"], suffixes=("_b", "_a"))
    assert len(kept) == len(before) and (kept.train_loss_b == kept.train_loss_a).all()
    assert (run_dir / "report" / "fits.json").is_file()
