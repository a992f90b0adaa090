"""The fits' 95% intervals, and which method gives them.

The run's bootstrap (over trials, or hierarchical over seeds; ``bootstrap``) is the method
whenever it can vary every point a fit uses. Where it cannot, at any fitted batch size (one
trial there, or only one that reached the target: every resample then repeats the full
data's value, and a percentile interval would be a false [x, x]), the intervals come from
the fit's own residuals instead (``profile_ci``): the profile likelihood for S(B) and
B_noise, the t interval for the free LR exponent. A fit that leaves no residual freedom,
or no scatter, gets None with the reason. Each result names its ``ci_method``.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/one", lr_grid=lambda b: [0.01 * b / 32])   # one trial per B
    from analysis.fits import analyse
    from analysis import load_run
    c = analyse(load_run("/tmp/one"), n_boot=200).critical
    c.b_crit_ci95, c.ci_method, c.ci_note       # (..., 'profile likelihood', 'resampling ...')
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from .bootstrap import Resamples, percentile_ci, varies
from .critical import critical_batch_batched, fit_critical_batch, steps_curve
from .lr_rules import GRID_FLOOR, fit_lr_rules, fit_lr_rules_batched, preferred_rule, select
from .profile_ci import hyperbola_shape, profile_intervals
from .results import NOISE_LAWS, RULES, Band, CriticalBatchFit, Interval, LrScalingFit

PROFILE = "profile likelihood"
# A pointwise band from fewer fitted resamples would show the resampling noise, not the fit's.
MIN_BAND_RESAMPLES = 20


def _batch_list(b: np.ndarray) -> str:
    return ", ".join(str(int(x)) for x in b)


def _fixed_note(boot: Resamples, b: np.ndarray, fixed: np.ndarray, what: str) -> str:
    if boot.n == 0:
        return "no bootstrap resamples were drawn (n_boot = 0)"
    return (
        f"resampling trials cannot vary {what} at B = {_batch_list(b[fixed])} (a single trial "
        "there decides it), so a bootstrap interval would be falsely narrow"
    )


def _exp(ci: Interval | None) -> Interval | None:
    """A log-scale interval on the natural scale; an open end stays open."""
    if ci is None:
        return None
    lo, hi = ci
    return (None if lo is None else float(np.exp(lo)), None if hi is None else float(np.exp(hi)))


def critical_with_intervals(per_batch: pd.DataFrame, boot: Resamples) -> CriticalBatchFit:
    """The S(B) fit with 95% intervals of B_crit, S_min, E_min and its band."""
    b = per_batch["batch_size"].to_numpy(dtype=float)
    s = per_batch["steps_to_target"].to_numpy(dtype=float)
    fit = fit_critical_batch(b, s)
    if fit.b_crit is None:
        return fit
    used = np.isfinite(s) & (s > 0)
    fixed = used & ~varies(boot.steps) if boot.n else used
    grid = np.geomspace(b[used].min() / 1.5, b[used].max() * 1.5, 120)
    if fixed.any():
        return _critical_profile(fit, b[used], s[used], grid, _fixed_note(boot, b, fixed, "S"))
    r = critical_batch_batched(b, boot.steps)
    # Resamples whose B_crit ran past the measured range keep their side of the ranking.
    b_crit_ci95 = percentile_ci(np.where(r.at_upper, np.inf, np.where(r.at_lower, 0.0, r.b_crit)))
    ci_reason = None
    if b_crit_ci95 is None:
        ci_reason = f"fewer than half of the {boot.n} resamples kept 3 batch sizes that reached the target"
    elif None in b_crit_ci95:
        ci_reason = "in over 2.5% of resamples B_crit ran past the measured range"
    ok = np.isfinite(r.b_crit)
    band = None
    if ok.sum() >= MIN_BAND_RESAMPLES:
        curves = steps_curve(grid[None, :], r.s_min[ok, None], r.b_crit[ok, None])
        lo, hi = np.percentile(curves, [2.5, 97.5], axis=0)
        band = Band(batch_size=grid, low=lo, high=hi)
    return replace(
        fit,
        b_crit_ci95=b_crit_ci95,
        s_min_ci95=percentile_ci(r.s_min),
        e_min_ci95=percentile_ci(r.e_min),
        ci_reason=ci_reason,
        band=band,
        n_boot_ok=int(ok.sum()),
        ci_method=boot.method,
    )


def _critical_profile(
    fit: CriticalBatchFit, b: np.ndarray, s: np.ndarray, grid: np.ndarray, note: str
) -> CriticalBatchFit:
    p = profile_intervals(np.log(b), np.log(s), hyperbola_shape, sign=1.0, band_x=np.log(grid))
    if p.c is None:
        return replace(fit, ci_note=note, ci_reason=f"{note}, and the fit's residuals give none: {p.reason}")
    b_crit_ci95 = _exp(p.c)
    open_end = b_crit_ci95 is not None and None in b_crit_ci95
    band = (
        Band(batch_size=grid, low=np.exp(p.band_low), high=np.exp(p.band_high))
        if p.band_low is not None and p.band_high is not None
        else None
    )
    return replace(
        fit,
        b_crit_ci95=b_crit_ci95,
        s_min_ci95=_exp(p.a),
        e_min_ci95=_exp(p.a_plus_c),
        band=band,
        ci_method=PROFILE,
        ci_note=note,
        ci_reason=(
            "the profile likelihood does not bound B_crit within 100x of the measured batch sizes on one side"
            if open_end
            else None
        ),
    )


def lr_scaling_with_intervals(per_batch: pd.DataFrame, boot: Resamples) -> LrScalingFit:
    """The LR rules, with the free exponent's and B_noise's intervals and the preferred rule."""
    b = per_batch["batch_size"].to_numpy(dtype=float)
    lr = per_batch["best_lr"].to_numpy(dtype=float)
    edge = per_batch["lr_on_edge"].to_numpy(dtype=bool)
    censored = ~np.isfinite(per_batch["steps_to_target"].to_numpy(dtype=float))
    # An edge optimum only bounds the true one, and at a censored batch size the "best" LR
    # optimises another objective (the target metric, not steps): both stay out of the fit.
    masked = np.where(edge | censored, np.nan, lr)
    used = np.isfinite(masked)
    spacing = per_batch["log_lr_spacing"].to_numpy(dtype=float)[used] if "log_lr_spacing" in per_batch else []
    floor = GRID_FLOOR * float(np.median(spacing)) if np.isfinite(spacing).all() and len(spacing) else 0.0
    fit = replace(
        fit_lr_rules(b, masked, sigma_floor=floor),
        excluded_edge=tuple(int(x) for x in b[edge]),
        excluded_censored=tuple(int(x) for x in b[censored & ~edge]),
    )
    if fit.exponent is None:
        return fit
    boot_lr = np.where(boot.on_edge | ~np.isfinite(boot.steps), np.nan, boot.lr)
    fixed = used & ~varies(boot_lr) if boot.n else used
    if fixed.any():
        return replace(fit, ci_note=_fixed_note(boot, b, fixed, "the best LR"))
    r = fit_lr_rules_batched(b, boot_lr)
    exponent_ci95 = percentile_ci(r.exponent)
    if exponent_ci95 is None:
        return replace(fit, ci_note=f"fewer than half of the {boot.n} resamples kept 3 interior LR optima")
    laws = {}
    for law in NOISE_LAWS:
        side = r.b_noise_side[law]
        ci = percentile_ci(np.where(side > 0, np.inf, np.where(side < 0, -np.inf, r.b_noise[law])))
        fitted = fit.laws[law]
        laws[law] = replace(
            fitted,
            b_noise_ci95=ci if fitted.identified else None,
            ci_reason=(
                fitted.ci_reason
                if not fitted.identified
                else None
                if ci is not None and None not in ci
                else "in over 2.5% of resamples B_noise ran past the measured range"
            ),
        )
    fit = select(replace(fit, laws=laws), exponent_ci95, boot.method, None)
    chosen = preferred_rule(r.aicc, fit.consistent)
    chosen = chosen[chosen != ""]
    return replace(
        fit, selection_frequency=({rule: float(np.mean(chosen == rule)) for rule in RULES} if chosen.size else {})
    )


def per_batch_intervals(per_batch: pd.DataFrame, boot: Resamples) -> pd.DataFrame:
    """Bootstrap 95% intervals of S and of the best LR at each batch size; NaN where the
    resamples cannot vary the value (a single trial decides it) or give no estimate."""
    steps_vary, lr_vary = varies(boot.steps), varies(boot.lr)
    lows, highs, lr_lo, lr_hi = [], [], [], []
    for j in range(len(per_batch)):
        ci = (
            percentile_ci(boot.steps[:, j])
            if np.isfinite(per_batch["steps_to_target"].iat[j]) and steps_vary[j]
            else None
        )
        lows.append(np.nan if ci is None or ci[0] is None else ci[0])
        highs.append(np.nan if ci is None or ci[1] is None else ci[1])
        ci = percentile_ci(boot.lr[:, j]) if lr_vary[j] else None
        lr_lo.append(np.nan if ci is None or ci[0] is None else ci[0])
        lr_hi.append(np.nan if ci is None or ci[1] is None else ci[1])
    return per_batch.assign(
        steps_ci95_low=lows,
        steps_ci95_high=highs,
        best_lr_ci95_low=lr_lo,
        best_lr_ci95_high=lr_hi,
        steps_ci_fixed=~steps_vary & np.isfinite(per_batch["steps_to_target"].to_numpy(dtype=float)),
    )
