"""An interrupted local sweep resumes with --resume: finished trials are kept, interrupted
ones continue from their checkpoint, nothing duplicated, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from orchestrator.progress import read_snapshot
from support import REPO, write_tiny_fashion_mnist
from trainables.contract import read_curves
from trainables.schedule import eval_steps

SPY = str(REPO / "tests" / "launch_spy.py")
MAX_STEPS = 400


def spy_launch(*args: str, results_log: Path, checkpoint_every_s: float | None = None, popen: bool = False):
    """The launcher (tests/launch_spy.py: the real ``main``), logging every result the
    driver receives; optionally with a shorter adapter checkpoint period."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BS_TEST_RESULTS_LOG": str(results_log)}
    if checkpoint_every_s is not None:
        env["BS_TEST_CHECKPOINT_EVERY_S"] = str(checkpoint_every_s)
    cmd = [sys.executable, SPY, *args]
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def results(log: Path) -> list[tuple[str, int]]:
    if not log.is_file():
        return []
    return [(r["trial_id"], r["step"]) for r in map(json.loads, log.read_text().splitlines())]


def last_step(path: Path) -> int | None:
    try:
        steps = pq.read_table(path, columns=["step"]).column("step").to_pylist()
    except (OSError, ValueError):
        return None
    return max(steps) if steps else None


def checkpoints(run_dir: Path, trial_id: str) -> dict[int, float]:
    """Step -> wall_time_s of the trial checkpoints Tune persisted
    (RUN_DIR/tune/sweep/<trial>/checkpoint_*/state.pt, what the adapter saved)."""
    out = {}
    for d in (run_dir / "tune" / "sweep" / trial_id).glob("checkpoint_*"):
        state = torch.load(d / "state.pt", map_location="cpu", weights_only=False)
        out[int(state["step"])] = float(state["wall_time_s"])
    return out


def test_interrupt_then_resume(tmp_path: Path) -> None:
    """Two trials run side by side: B=8 finishes in a second or two, B=2048 needs ~15 s.
    Ctrl-C once B=8 has finished and B=2048 has a checkpoint; --resume must keep B=8 as
    it is (never run again) and continue B=2048 right after its checkpoint."""
    data = write_tiny_fashion_mnist(tmp_path / "data", n=3000)
    run_dir = tmp_path / "run"
    log1, log2 = tmp_path / "results-1.jsonl", tmp_path / "results-2.jsonl"
    proc = spy_launch(
        "--out",
        str(run_dir),
        "--set",
        "search.batch_sizes=[8, 2048]",
        "--set",
        "search.lr={min=0.01, max=0.01, points=1}",
        "--set",
        f"budget.max_steps={MAX_STEPS}",
        "--set",
        "budget.stop_at_target=false",
        "--set",
        "early_stopping.scheduler='none'",
        "--set",
        f"trainable_config.data_dir='{data}'",
        "--set",
        "trainable_config.val_size=500",
        "--set",
        "trainable_config.sharpness_examples=0",
        results_log=log1,
        checkpoint_every_s=0.0,
        popen=True,
    )

    def files() -> dict[int, Path]:
        return {int(p.parent.name.removeprefix("batch_size=")): p for p in (run_dir / "curves").glob("*/*.parquet")}

    def tune_says(batch_size: int) -> dict:
        """This batch size's counts in Tune's own view (RUN_DIR/tune/progress.json, ~1 s old)."""
        snap = read_snapshot(run_dir) or {"batches": []}
        return next((b for b in snap["batches"] if b["batch_size"] == batch_size), {})

    deadline = time.monotonic() + 180
    ready = False
    while time.monotonic() < deadline and proc.poll() is None:
        f = files()
        # B=8 has ended in Tune (not merely flushed its last row) and B=2048 runs with a checkpoint
        if (
            8 in f
            and 2048 in f
            and last_step(f[8]) == MAX_STEPS
            and tune_says(8).get("completed") == 1
            and tune_says(2048).get("running") == 1
            and list((run_dir / "tune" / "sweep" / f[2048].stem).glob("checkpoint_*/state.pt"))
        ):
            ready = True
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert ready, f"never saw B=8 finished and B=2048 checkpointed: {files()}\n{err[-2000:]}"
    assert proc.returncode == 1, err[-2000:]
    assert f"--resume {run_dir}" in err
    assert not (run_dir / "trials.parquet").exists()  # nothing pretends to be final
    assert not (run_dir / "report").exists()

    finished, interrupted = files()[8], files()[2048]
    done_id, cut_id = finished.stem, interrupted.stem
    before = read_curves(str(run_dir / "curves")).to_pandas()
    cut_before = int(before[before.trial_id == cut_id].step.max())
    assert before[before.trial_id == done_id].step.max() == MAX_STEPS
    assert 1 <= cut_before < MAX_STEPS, "B=2048 finished before the interrupt: the test proves nothing"
    ckpts = checkpoints(run_dir, cut_id)
    assert ckpts and max(ckpts) < MAX_STEPS, ckpts
    finished_bytes, finished_mtime = finished.read_bytes(), finished.stat().st_mtime_ns
    assert [s for t, s in results(log1) if t == done_id][-1] == MAX_STEPS

    r = spy_launch("--resume", str(run_dir), results_log=log2)
    assert r.returncode == 0, r.stderr[-2000:]

    # the finished trial is not run again: no result of it, its file untouched
    resumed = results(log2)
    assert [s for t, s in resumed if t == done_id] == []
    assert finished.read_bytes() == finished_bytes and finished.stat().st_mtime_ns == finished_mtime
    # the interrupted trial continues from its checkpoint, not from step 0: its first result
    # after the resume is the evaluation right after a checkpoint Tune had saved
    cut_steps = [s for t, s in resumed if t == cut_id]
    schedule = eval_steps(MAX_STEPS, 1.05)
    after_ckpt = {next(s for s in schedule if s > c) for c in ckpts}
    assert cut_steps and cut_steps[0] in after_ckpt, (cut_steps[:5], sorted(ckpts))
    assert cut_steps == sorted(cut_steps) and cut_steps[-1] == MAX_STEPS
    assert cut_steps == [s for s in schedule if s >= cut_steps[0]]  # every evaluation once, in order

    after = read_curves(str(run_dir / "curves")).to_pandas()
    assert not after.duplicated(["trial_id", "step"]).any()
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert len(trials) == 2 and set(trials.trial_id) == set(after.trial_id) == {done_id, cut_id}
    assert set(trials.status) == {"completed"}
    assert (trials.steps == MAX_STEPS).all()
    # the interrupted trial's curve has every evaluation of the schedule exactly once
    assert after[after.trial_id == cut_id].sort_values("step").step.tolist() == schedule
    # and its clock goes on from the checkpoint's wall time, not from zero
    new_rows = after[(after.trial_id == cut_id) & (after.step > cut_before)]
    assert len(new_rows) and (new_rows.wall_time_s >= min(ckpts.values())).all()
    # every row written before the interruption is still there, unchanged
    merged = before.merge(after, on=["trial_id", "step"], suffixes=("_b", "_a"))
    assert len(merged) == len(before)
    assert (merged.val_loss_b.fillna(-1) == merged.val_loss_a.fillna(-1)).all()
    assert (run_dir / "report" / "fits.json").is_file()
