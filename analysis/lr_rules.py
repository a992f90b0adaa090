"""Which learning-rate scaling rule the best LRs follow, and whether it agrees with the free fit.

On x = log B, y = log eta*(B):
- linear (Goyal et al. 2017): y = c + x;
- sqrt (Krizhevsky 2014, Malladi et al. 2022): y = c + x / 2;
- constant (the flat optimum of many Adam sweeps): y = c;
- power (free exponent k): y = c + k x, ordinary least squares;
- saturating (McCandlish et al. 2018): eta = eta_max / (1 + B_noise / B), NLS on log eta;
- surge (Li et al. 2024): eta = eta_max / (1/2 (sqrt(B_noise/B) + sqrt(B/B_noise))), rising
  as sqrt(B) below B_noise and falling as 1/sqrt(B) above, NLS on log eta.
Models are compared by AICc = n ln(RSS/n) + 2k + 2k(k+1)/(n-k-1) for Gaussian log-residuals,
with k = curve parameters + 1 (the residual variance counts, as usual for least squares).
The preferred rule is chosen by ``SELECTION``: only rules consistent with the free fit are
candidates, so a preferred rule never contradicts the free exponent's interval. Everything
is batched over rows (bootstrap resamples).

    from analysis.lr_rules import fit_lr_rules
    fit_lr_rules([32, 64, 128, 256, 512], [0.01, 0.021, 0.039, 0.082, 0.16]).preferred_rule   # 'linear'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .hyperbola_fit import fit_log_hyperbola
from .numbers import format_interval, format_number
from .profile_ci import hyperbola_shape, profile_intervals, slope_interval, surge_shape
from .results import FIXED_RULES, NOISE_LAWS, RULES, Interval, LrScalingFit, NoiseLaw
from .shape_fit import fit_shape

N_PARAMS: dict[str, int] = {"linear": 1, "sqrt": 1, "constant": 1, "power": 2, "saturating": 2, "surge": 2}
TIE_AICC = 2.0
MIN_POINTS = 3
# A best LR read off a grid is known to about a third of the grid's log spacing (SCIENCE.md 5).
GRID_FLOOR = 0.33
RESIDUAL_EXPONENT = "residual t interval"
RESIDUAL_B_NOISE = "profile likelihood"
SELECTION = (
    "lowest AICc among the rules consistent with the free fit, a fixed rule (linear, square root, "
    "constant) winning when within 2 of the best; a rule is consistent when the log-log slope of "
    "its fitted curve over the fitted batch sizes lies inside the free exponent's 95% interval "
    "(the free power law always is) and, for the saturating and surge laws, when B_noise is not "
    "pinned 100x beyond the measured batch sizes"
)
_SHAPES = {"saturating": hyperbola_shape, "surge": surge_shape}


@dataclass(frozen=True)
class LrRuleRows:
    """The rules fitted to every row of a (resamples, batch sizes) LR array; arrays are (r,)."""

    n_points: np.ndarray
    """Finite LRs in the row."""

    exponent: np.ndarray
    """Free exponent of the power rule; NaN with fewer than 3 points."""

    intercept: dict[str, np.ndarray]
    """Log-LR at log B = 0 of the fixed rules and the power rule."""

    eta_max: dict[str, np.ndarray]
    """eta_max of each noise law."""

    b_noise: dict[str, np.ndarray]
    """B_noise of each noise law."""

    b_noise_side: dict[str, np.ndarray]
    """-1 / +1 where B_noise is pinned below / above the measured range, 0 where identified."""

    rule_exponent: dict[str, np.ndarray]
    """Log-log slope of each rule's fitted curve over the row's points."""

    aicc: dict[str, np.ndarray]
    """AICc of each rule in ``RULES``; NaN where the row has too few points for that rule."""


def _aicc(rss: np.ndarray, n: np.ndarray, p: int) -> np.ndarray:
    k = p + 1  # the residual variance is estimated too
    # A perfect fit would give log(0); floor RSS at float noise so ties stay ties.
    with np.errstate(divide="ignore", invalid="ignore"):
        rss = np.maximum(rss, n * 1e-12)
        out = n * np.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)
    return np.where(n - k - 1 > 0, out, np.nan)


def fit_lr_rules_batched(batch_sizes: np.ndarray, lrs: np.ndarray) -> LrRuleRows:
    """Fit all rules to each row of ``lrs`` (r, m; NaN = excluded)."""
    b = np.asarray(batch_sizes, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(np.atleast_2d(np.asarray(lrs, dtype=float)))
    x = np.log(b)
    w = np.isfinite(y)
    wf = w.astype(float)
    y0 = np.where(w, y, 0.0)
    n = wf.sum(axis=1)
    sn = np.maximum(n, 1)
    mx = (wf * x).sum(axis=1) / sn
    my = (wf * y0).sum(axis=1) / sn
    dx = np.where(w, x - mx[:, None], 0.0)
    dy = np.where(w, y0 - my[:, None], 0.0)
    sxx = (dx * dx).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = (dx * dy).sum(axis=1) / sxx
    enough = (n >= MIN_POINTS) & (sxx > 0)
    intercept: dict[str, np.ndarray] = {}
    rss: dict[str, np.ndarray] = {}
    rule_exponent: dict[str, np.ndarray] = {}
    for rule, kk in FIXED_RULES.items():
        intercept[rule] = my - kk * mx
        rss[rule] = ((dy - kk * dx) ** 2).sum(axis=1)
        rule_exponent[rule] = np.full(n.shape, kk)
    intercept["power"] = my - k * mx
    rss["power"] = ((dy - k[:, None] * dx) ** 2).sum(axis=1)
    rule_exponent["power"] = k
    eta_max, b_noise, side = {}, {}, {}
    sat = fit_log_hyperbola(b, np.where(w, y, np.nan), sign=-1.0)
    surge = fit_shape(x, np.where(w, y, np.nan), surge_shape, sign=-1.0)
    for law, a, c, r, s in (
        ("saturating", sat.a, sat.c, sat.rss, np.where(sat.at_lower, -1, np.where(sat.at_upper, 1, 0))),
        ("surge", surge.a, surge.c, surge.rss, np.where(surge.at_bound, np.where(surge.c > mx, 1, -1), 0)),
    ):
        eta_max[law], b_noise[law], side[law], rss[law] = np.exp(a), np.exp(c), s, r
        # The slope of the fitted curve -g(c; x) on x over the row's points (intercept aside).
        g = _SHAPES[law](c, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            rule_exponent[law] = -(dx * np.where(w, g, 0.0)).sum(axis=1) / sxx
    aicc = {rule: np.where(enough, _aicc(rss[rule], n, N_PARAMS[rule]), np.nan) for rule in RULES}
    return LrRuleRows(
        n_points=n.astype(int),
        exponent=np.where(enough, k, np.nan),
        intercept=intercept,
        eta_max=eta_max,
        b_noise=b_noise,
        b_noise_side=side,
        rule_exponent={r: np.where(enough, v, np.nan) for r, v in rule_exponent.items()},
        aicc=aicc,
    )


def preferred_rule(aicc: Mapping[str, np.ndarray], allowed: Mapping[str, bool] | None = None) -> np.ndarray:
    """Per row, the lowest-AICc allowed rule, a fixed rule winning ties within 2; '' if none.

    A rule missing from ``aicc`` or ``allowed`` takes no part."""
    rows = np.broadcast_shapes(*(np.shape(v) for v in aicc.values()))
    table = np.stack([np.asarray(aicc.get(r, np.full(rows, np.nan)), dtype=float) for r in RULES], axis=1)
    ok = np.array([True if allowed is None else bool(allowed.get(r, False)) for r in RULES])
    filled = np.where(np.isfinite(table) & ok[None, :], table, np.inf)
    best = filled.min(axis=1)
    fixed_cols = np.array([i for i, r in enumerate(RULES) if r in FIXED_RULES])
    fixed = filled[:, fixed_cols]
    fixed_wins = fixed.min(axis=1) <= best + TIE_AICC
    choice = np.where(fixed_wins, fixed_cols[fixed.argmin(axis=1)], filled.argmin(axis=1))
    names = np.array(RULES, dtype=object)[choice]
    return np.where(np.isfinite(best), names, "")


def consistent_rules(
    rule_exponent: Mapping[str, float | None], identified: Mapping[str, bool], ci: Interval | None
) -> dict[str, bool]:
    """Per rule: may it be preferred, given the free exponent's interval (None: unchecked)."""
    lo, hi = ci if ci is not None else (None, None)
    out = {}
    for rule in RULES:
        k = rule_exponent.get(rule)
        inside = k is not None and (lo is None or lo <= k + 1e-9) and (hi is None or k <= hi + 1e-9)
        out[rule] = rule == "power" or (inside and identified.get(rule, True))
    return out


def select(
    fit: LrScalingFit, exponent_ci95: Interval | None, ci_method: str | None, ci_reason: str | None
) -> LrScalingFit:
    """``fit`` with the interval set and the preferred rule chosen by ``SELECTION``."""
    identified = {law: v.identified for law, v in fit.laws.items()}
    consistent = consistent_rules(fit.rule_exponent, identified, exponent_ci95)
    aicc = {r: np.array([np.nan if v is None else v]) for r, v in fit.aicc.items()}
    preferred = str(preferred_rule(aicc, consistent)[0]) or None
    note = None
    if exponent_ci95 is None:
        note = (
            "the free exponent has no interval, so the rules were compared by AICc alone, "
            "unchecked against the free fit"
        )
    elif preferred == "power":
        note = f"no fixed rule fits; free exponent {format_number(fit.exponent)} {format_interval(exponent_ci95)}"
    return replace(
        fit,
        exponent_ci95=exponent_ci95,
        ci_method=ci_method if exponent_ci95 is not None else None,
        ci_reason=ci_reason,
        consistent=consistent,
        preferred_rule=preferred,
        selection_note=note,
        reason=None if preferred else f"AICc needs at least {MIN_POINTS + 1} points for any rule",
    )


def b_noise_profile(
    batch_sizes: np.ndarray, lrs: np.ndarray, law: str, sigma_floor: float = 0.0
) -> tuple[Interval | None, str | None]:
    """Profile-likelihood 95% interval of a noise law's B_noise, and why it is None or open."""
    x, y = np.log(np.asarray(batch_sizes, dtype=float)), np.log(np.asarray(lrs, dtype=float))
    p = profile_intervals(x, y, _SHAPES[law], sign=-1.0, sigma_floor=sigma_floor)
    if p.c is None:
        return None, p.reason
    lo, hi = (None if v is None else float(np.exp(v)) for v in p.c)
    return (lo, hi), (
        "B_noise is not bounded within 100x of the measured batch sizes on one side"
        if lo is None or hi is None
        else None
    )


def fit_lr_rules(
    batch_sizes: Sequence[float] | np.ndarray, lrs: Sequence[float | None] | np.ndarray, sigma_floor: float = 0.0
) -> LrScalingFit:
    """Fit and compare the rules on plain arrays (None/NaN = excluded, e.g. edge optima).

    The intervals are the residual ones (t interval of the exponent, profile likelihood of
    B_noise, sigma floored at ``sigma_floor``); ``analysis.fits`` replaces them with the
    bootstrap's where resampling trials moves the best LRs, and adds the exclusion fields.
    """
    b = np.asarray(batch_sizes, dtype=float)
    lr = np.array([np.nan if v is None else v for v in lrs], dtype=float)
    r = fit_lr_rules_batched(b, lr[None, :])
    n = int(r.n_points[0])
    if not np.isfinite(r.exponent[0]):
        return LrScalingFit(
            exponent=None,
            aicc={rule: None for rule in RULES},
            preferred_rule=None,
            n_points=n,
            reason=(f"{n} batch size(s) have an interior LR optimum; the LR rules need {MIN_POINTS}"),
        )
    keep = np.isfinite(lr) & (lr > 0)
    laws = {}
    for law in NOISE_LAWS:
        identified = bool(r.b_noise_side[law][0] == 0)
        ci, why = (
            b_noise_profile(b[keep], lr[keep], law, sigma_floor)
            if identified
            else (None, "B_noise is pinned 100x beyond the measured batch sizes")
        )
        laws[law] = NoiseLaw(
            eta_max=float(r.eta_max[law][0]),
            b_noise=float(r.b_noise[law][0]),
            identified=identified,
            b_noise_ci95=ci,
            ci_reason=why,
        )
    fit = LrScalingFit(
        exponent=float(r.exponent[0]),
        aicc={rule: (float(v[0]) if np.isfinite(v[0]) else None) for rule, v in r.aicc.items()},
        preferred_rule=None,
        n_points=n,
        intercept={rule: float(v[0]) for rule, v in r.intercept.items()},
        laws=laws,
        rule_exponent={rule: float(v[0]) for rule, v in r.rule_exponent.items()},
    )
    ci, why = slope_interval(np.log(b), np.log(np.where(keep, lr, np.nan)), sigma_floor=sigma_floor)
    return select(fit, ci, RESIDUAL_EXPONENT, why)


def rule_curve(rule: str, fit: LrScalingFit, batch_sizes: np.ndarray) -> np.ndarray:
    """The fitted LR of ``rule`` at ``batch_sizes``."""
    b = np.asarray(batch_sizes, dtype=float)
    if rule in NOISE_LAWS:
        law = fit.laws.get(rule)
        if law is None:
            raise ValueError(f"the {rule} rule was not fitted")
        return law.eta_max * np.exp(-_SHAPES[rule](np.array([np.log(law.b_noise)]), np.log(b))[0])
    k = fit.exponent if rule == "power" else FIXED_RULES[rule]
    if k is None or rule not in fit.intercept:
        raise ValueError(f"the {rule} rule was not fitted")
    return np.exp(fit.intercept[rule] + k * np.log(b))
