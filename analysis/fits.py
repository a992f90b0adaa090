"""The whole analysis of a run: ``analyse`` builds the typed ``results.Analysis``.

Steps to target per trial -> best trial and best LR per batch size -> critical batch size,
regimes, LR scaling rule, generalization gap, noise scale; the bootstrap reruns the
per-batch step on resampled trials and refits everything on each resample.

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

from dataclasses import replace

import numpy as np
import pandas as pd

from .best_lr import batch_trials, summary_from_table
from .bootstrap import DEFAULT_N_BOOT, DEFAULT_SEED, Resamples, percentile_ci, resample
from .critical import critical_batch_batched, fit_critical_batch, steps_curve
from .generalization import generalization_gap
from .load import Run
from .lr_rules import N_PARAMS, fit_lr_rules, fit_lr_rules_batched
from .noise import noise_scale
from .numbers import finite_or_none
from .regimes import regimes as find_regimes
from .results import RULES, Analysis, Band, CriticalBatchFit, LrScalingFit, NoiseScale, PerBatchRow, Regimes
from .steps import trial_table

# A pointwise band from fewer fitted resamples would show the resampling noise, not the fit's.
MIN_BAND_RESAMPLES = 20
# Every fit sets a reason with each None it returns; this only keeps a missing one visible.
UNEXPLAINED = "not estimated (no reason recorded)"


def _critical(per_batch: pd.DataFrame, boot: Resamples) -> CriticalBatchFit:
    b = per_batch["batch_size"].to_numpy(dtype=float)
    s = per_batch["steps_to_target"].to_numpy(dtype=float)
    fit = fit_critical_batch(b, s)
    if fit.b_crit is None:
        return fit
    r = critical_batch_batched(b, boot.steps)
    # Resamples whose B_crit ran past the measured range keep their side of the ranking.
    b_crit_ci95 = percentile_ci(np.where(r.at_upper, np.inf, np.where(r.at_lower, 0.0, r.b_crit)))
    ci_reason = None
    if b_crit_ci95 is None:
        ci_reason = (f"fewer than half of the {boot.n} resamples kept 3 batch sizes that "
                     "reached the target")
    elif None in b_crit_ci95:
        ci_reason = "in over 2.5% of resamples B_crit ran past the measured range"
    ok = np.isfinite(r.b_crit)
    band = None
    if ok.sum() >= MIN_BAND_RESAMPLES:
        grid = np.geomspace(b.min() / 1.5, b.max() * 1.5, 120)
        curves = steps_curve(grid[None, :], r.s_min[ok, None], r.b_crit[ok, None])
        lo, hi = np.percentile(curves, [2.5, 97.5], axis=0)
        band = Band(batch_size=grid, low=lo, high=hi)
    return replace(fit, b_crit_ci95=b_crit_ci95, s_min_ci95=percentile_ci(r.s_min),
                   e_min_ci95=percentile_ci(r.e_min), ci_reason=ci_reason, band=band,
                   n_boot_ok=int(ok.sum()))


def _lr_scaling(per_batch: pd.DataFrame, boot: Resamples) -> LrScalingFit:
    b = per_batch["batch_size"].to_numpy(dtype=float)
    lr = per_batch["best_lr"].to_numpy(dtype=float)
    edge = per_batch["lr_on_edge"].to_numpy(dtype=bool)
    censored = ~np.isfinite(per_batch["steps_to_target"].to_numpy(dtype=float))
    # An edge optimum only bounds the true one, and at a censored batch size the "best" LR
    # optimises another objective (the target metric, not steps): both stay out of the fit.
    fit = replace(fit_lr_rules(b, np.where(edge | censored, np.nan, lr)),
                  excluded_edge=tuple(int(x) for x in b[edge]),
                  excluded_censored=tuple(int(x) for x in b[censored & ~edge]))
    if fit.exponent is None:
        return fit
    r = fit_lr_rules_batched(b, np.where(boot.on_edge | ~np.isfinite(boot.steps), np.nan, boot.lr))
    exponent_ci95 = percentile_ci(r.exponent)
    chosen = r.preferred[r.preferred != ""]
    return replace(
        fit, exponent_ci95=exponent_ci95,
        ci_reason=(f"fewer than half of the {boot.n} resamples kept 3 interior LR optima"
                   if exponent_ci95 is None else None),
        selection_frequency=({rule: float(np.mean(chosen == rule)) for rule in RULES}
                             if chosen.size else {}))


def _per_batch_cis(per_batch: pd.DataFrame, boot: Resamples) -> pd.DataFrame:
    lows, highs, lr_lo, lr_hi = [], [], [], []
    for j in range(len(per_batch)):
        ci = percentile_ci(boot.steps[:, j]) if np.isfinite(per_batch["steps_to_target"].iat[j]) else None
        lows.append(np.nan if ci is None or ci[0] is None else ci[0])
        highs.append(np.nan if ci is None or ci[1] is None else ci[1])
        ci = percentile_ci(boot.lr[:, j])
        lr_lo.append(np.nan if ci is None or ci[0] is None else ci[0])
        lr_hi.append(np.nan if ci is None or ci[1] is None else ci[1])
    return per_batch.assign(steps_ci95_low=lows, steps_ci95_high=highs,
                            best_lr_ci95_low=lr_lo, best_lr_ci95_high=lr_hi)


def _per_batch_rows(per_batch: pd.DataFrame) -> tuple[PerBatchRow, ...]:
    return tuple(PerBatchRow(
        batch_size=int(row["batch_size"]),
        best_lr=finite_or_none(row["best_lr"]),
        lr_on_edge=bool(row["lr_on_edge"]),
        steps_to_target=finite_or_none(row["steps_to_target"]),
        examples_to_target=finite_or_none(row["examples_to_target"]),
        trials=int(row["trials"]),
        reached=int(row["reached"]),
    ) for _, row in per_batch.iterrows())


def analyse(run: Run, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Analysis:
    """Run every step of the analysis on ``run`` with ``n_boot`` bootstrap resamples."""
    target = run.target
    table = trial_table(run)
    summary = summary_from_table(table, target)
    boot = resample(batch_trials(table, target), n_boot=n_boot, seed=seed)
    summary = _per_batch_cis(summary, boot)
    summary = summary.merge(generalization_gap(table, summary), on="batch_size", how="left")
    noise = noise_scale(run, summary)
    summary["b_simple_at_target"] = summary["batch_size"].map(noise.per_batch).astype(float)

    critical = _critical(summary, boot)
    finite_s = summary["steps_to_target"].to_numpy(dtype=float)
    summary["steps_over_s_min"] = finite_s / critical.s_min if critical.s_min is not None else np.nan
    lr = _lr_scaling(summary, boot)
    reg = find_regimes(summary["batch_size"].to_numpy(), finite_s)
    return Analysis(run=run, target=target, trials=table, per_batch=summary,
                    per_batch_rows=_per_batch_rows(summary), critical=critical, lr_scaling=lr,
                    regimes=reg, noise=noise, boot=boot, n_boot=n_boot, seed=seed,
                    reasons=_reasons(critical, lr, reg, noise, summary))


def _reasons(c: CriticalBatchFit, lr: LrScalingFit, reg: Regimes, noise: NoiseScale,
             per_batch: pd.DataFrame) -> dict[str, str]:
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
                r[f"lr_scaling.aicc.{rule}"] = (f"AICc of a {p}-parameter rule needs at least "
                                                f"{p + 3} interior optima; {lr.n_points} available")
        if lr.preferred_rule is None:
            r["lr_scaling.preferred_rule"] = lr.reason or UNEXPLAINED
    for k, why in reg.reasons.items():
        r[f"regimes.{k}"] = why
    if noise.b_simple is None:
        r["noise_scale.b_simple"] = ("the best trials never reached the target" if noise.measured
                                     else "the curves carry no grad_noise_scale")
    for _, row in per_batch.iterrows():
        b = int(row["batch_size"])
        if row["censored"]:
            r[f"per_batch[{b}].steps_to_target"] = (
                f"censored: none of the {row['trials']} trials at B={b} reached the target")
        if not np.isfinite(row["best_lr"]):
            r[f"per_batch[{b}].best_lr"] = "no trial at this batch size has a finite objective"
    return r
