"""Honest intervals: the residual method where resampling trials cannot vary the data, its
coverage, nulls with reasons, and the hierarchical bootstrap over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import load_run
from analysis.best_lr import BatchTrials
from analysis.bootstrap import HIERARCHICAL, TRIALS, Resamples, percentile_ci, resample
from analysis.fits import analyse
from analysis.intervals import PROFILE, critical_with_intervals
from analysis.results import Analysis, fits_json
from analysis.synthetic import write_synthetic_run

B = np.array([32, 64, 128, 256, 512, 1024, 2048], dtype=float)
LINEAR = lambda b: 0.01 * np.asarray(b) / 32
CriticalBatchInput = tuple[pd.DataFrame, Resamples]


def report_text(a: Analysis, where: Path) -> str:
    """report.md's text without drawing the figures (those have their own tests)."""
    from analysis.document import build_document
    from analysis.environment import environment_stamp
    from analysis.render import to_markdown

    return to_markdown(build_document(a, [], [], environment_stamp()), where)


def one_trial_per_batch(b: np.ndarray, steps: np.ndarray, n_boot: int = 50) -> CriticalBatchInput:
    """A per-batch summary and its bootstrap for a sweep with one trial per batch size: every
    resample draws that trial, so every row repeats the data."""
    per_batch = pd.DataFrame({"batch_size": b, "steps_to_target": steps})
    boot = Resamples(
        b, np.tile(steps, (n_boot, 1)), np.full((n_boot, b.size), np.nan), np.zeros((n_boot, b.size), dtype=bool)
    )
    return per_batch, boot


def test_one_trial_per_batch_size_gets_a_residual_interval(tmp_path: Path) -> None:
    # Only the best run per batch size: one trial, at eta*(B), with 10% log-normal noise.
    write_synthetic_run(tmp_path, lr_law=LINEAR, lr_grid=lambda b: [float(LINEAR(b))], noise=0.1, rng_seed=1)
    a = analyse(load_run(tmp_path), n_boot=100)
    c = a.critical
    # Before: the percentile interval of resamples that all repeat the data is [x, x].
    from analysis.critical import critical_batch_batched

    r = critical_batch_batched(a.boot.batch_sizes, a.boot.steps)
    lo_b, hi_b = percentile_ci(r.b_crit)
    assert lo_b == pytest.approx(hi_b) == pytest.approx(c.b_crit)
    # After: the profile likelihood of the fit's residuals, named as such.
    assert c.ci_method == PROFILE and c.ci_note and "B = 32, 64" in c.ci_note
    lo, hi = c.b_crit_ci95
    assert lo < c.b_crit < hi and hi / lo > 1.3
    assert lo <= 256 <= hi
    assert c.s_min_ci95[0] < c.s_min < c.s_min_ci95[1]
    assert c.band is not None and (c.band.high > c.band.low).all()
    fits = fits_json(a)
    assert fits["critical_batch"]["ci_method"] == PROFILE
    md = report_text(a, tmp_path)
    assert "by profile likelihood" in md and "falsely narrow" in md
    # The per-batch intervals a single trial decides are left empty, not [x, x].
    assert a.per_batch["steps_ci95_low"].isna().all() and a.per_batch["steps_ci_fixed"].all()


def test_residual_interval_covers_the_truth() -> None:
    # 50 seeded one-trial-per-batch sweeps from S(B) = 1000 (1 + 256 / B), 10% noise.
    rng = np.random.default_rng(2024)
    covered, widths = 0, []
    for _ in range(50):
        s = 1000 * (1 + 256 / B) * np.exp(rng.normal(0, 0.1, B.size))
        c = critical_with_intervals(*one_trial_per_batch(B, s))
        assert c.ci_method == PROFILE
        lo, hi = c.b_crit_ci95
        covered += (lo is None or lo <= 256) and (hi is None or hi >= 256)
        widths.append((hi or np.inf) / (lo or 1e-9))
    assert covered >= 45, covered  # >= 90% of 50 (nominal 95%)
    assert min(widths) > 1.05  # never a zero-width interval


def test_no_scatter_gives_null_with_the_reason() -> None:
    c = critical_with_intervals(*one_trial_per_batch(B, 1000 * (1 + 256 / B)))
    assert c.b_crit == pytest.approx(256, rel=1e-6)
    assert c.b_crit_ci95 is None and c.ci_method is None
    assert "no scatter" in c.ci_reason


def test_three_points_leave_one_degree_of_freedom_and_a_wide_interval() -> None:
    b = np.array([64.0, 256.0, 1024.0])
    c = critical_with_intervals(*one_trial_per_batch(b, 1000 * (1 + 256 / b) * np.exp([0.05, -0.05, 0.03])))
    assert c.ci_method == PROFILE
    lo, hi = c.b_crit_ci95
    assert lo is None or hi is None or hi / lo > 5  # F(1, 1) is 161: little is known


def test_a_single_decisive_trial_at_one_batch_size_switches_to_the_residual_method(tmp_path: Path) -> None:
    # Only at B = 2048 is the budget so tight that a single trial (the one at eta*) gets there.
    write_synthetic_run(
        tmp_path,
        lr_law=LINEAR,
        lr_grid=lambda b: LINEAR(b) * np.exp(0.6 * np.arange(-4, 5)),
        kappa=2.0,
        budget=[3, 3, 3, 3, 3, 3, 1.4],
        noise=0.05,
        rng_seed=4,
    )
    a = analyse(load_run(tmp_path), n_boot=100)
    assert a.per_batch.set_index("batch_size").loc[2048, "reached"] == 1
    assert a.critical.ci_method == PROFILE and "B = 2048" in a.critical.ci_note
    assert a.critical.b_crit_ci95[0] <= 256 <= a.critical.b_crit_ci95[1]


def test_several_trials_per_batch_size_keep_the_bootstrap(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, lr_law=LINEAR, rng_seed=5)
    a = analyse(load_run(tmp_path), n_boot=100)
    assert a.boot.method == TRIALS and a.critical.ci_method == TRIALS and a.critical.ci_note is None
    assert fits_json(a)["bootstrap"] == {"method": TRIALS, "n_boot": 100, "seed": 0}


def _trials(batch_size: int, steps: list[float], seeds: list[int]) -> BatchTrials:
    n = len(steps)
    return BatchTrials(
        batch_size,
        np.array([0.0]),
        np.zeros(n, dtype=np.int64),
        np.array(steps, dtype=float),
        np.full(n, np.inf),
        np.arange(n),
        np.array(seeds, dtype=float),
    )


def test_hierarchical_bootstrap_draws_seeds_once_for_every_batch_size() -> None:
    # Seed 0's trial is the fast one at both batch sizes: a resample has it at both or at neither.
    batches = [_trials(64, [100, 200], [0, 1]), _trials(128, [60, 120], [0, 1])]
    h = resample(batches, n_boot=400, seed=1)
    assert h.method == HIERARCHICAL and h.n_seeds == 2
    assert np.array_equal(h.steps[:, 0] == 100, h.steps[:, 1] == 60)
    assert 0.6 < np.mean(h.steps[:, 0] == 100) < 0.9  # P(seed 0 drawn) = 3/4
    flat = resample(batches, n_boot=400, seed=1, hierarchical=False)
    assert flat.method == TRIALS
    assert not np.array_equal(flat.steps[:, 0] == 100, flat.steps[:, 1] == 60)


def test_hierarchical_bootstrap_resamples_trials_within_a_seed() -> None:
    # One seed at B = 64 has two trials: within a drawn seed, its trials are resampled too.
    h = resample([_trials(64, [100, 150, 300], [0, 0, 1])], n_boot=2000, seed=2)
    p_fast = np.mean(h.steps[:, 0] == 100)
    # seed 0 drawn at least once: 3/4; given that, its fast trial drawn: about 3/4 to 15/16.
    assert 0.5 < p_fast < 0.75


def test_several_seeds_use_the_hierarchical_bootstrap_and_say_so(tmp_path: Path) -> None:
    write_synthetic_run(
        tmp_path, lr_law=LINEAR, seeds=3, rng_seed=6, lr_grid=np.geomspace(1e-3, 10, 9), evals_per_trial=15
    )
    a = analyse(load_run(tmp_path), n_boot=60)
    fits = json.loads(json.dumps(fits_json(a)))
    assert fits["bootstrap"]["method"] == HIERARCHICAL
    assert fits["critical_batch"]["ci_method"] == HIERARCHICAL
    lo, hi = fits["critical_batch"]["b_crit_ci95"]
    assert lo < fits["critical_batch"]["b_crit"] < hi
    md = report_text(a, tmp_path)
    assert "hierarchical bootstrap: seeds, then trials" in md and "(3 seed(s))" in md
