"""The whole analysis of a run: ``analyse`` builds the typed ``results.Analysis``.

Steps to target per trial -> best trial and best LR per batch size -> critical batch size,
regimes, LR scaling rule, generalization gap, noise scale; the bootstrap (over trials, or
hierarchical over seeds) reruns the per-batch step on resampled trials and refits
everything on each resample, and ``intervals`` takes each fit's 95% intervals from it or,
where resampling cannot vary the data, from the fit's residuals.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    from analysis.fits import analyse
    from analysis.results import fits_json
    a = analyse(load_run("/tmp/demo"), n_boot=1000)
    a.critical.b_crit, fits_json(a)["critical_batch"]["b_crit"]
    a.reasons        # why each null in fits.json is null
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .best_lr import batch_trials, summary_from_table
from .bootstrap import DEFAULT_N_BOOT, DEFAULT_SEED, resample
from .branching import branching
from .generalization import generalization_gap
from .intervals import critical_with_intervals, lr_scaling_with_intervals, per_batch_intervals
from .load import Run
from .lr_rules import N_PARAMS
from .noise import noise_scale
from .numbers import finite_or_none
from .range_test import range_test_comparison
from .regimes import regimes as find_regimes
from .results import Analysis, CriticalBatchFit, LrScalingFit, NoiseScale, PerBatchRow, Regimes
from .schedules import modes_of, schedule_comparison
from .steps import trial_table

# Every fit sets a reason with each None it returns; this only keeps a missing one visible.
UNEXPLAINED = "not estimated (no reason recorded)"


def _per_batch_rows(per_batch: pd.DataFrame) -> tuple[PerBatchRow, ...]:
    return tuple(
        PerBatchRow(
            batch_size=int(row["batch_size"]),
            best_lr=finite_or_none(row["best_lr"]),
            lr_on_edge=bool(row["lr_on_edge"]),
            steps_to_target=finite_or_none(row["steps_to_target"]),
            examples_to_target=finite_or_none(row["examples_to_target"]),
            trials=int(row["trials"]),
            reached=int(row["reached"]),
        )
        for _, row in per_batch.iterrows()
    )


def analyse(run: Run, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Analysis:
    """Run every step of the analysis on ``run`` with ``n_boot`` bootstrap resamples.

    A run that sweeps ``search.train_fraction`` is analysed on its largest fraction (all of
    the data, as a rule); ``Analysis.subsets`` holds every trial of every fraction. One with
    several ``[schedule]`` modes is analysed on its first (decay_lr where it has it);
    ``Analysis.schedules`` compares them all."""
    target = run.target
    schedules = schedule_comparison(run)
    if schedules is not None:
        modes = modes_of(run)
        run = run.only(modes.index[modes == schedules.table["mode"].iloc[0]])
    subsets = trial_table(run) if len(run.fractions) > 1 else None
    run = run.at_fraction(run.fractions[-1]) if subsets is not None else run
    table = trial_table(run)
    summary = summary_from_table(table, target)
    boot = resample(batch_trials(table, target), n_boot=n_boot, seed=seed)
    summary = per_batch_intervals(summary, boot)
    gap, gap_column = generalization_gap(table, summary)
    summary = summary.merge(gap, on="batch_size", how="left")
    noise = noise_scale(run, summary)
    summary["b_simple_at_target"] = summary["batch_size"].map(noise.per_batch).astype(float)

    critical = critical_with_intervals(summary, boot)
    finite_s = summary["steps_to_target"].to_numpy(dtype=float)
    summary["steps_over_s_min"] = finite_s / critical.s_min if critical.s_min is not None else np.nan
    lr = lr_scaling_with_intervals(summary, boot)
    reg = find_regimes(summary["batch_size"].to_numpy(), finite_s)
    a = Analysis(
        run=run,
        target=target,
        trials=table,
        per_batch=summary,
        per_batch_rows=_per_batch_rows(summary),
        critical=critical,
        lr_scaling=lr,
        regimes=reg,
        noise=noise,
        boot=boot,
        n_boot=n_boot,
        seed=seed,
        gap_train_column=gap_column,
        subsets=subsets,
        branched=branching(run.run_dir, run.study),
        schedules=schedules,
        reasons=_reasons(critical, lr, reg, noise, summary),
    )
    return dataclasses.replace(a, range_test=range_test_comparison(a))  # it reads the sweep's best LRs


def _reasons(
    c: CriticalBatchFit, lr: LrScalingFit, reg: Regimes, noise: NoiseScale, per_batch: pd.DataFrame
) -> dict[str, str]:
    """fits.json key path -> why its value is null, in the order of the file."""
    r: dict[str, str] = {}
    if c.b_crit is None:
        for k in ("b_crit", "b_crit_ci95", "s_min", "e_min"):
            r[f"critical_batch.{k}"] = c.reason or UNEXPLAINED
    elif c.b_crit_ci95 is None or None in c.b_crit_ci95:
        r["critical_batch.b_crit_ci95"] = c.ci_reason or UNEXPLAINED
    if lr.exponent is None:
        for k in ("exponent", "exponent_ci95", "preferred_rule", "aicc"):
            r[f"lr_scaling.{k}"] = lr.reason or UNEXPLAINED
    else:
        if lr.exponent_ci95 is None or None in lr.exponent_ci95:
            r["lr_scaling.exponent_ci95"] = lr.ci_reason or "the bootstrap interval is open"
        for rule, v in lr.aicc.items():
            if v is None:
                p = N_PARAMS[rule]
                r[f"lr_scaling.aicc.{rule}"] = (
                    f"AICc of a {p}-parameter rule needs at least {p + 3} interior optima; {lr.n_points} available"
                )
        if lr.preferred_rule is None:
            r["lr_scaling.preferred_rule"] = lr.reason or UNEXPLAINED
    for k, why in reg.reasons.items():
        r[f"regimes.{k}"] = why
    if noise.b_simple is None:
        r["noise_scale.b_simple"] = (
            "the best trials never reached the target" if noise.measured else "the curves carry no grad_noise_scale"
        )
    for _, row in per_batch.iterrows():
        b = int(row["batch_size"])
        if row["censored"]:
            r[f"per_batch[{b}].steps_to_target"] = (
                f"censored: none of the {row['trials']} trials at B={b} reached the target"
            )
        if not np.isfinite(row["best_lr"]):
            r[f"per_batch[{b}].best_lr"] = "no trial at this batch size has a finite objective"
    return r
