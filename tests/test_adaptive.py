"""The adaptive LR search as a Tune Searcher: its objective, resume, the dry run, and the
NQM answer against the full grid (through real Ray Tune, at a CI size)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from orchestrator.adaptive import AdaptiveSearcher, format_plan, objective
from orchestrator.bracket import DIVERGED
from orchestrator.study import validate
from orchestrator.tune_config import CONFIG_KEY

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not installed


def study(**search):
    return validate(
        {
            "name": "nqm-adaptive",
            "trainable": "nqm",
            "trainable_config": {"dim": 100},
            "search": {
                "batch_sizes": [1, 4, 16, 64, 256],
                "lr": {"min": 2**-7, "max": 4.0, "points": 19},
                "momentum": 0.0,
                "strategy": "adaptive",
                **search,
            },
            "budget": {"max_steps": 1000},
            "target": {"metric": "val_loss", "mode": "min", "value": 0.05},
            "early_stopping": {"scheduler": "none"},
        }
    )


def fake_steps(b: int, lr: float) -> float | None:
    """A synthetic response: best LR 2^-6 * B up to 2^-1, diverging at LR >= 2."""
    if lr >= 2:
        return None
    best = min(2**-6 * b, 0.5)
    return 1000 / b * (1 + (math.log2(lr / best)) ** 2)


def drive(s: AdaptiveSearcher, n_max: int, start: int = 0, log: list | None = None) -> list:
    """Ask for trials until FINISHED (or ``n_max`` trials), feeding synthetic results in
    first-in-first-out order, two in flight."""
    log = [] if log is None else log
    live: list[tuple[str, dict]] = []
    n = start
    while n < n_max:
        cfg = s.suggest(f"t{n}")
        if cfg == AdaptiveSearcher.FINISHED:
            log.append("FINISHED")
            break
        if cfg is None:
            tid, c = live.pop(0)
            steps = fake_steps(c["batch_size"], c["lr"])
            if steps is None:
                s.on_trial_result(tid, {"step": 10, "diverged": True, "val_loss": float("inf")})
                s.on_trial_complete(tid, {"step": 10, "diverged": True})
            else:
                s.on_trial_result(tid, {"step": steps / 2, "val_loss": 0.5})
                s.on_trial_complete(tid, {"step": steps, "val_loss": 0.04})
            continue
        c = cfg[CONFIG_KEY]
        live.append((f"t{n}", c))
        log.append((c["batch_size"], c["lr"]))
        n += 1
    return log


def test_objective_ranks_as_the_analysis() -> None:
    reached, slow = objective(100.0, 0.01, False), objective(1000.0, 0.01, False)
    missed = objective(None, 0.2, False)
    assert reached < slow < missed < objective(None, 0.3, False) < DIVERGED
    assert objective(100.0, 0.01, True) == DIVERGED == objective(None, None, False)


def test_searcher_finds_the_synthetic_optimum_and_finishes() -> None:
    s = AdaptiveSearcher(study(), max_concurrent=2)
    log = drive(s, 1000)
    assert log[-1] == "FINISHED" and s.finished()
    best = {b: s.grids[b][br.best()] for b, br in s.brackets.items()}
    for b, lr in best.items():
        assert lr == pytest.approx(min(2**-6 * b, 0.5), rel=1e-3)
    assert len(log) - 1 <= 95 / 2  # well under the grid (5 x 19)


def test_resume_continues_with_the_same_suggestions(tmp_path: Path) -> None:
    a = AdaptiveSearcher(study(), max_concurrent=2)
    first = drive(a, 9)
    a.save(str(tmp_path / "searcher.pkl"))
    b = AdaptiveSearcher(study(), max_concurrent=1)
    b.restore(str(tmp_path / "searcher.pkl"))
    assert b.get_state() == a.get_state()
    # the in-flight trials of a complete in both (Tune resumes them) and the search goes on
    for s in (a, b):
        for tid, (bb, i, _) in sorted(s.trials.items()):
            st = fake_steps(bb, s.grids[bb][i])
            s.on_trial_complete(tid, {"step": st, "val_loss": 0.04} if st else {"step": 1, "diverged": True})
    rest_a, rest_b = drive(a, 1000, start=9), drive(b, 1000, start=9)
    assert rest_a == rest_b and rest_a[-1] == "FINISHED" and len(first) == 9


def test_dry_run_line() -> None:
    line = format_plan(study())
    assert line.startswith("adaptive: up to ") and line.endswith("grid would be 95")
    n = int(line.split()[3])
    assert 5 * 3 <= n < 95


def test_nqm_adaptive_matches_the_full_grid_with_a_fifth_of_the_examples(tmp_path: Path) -> None:
    from bench.adaptive_vs_grid import SMALL, compare_study
    from cluster.local import local_ray

    with local_ray(num_cpus=2):
        r = compare_study("nqm", SMALL, tmp_path)
    g, a = r["grid"], r["adaptive"]
    assert abs(a["b_crit"] / g["b_crit"] - 1) <= 0.15, (a["b_crit"], g["b_crit"])
    lo, hi = g["b_crit_ci95"]
    assert lo <= a["b_crit"] <= hi
    apart = [v for v in r["best_lr_steps_apart"].values()]
    assert all(v is not None and v <= 1 + 1e-6 for v in apart), apart
    assert r["examples_fraction"] <= 0.2, r["examples_fraction"]
    assert np.isfinite(a["wall_s"])
    # the progress display says how far the search got, against the dry run's plan
    import json

    from orchestrator.progress import render, snapshot_path

    snap = json.loads(snapshot_path(Path(a["run_dir"])).read_text())
    assert snap["search"]["started"] == a["trials_started"] and snap["search"]["grid"] == g["trials_started"]
    assert f"adaptive search: {a['trials_started']} trials started at " in render(snap)
    assert json.loads(snapshot_path(Path(g["run_dir"])).read_text())["search"] is None


def test_a_killed_adaptive_sweep_resumes_to_the_trials_of_an_uninterrupted_one(tmp_path: Path) -> None:
    """One trial at a time (cpus_per_trial = 2 on 2 CPUs), so the search is deterministic:
    an uninterrupted run, then the same study SIGKILLed with its process group mid-search and
    resumed. The searcher's state comes back from Tune's experiment snapshot, so the resumed
    search runs the points the uninterrupted one did, each once, each curve row once, and
    ends with the same best LR per batch size."""
    import json
    import os
    import signal
    import subprocess

    import pyarrow.parquet as pq

    from bench.adaptive_vs_grid import SMALL
    from support import REPO, launch
    from trainables.contract import read_curves

    study = [*SMALL, "search.batch_sizes=[1, 16, 256, 4096]", "search.strategy=adaptive"]
    args = ["--study", "nqm", *(a for o in [*study, "resources.cpus_per_trial=2"] for a in ("--set", o))]
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = launch(*args, "--out", str(ref))
    assert r.returncode == 0, r.stderr[-3000:]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.launch", *args, "--out", str(run)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    want = len(pq.read_table(ref / "trials.parquet")) // 2
    deadline = time.monotonic() + 120
    while len(list((run / "curves").rglob("*.parquet"))) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep ended before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert not (run / "trials.parquet").exists()
    r = launch("--resume", str(run))
    assert r.returncode == 0, r.stderr[-3000:]

    def points(d: Path) -> list[tuple[int, float]]:  # trial ids are random: the points say what ran
        t = pq.read_table(d / "trials.parquet").to_pandas()
        return sorted((int(x.batch_size), float(x.lr)) for x in t.itertuples())

    assert points(run) == points(ref)
    curves = read_curves(run / "curves").to_pandas()
    assert not curves.duplicated(["trial_id", "step"]).any()
    ids = set(pq.read_table(run / "trials.parquet").column("trial_id").to_pylist())
    assert set(curves.trial_id) == ids
    # the partial curves of trials the snapshot did not have were set aside, and said so
    orphans = list((run / "tune" / "orphaned_curves").rglob("*.parquet"))
    assert not any(p.stem in ids for p in orphans)
    assert ("partial curve(s) of trials started after the last snapshot" in r.stderr) == bool(orphans)
    best = {
        d: {p["batch_size"]: p["best_lr"] for p in json.loads((d / "tune" / "adaptive.json").read_text())["per_batch"]}
        for d in (ref, run)
    }
    assert best[run] == best[ref]
