"""Which learning-rate scaling rule the best LRs follow: linear, square root, power, saturating.

On x = log B, y = log eta*(B):
- linear (Goyal et al. 2017): y = c + x;
- sqrt (Krizhevsky 2014, Malladi et al. 2022): y = c + x / 2;
- power (free exponent k): y = c + k x, ordinary least squares;
- saturating (McCandlish et al. 2018): eta = eta_max / (1 + B_noise / B), NLS on log eta.
Models are compared by AICc = n ln(RSS/n) + 2k + 2k(k+1)/(n-k-1) for Gaussian log-residuals,
with k = curve parameters + 1 (the residual variance counts, as usual for least squares); a
fixed rule (linear or sqrt) wins when its AICc is within 2 of the best. Everything is batched
over rows (bootstrap resamples).

    from analysis.lr_rules import fit_lr_rules
    fit_lr_rules([32, 64, 128, 256], [0.01, 0.02, 0.04, 0.08]).preferred_rule   # 'linear'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .hyperbola_fit import fit_log_hyperbola
from .results import RULES, LrScalingFit

FIXED_EXPONENTS: dict[str, float] = {"linear": 1.0, "sqrt": 0.5}
N_PARAMS: dict[str, int] = {"linear": 1, "sqrt": 1, "power": 2, "saturating": 2}
TIE_AICC = 2.0
MIN_POINTS = 3


@dataclass(frozen=True)
class LrRuleRows:
    """The rules fitted to every row of a (resamples, batch sizes) LR array; arrays are (r,)."""

    n_points: np.ndarray
    """Finite LRs in the row."""

    exponent: np.ndarray
    """Free exponent of the power rule; NaN with fewer than 3 points."""

    intercept: dict[str, np.ndarray]
    """Log-LR at log B = 0 of the linear, sqrt and power rules."""

    eta_max: np.ndarray
    """eta_max of the saturating rule."""

    b_noise: np.ndarray
    """B_noise of the saturating rule."""

    aicc: dict[str, np.ndarray]
    """AICc of each rule in ``RULES``; NaN where the row has too few points for that rule."""

    preferred: np.ndarray
    """The preferred rule's name; '' where no rule has an AICc."""


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
    for rule, kk in FIXED_EXPONENTS.items():
        intercept[rule] = my - kk * mx
        rss[rule] = ((dy - kk * dx) ** 2).sum(axis=1)
    intercept["power"] = my - k * mx
    rss["power"] = ((dy - k[:, None] * dx) ** 2).sum(axis=1)
    sat = fit_log_hyperbola(b, np.where(w, y, np.nan), sign=-1.0)
    rss["saturating"] = sat.rss
    aicc = {rule: np.where(enough, _aicc(rss[rule], n, N_PARAMS[rule]), np.nan) for rule in RULES}
    return LrRuleRows(n_points=n.astype(int), exponent=np.where(enough, k, np.nan),
                      intercept=intercept, eta_max=np.exp(sat.a), b_noise=np.exp(sat.c),
                      aicc=aicc, preferred=preferred_rule(aicc))


def preferred_rule(aicc: dict[str, np.ndarray]) -> np.ndarray:
    """Per row, the rule with the lowest AICc, a fixed rule winning ties within 2; '' if none."""
    table = np.stack([aicc[r] for r in RULES], axis=1)
    filled = np.where(np.isfinite(table), table, np.inf)
    best = filled.min(axis=1)
    fixed = filled[:, :2]  # linear, sqrt
    fixed_best = fixed.argmin(axis=1)
    fixed_wins = fixed.min(axis=1) <= best + TIE_AICC
    choice = np.where(fixed_wins, fixed_best, filled.argmin(axis=1))
    names = np.array(RULES, dtype=object)[choice]
    return np.where(np.isfinite(best), names, "")


def fit_lr_rules(batch_sizes: Sequence[float] | np.ndarray,
                 lrs: Sequence[float | None] | np.ndarray) -> LrScalingFit:
    """Fit and compare the rules on plain arrays (None/NaN = excluded, e.g. edge optima).

    The bootstrap and exclusion fields of the result stay empty; ``analysis.fits`` adds them.
    """
    lr = np.array([np.nan if v is None else v for v in lrs], dtype=float)
    r = fit_lr_rules_batched(np.asarray(batch_sizes, dtype=float), lr[None, :])
    n = int(r.n_points[0])
    if not np.isfinite(r.exponent[0]):
        return LrScalingFit(exponent=None, aicc={rule: None for rule in RULES}, preferred_rule=None,
                            n_points=n, reason=(f"{n} batch size(s) have an interior LR optimum; "
                                                f"the LR rules need {MIN_POINTS}"))
    preferred = str(r.preferred[0]) or None
    return LrScalingFit(
        exponent=float(r.exponent[0]),
        aicc={rule: (float(v[0]) if np.isfinite(v[0]) else None) for rule, v in r.aicc.items()},
        preferred_rule=preferred,
        n_points=n,
        reason=None if preferred else f"AICc needs at least {MIN_POINTS + 1} points for any rule",
        intercept={rule: float(v[0]) for rule, v in r.intercept.items()},
        eta_max=float(r.eta_max[0]),
        b_noise=float(r.b_noise[0]),
    )


def rule_curve(rule: str, fit: LrScalingFit, batch_sizes: np.ndarray) -> np.ndarray:
    """The fitted LR of ``rule`` at ``batch_sizes``."""
    b = np.asarray(batch_sizes, dtype=float)
    if rule == "saturating":
        if fit.eta_max is None or fit.b_noise is None:
            raise ValueError("the saturating rule was not fitted")
        return fit.eta_max / (1.0 + fit.b_noise / b)
    k = fit.exponent if rule == "power" else FIXED_EXPONENTS[rule]
    if k is None or rule not in fit.intercept:
        raise ValueError(f"the {rule} rule was not fitted")
    return np.exp(fit.intercept[rule] + k * np.log(b))
