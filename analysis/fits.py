"""The whole analysis of a run in one object, and its ``report/fits.json`` form.

Steps to target per trial -> best trial and best LR per batch size -> critical batch size,
regimes, LR scaling rule, generalization gap, noise scale; the bootstrap reruns the
per-batch step on resampled trials and refits everything on each resample.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    from analysis.fits import analyse, fits_json
    a = analyse(load_run("/tmp/demo"), n_boot=1000)
    fits_json(a)["critical_batch"]["b_crit"]
    a.reasons        # why each null in fits.json is null
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .best_lr import batch_trials, summary_from_table
from .bootstrap import DEFAULT_N_BOOT, DEFAULT_SEED, Resamples, percentile_ci, resample
from .critical import critical_batch_batched, fit_critical_batch, steps_curve
from .generalization import generalization_gap
from .load import Run, Target
from .lr_rules import RULES, fit_lr_rules, fit_lr_rules_batched
from .noise import has_noise_scale, noise_at_target, noise_curves
from .regimes import regimes as find_regimes
from .steps import trial_table


@dataclass
class Analysis:
    run: Run
    target: Target
    trials: pd.DataFrame  # one row per trial (steps.trial_table)
    per_batch: pd.DataFrame  # one row per batch size, with bootstrap CIs, gap and noise scale
    critical: dict[str, Any]
    lr_scaling: dict[str, Any]
    regimes: dict[str, Any]
    noise: dict[str, Any]
    boot: Resamples
    n_boot: int
    seed: int
    reasons: dict[str, str] = field(default_factory=dict)  # fits.json key path -> why null


def _critical(per_batch: pd.DataFrame, boot: Resamples) -> dict[str, Any]:
    b = per_batch["batch_size"].to_numpy(dtype=float)
    s = per_batch["steps_to_target"].to_numpy(dtype=float)
    out = fit_critical_batch(b, s)
    out.update(b_crit_ci95=None, s_min_ci95=None, e_min_ci95=None, ci_reason=None, band=None)
    if out["b_crit"] is None:
        return out
    r = critical_batch_batched(b, boot.steps)
    # Resamples whose B_crit ran past the measured range keep their side of the ranking.
    b_crit = np.where(r["at_upper"], np.inf, np.where(r["at_lower"], 0.0, r["b_crit"]))
    out["b_crit_ci95"] = percentile_ci(b_crit)
    out["s_min_ci95"] = percentile_ci(r["s_min"])
    out["e_min_ci95"] = percentile_ci(r["e_min"])
    if out["b_crit_ci95"] is None:
        out["ci_reason"] = (f"fewer than half of the {boot.n} resamples kept 3 batch sizes that "
                            "reached the target")
    elif None in out["b_crit_ci95"]:
        out["ci_reason"] = "in over 2.5% of resamples B_crit ran past the measured range"
    ok = np.isfinite(r["b_crit"])
    if ok.sum() >= 20:
        grid = np.geomspace(b.min() / 1.5, b.max() * 1.5, 120)
        curves = steps_curve(grid[None, :], r["s_min"][ok, None], r["b_crit"][ok, None])
        lo, hi = np.percentile(curves, [2.5, 97.5], axis=0)
        out["band"] = {"batch_size": grid, "low": lo, "high": hi}
    out["n_boot_ok"] = int(ok.sum())
    return out


def _lr_scaling(per_batch: pd.DataFrame, boot: Resamples) -> dict[str, Any]:
    b = per_batch["batch_size"].to_numpy(dtype=float)
    lr = per_batch["best_lr"].to_numpy(dtype=float)
    edge = per_batch["lr_on_edge"].to_numpy(dtype=bool)
    censored = ~np.isfinite(per_batch["steps_to_target"].to_numpy(dtype=float))
    # An edge optimum only bounds the true one, and at a censored batch size the "best" LR
    # optimises another objective (the target metric, not steps): both stay out of the fit.
    out = fit_lr_rules(b, np.where(edge | censored, np.nan, lr))
    out["excluded_edge"] = [int(x) for x in b[edge]]
    out["excluded_censored"] = [int(x) for x in b[censored & ~edge]]
    out.update(exponent_ci95=None, selection_frequency={}, ci_reason=None)
    if out["exponent"] is None:
        return out
    r = fit_lr_rules_batched(b, np.where(boot.on_edge | ~np.isfinite(boot.steps), np.nan, boot.lr))
    out["exponent_ci95"] = percentile_ci(r["exponent"])
    if out["exponent_ci95"] is None:
        out["ci_reason"] = f"fewer than half of the {boot.n} resamples kept 3 interior LR optima"
    chosen = r["preferred"][r["preferred"] != ""]
    if chosen.size:
        out["selection_frequency"] = {rule: float(np.mean(chosen == rule)) for rule in RULES}
    return out


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


def analyse(run: Run, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Analysis:
    """Run every step of the analysis on ``run`` with ``n_boot`` bootstrap resamples."""
    target = run.target
    table = trial_table(run)
    summary = summary_from_table(table, target)
    boot = resample(batch_trials(table, target), n_boot=n_boot, seed=seed)
    summary = _per_batch_cis(summary, boot)
    summary = summary.merge(generalization_gap(table, summary), on="batch_size", how="left")
    per_b_noise, b_simple = noise_at_target(run, summary)
    summary["b_simple_at_target"] = summary["batch_size"].map(per_b_noise).astype(float)

    critical = _critical(summary, boot)
    finite_s = summary["steps_to_target"].to_numpy(dtype=float)
    if critical["s_min"] is not None:
        summary["steps_over_s_min"] = finite_s / critical["s_min"]
    else:
        summary["steps_over_s_min"] = np.nan
    lr = _lr_scaling(summary, boot)
    reg = find_regimes(summary["batch_size"].to_numpy(), finite_s)
    noise = {
        "measured": has_noise_scale(run), "b_simple": b_simple, "per_batch": per_b_noise,
        "curves": noise_curves(run, summary),
    }
    a = Analysis(run, target, table, summary, critical, lr, reg, noise, boot, n_boot, seed)
    a.reasons = _reasons(a)
    return a


def _reasons(a: Analysis) -> dict[str, str]:
    r: dict[str, str] = {}
    c = a.critical
    if c["b_crit"] is None:
        for k in ("b_crit", "b_crit_ci95", "s_min", "e_min"):
            r[f"critical_batch.{k}"] = c["reason"]
    elif c["b_crit_ci95"] is None or None in c["b_crit_ci95"]:
        r["critical_batch.b_crit_ci95"] = c["ci_reason"]
    lr = a.lr_scaling
    if lr["exponent"] is None:
        for k in ("exponent", "exponent_ci95", "preferred_rule", "aicc"):
            r[f"lr_scaling.{k}"] = lr["reason"]
    else:
        if lr["exponent_ci95"] is None or None in lr["exponent_ci95"]:
            r["lr_scaling.exponent_ci95"] = lr["ci_reason"] or "the bootstrap interval is open"
        for rule, v in lr["aicc"].items():
            if v is None:
                p = 2 if rule in ("power", "saturating") else 1
                r[f"lr_scaling.aicc.{rule}"] = (f"AICc of a {p}-parameter rule needs at least "
                                                f"{p + 3} interior optima; {lr['n_points']} available")
        if lr["preferred_rule"] is None:
            r["lr_scaling.preferred_rule"] = lr["reason"]
    for k, why in a.regimes["reasons"].items():
        r[f"regimes.{k}"] = why
    if a.noise["b_simple"] is None:
        r["noise_scale.b_simple"] = (
            "the best trials never reached the target" if a.noise["measured"]
            else "the curves carry no grad_noise_scale")
    for _, row in a.per_batch.iterrows():
        b = int(row["batch_size"])
        if row["censored"]:
            r[f"per_batch[{b}].steps_to_target"] = (
                f"censored: none of the {row['trials']} trials at B={b} reached the target")
        if not np.isfinite(row["best_lr"]):
            r[f"per_batch[{b}].best_lr"] = "no trial at this batch size has a finite objective"
    return r


def _num(x: Any, integer: bool = False) -> Any:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(v):
        return None
    return int(round(v)) if integer else v


def _ci(ci: list[float | None] | None) -> list[float | None] | None:
    return None if ci is None else [_num(ci[0]), _num(ci[1])]


def fits_json(a: Analysis) -> dict[str, Any]:
    """The contract's fits.json: same keys and nesting, null where not estimable."""
    per_batch = [{
        "batch_size": int(row["batch_size"]),
        "best_lr": _num(row["best_lr"]),
        "lr_on_edge": bool(row["lr_on_edge"]),
        "steps_to_target": _num(row["steps_to_target"]),
        "examples_to_target": _num(row["examples_to_target"]),
        "trials": int(row["trials"]),
        "reached": int(row["reached"]),
    } for _, row in a.per_batch.iterrows()]
    c, lr, reg = a.critical, a.lr_scaling, a.regimes
    return {
        "target": {"metric": a.target.metric, "mode": a.target.mode, "value": a.target.value},
        "per_batch": per_batch,
        "critical_batch": {
            "b_crit": _num(c["b_crit"]), "b_crit_ci95": _ci(c["b_crit_ci95"]),
            "s_min": _num(c["s_min"]), "e_min": _num(c["e_min"]), "n_points": int(c["n_points"]),
        },
        "lr_scaling": {
            "exponent": _num(lr["exponent"]), "exponent_ci95": _ci(lr["exponent_ci95"]),
            "preferred_rule": lr["preferred_rule"],
            "aicc": {rule: _num(lr["aicc"].get(rule)) for rule in ("linear", "sqrt", "power", "saturating")},
        },
        "regimes": {
            "perfect_scaling_up_to": _num(reg["perfect_scaling_up_to"], integer=True),
            "diminishing_returns_up_to": _num(reg["diminishing_returns_up_to"], integer=True),
        },
        "noise_scale": {"b_simple": _num(a.noise["b_simple"])},
    }
