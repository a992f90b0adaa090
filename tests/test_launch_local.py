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
        "curves",
        "lease.json",
        "manifest.json",
        "report",
        "study.toml",
        "trials.parquet",
        "tune",
    ]
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
    # a trial that ran to its end measured the forgetting probe on its final weights
    done = trials[trials.status == "completed"]
    assert len(done) > 0 and done.probe_recent_loss.notna().all()
    assert (done.probe_heldout_loss == done.final_val_loss).all()
    assert "Forgetting probe" in (run_dir / "report" / "report.md").read_text()
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
    printed = [dict(zip(cols, ln.split())) for ln in lines[head + 1 : head + 1 + len(fits["per_batch"])]]
    for row, p in zip(printed, fits["per_batch"], strict=True):
        assert int(row["batch_size"]) == p["batch_size"]
        assert float(row["best_lr"]) == pytest.approx(p["best_lr"], rel=1e-3)
        assert int(row["trials"]) == p["trials"] and int(row["reached"]) == p["reached"]
        if p["steps_to_target"] is None:
            assert row["steps_to_target"] == "-"
        else:
            assert float(row["steps_to_target"]) == pytest.approx(p["steps_to_target"], rel=1e-3)
    assert str(report / "report.md") in r.stdout


def test_nqm_study_through_the_launcher_recovers_the_closed_form_steps_to_target(tmp_path: Path) -> None:
    """``--study nqm``: the noisy quadratic model's expected loss under plain SGD is known in
    closed form, s_i(t) = s*_i + (1 - α h_i)^(2t) (1 - s*_i), s*_i = α / (B (2 - α h_i)), so
    the steps to target the report derives (RUN_DIR/report/fits.json) are known exactly.
    The smoke budget (150 steps) with a target it reaches: 2.6, about half the initial loss."""
    import numpy as np

    from orchestrator.grid import lr_values
    from orchestrator.study import load_study
    from trainables.contract import step_cap
    from trainables.nqm import curvatures
    from trainables.schedule import eval_steps

    target = 2.6
    run_dir = tmp_path / "run"
    r = launch("--study", "nqm", "--budget", "smoke", "--set", f"target.value={target}", "--out", str(run_dir))
    assert r.returncode == 0, r.stderr[-3000:]

    study = load_study("nqm", [f"target.value={target}"], budget="smoke")
    h = curvatures(study.trainable_settings().dim)
    assert study.search.momentum == 0 and study.search.warmup_examples == 0 and study.search.weight_decay == 0

    def loss(b: int, lr: float, t: np.ndarray) -> np.ndarray:
        s_star = lr / (b * (2 - lr * h))
        return 0.5 * ((s_star + (1 - lr * h) ** (2 * t[:, None]) * (1 - s_star)) @ h)

    curves = read_curves(str(run_dir / "curves")).to_pandas()
    expect, exact, reached = {}, {}, {}
    for b in study.search.batch_sizes:
        cap = step_cap(b, study.budget.max_steps, study.budget.max_examples)
        best, best_exact, n = float("inf"), float("inf"), 0
        for lr in lr_values(study, b):
            steps = np.array([s for s in eval_steps(cap, 1.05)])
            values = loss(b, lr, steps)
            # every evaluation row of this trial is the closed form (stopped at the target)
            rows = curves[(curves.batch_size == b) & (curves.lr == lr)].sort_values("step")
            hit = np.flatnonzero(values <= target)
            last = steps[hit[0]] if hit.size else cap
            assert rows.step.tolist() == [int(s) for s in steps if s <= last], (b, lr)
            np.testing.assert_allclose(rows.val_loss, values[: len(rows)], rtol=1e-9)
            if not hit.size:
                continue
            n += 1
            # the first evaluation at or below the target, interpolated in log(step) from the one before
            i = hit[0]
            frac = (target - values[i - 1]) / (values[i] - values[i - 1])
            best = min(best, float(np.exp(np.log(steps[i - 1]) + frac * np.log(steps[i] / steps[i - 1]))))
            every = loss(b, lr, np.arange(1, cap + 1, dtype=float))
            best_exact = min(best_exact, float(np.argmax(every <= target) + 1))
        expect[b], exact[b], reached[b] = best, best_exact, n

    fits = json.loads((run_dir / "report" / "fits.json").read_text())
    per_batch = {p["batch_size"]: p for p in fits["per_batch"]}
    assert sorted(per_batch) == [1, 16, 256]
    assert all(reached.values()), reached  # the check has something to check at every batch size
    for b, p in per_batch.items():
        assert p["trials"] == 3 and p["reached"] == reached[b], (b, p)
        assert p["steps_to_target"] == pytest.approx(expect[b], rel=1e-6), (b, p, expect[b])
        # and the interpolated value is the true first step below the target to within the
        # evaluation grid's 5%
        assert exact[b] / 1.05 <= p["steps_to_target"] <= exact[b] * 1.05, (b, p, exact[b])
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert len(trials) == 9 and set(trials.status) == {"completed"}


def test_fixed_budget_lr_policies_on_two_subsets_end_to_end(tmp_path: Path) -> None:
    """The lr-policies study shrunk (smoke, a one-LR tuned grid), on 1/4 and all of the
    training set, with ASHA: every (B, LR) runs on both subsets, a rule's LR that the grid
    holds runs once, every trial trains on the same examples at both batch sizes, early
    stopping compares within (B, fraction), and the report has both protocol sections."""
    run_dir = tmp_path / "run"
    sets = [
        "search.batch_sizes=[32,128]",
        "search.train_fraction=[0.25,1.0]",
        "search.lr.tuned={min=0.04,max=0.04,points=1}",
        "budget={max_examples=3200}",  # in place of the study's 2 epochs
        "early_stopping.scheduler=asha",
        "early_stopping.grace_examples=800",
    ]
    r = launch(
        "--study", "lr-policies", "--budget", "smoke", *(a for s in sets for a in ("--set", s)), "--out", str(run_dir)
    )
    assert r.returncode == 0, r.stderr[-3000:]
    df = read_curves(str(run_dir / "curves")).to_pandas()
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    # B=32: the rules' 0.01 and the grid's 0.04; B=128: 0.01, sqrt's 0.02, and linear's 0.04,
    # which is the grid's too (one trial); on 2 subsets each
    assert len(trials) == 2 * (2 + 3) and "failed" not in set(trials.status)
    for (b, lr), g in trials.groupby(["batch_size", "lr"]):
        assert sorted(g.train_fraction) == [0.25, 1.0], (b, lr)
    assert set(trials[trials.batch_size == 128].lr) == {0.01, 0.02, 0.04}
    done = trials[trials.status == "completed"]
    assert len(done) >= 4 and (done.examples_seen == 3200).all()  # the same examples at both batch sizes
    last = df.sort_values("step").groupby("trial_id").last()
    n_sub = {0.25: 13_750, 1.0: 55_000}  # of Fashion-MNIST's 55,000 training images
    for t in done.itertuples():
        assert last.loc[t.trial_id, "epoch"] == pytest.approx(3200 / n_sub[t.train_fraction], rel=1e-3)
    record = json.loads((run_dir / "tune" / "early_stopping.json").read_text())
    assert {(g["batch_size"], g["train_fraction"]) for g in record["batches"]} == {
        (b, f) for b in (32, 128) for f in (0.25, 1.0)
    }
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Equal-budget comparison" in report and "## Curvature or forgetting" in report
    fits = json.loads((run_dir / "report" / "fits.json").read_text())
    assert sum(p["trials"] for p in fits["per_batch"]) == 5  # the fits see all of the data only
