"""Which learning-rate scaling rule the best LRs follow: linear, square root, power, saturating.

On x = log B, y = log eta*(B):
- linear (Goyal et al. 2017): y = c + x;
- sqrt (Krizhevsky 2014, Malladi et al. 2022): y = c + x / 2;
- power (free exponent k): y = c + k x, ordinary least squares;
- saturating (McCandlish et al. 2018): eta = eta_max / (1 + B_noise / B), NLS on log eta.
Models are compared by AICc = n ln(RSS/n) + 2k + 2k(k+1)/(n-k-1) for Gaussian log-residuals,
with k = curve parameters + 1 (the residual variance counts, as usual for least squares); a
fixed rule (linear or sqrt) wins when its AICc is within 2 of the best. Everything is batched over rows (bootstrap resamples).

    from analysis.lr_rules import fit_lr_rules
    fit_lr_rules([32, 64, 128, 256], [0.01, 0.02, 0.04, 0.08])["preferred_rule"]   # 'linear'
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .hyperbola_fit import fit_log_hyperbola

RULES: tuple[str, ...] = ("linear", "sqrt", "power", "saturating")
FIXED_EXPONENTS: dict[str, float] = {"linear": 1.0, "sqrt": 0.5}
N_PARAMS: dict[str, int] = {"linear": 1, "sqrt": 1, "power": 2, "saturating": 2}
TIE_AICC = 2.0
MIN_POINTS = 3


def _aicc(rss: np.ndarray, n: np.ndarray, p: int) -> np.ndarray:
    k = p + 1  # the residual variance is estimated too
    # A perfect fit would give log(0); floor RSS at float noise so ties stay ties.
    with np.errstate(divide="ignore", invalid="ignore"):
        rss = np.maximum(rss, n * 1e-12)
        out = n * np.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)
    return np.where(n - k - 1 > 0, out, np.nan)


def fit_lr_rules_batched(batch_sizes: np.ndarray, lrs: np.ndarray) -> dict[str, Any]:
    """Fit all rules to each row of ``lrs`` (r, m; NaN = excluded). Arrays of shape (r,)."""
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
    return {
        "n_points": n.astype(int),
        "exponent": np.where(enough, k, np.nan),
        "intercept": intercept,  # log-LR intercepts of linear, sqrt and power at log B = 0
        "eta_max": np.exp(sat.a), "b_noise": np.exp(sat.c),
        "aicc": aicc,
        "preferred": preferred_rule(aicc),
    }


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


def fit_lr_rules(batch_sizes: Sequence[float] | np.ndarray, lrs: Sequence[float | None] | np.ndarray) -> dict[str, Any]:
    """Fit and compare the rules on plain arrays (None/NaN = excluded, e.g. edge optima).

    Returns exponent, aicc {rule: float|None}, preferred_rule, n_points, reason, and the
    fitted curves' parameters (intercepts, eta_max, b_noise) for plotting.
    """
    lr = np.array([np.nan if v is None else v for v in lrs], dtype=float)
    r = fit_lr_rules_batched(np.asarray(batch_sizes, dtype=float), lr[None, :])
    n = int(r["n_points"][0])
    out: dict[str, Any] = {
        "exponent": None, "aicc": {rule: None for rule in RULES}, "preferred_rule": None,
        "n_points": n, "reason": None, "intercept": {}, "eta_max": None, "b_noise": None,
    }
    if not np.isfinite(r["exponent"][0]):
        out["reason"] = (f"{n} batch size(s) have an interior LR optimum; "
                         f"the LR rules need {MIN_POINTS}")
        return out
    out["exponent"] = float(r["exponent"][0])
    out["aicc"] = {rule: (float(v[0]) if np.isfinite(v[0]) else None) for rule, v in r["aicc"].items()}
    out["preferred_rule"] = str(r["preferred"][0]) or None
    out["intercept"] = {rule: float(v[0]) for rule, v in r["intercept"].items()}
    out["eta_max"], out["b_noise"] = float(r["eta_max"][0]), float(r["b_noise"][0])
    if out["preferred_rule"] is None:
        out["reason"] = f"AICc needs at least {MIN_POINTS + 1} points for any rule"
    return out


def rule_curve(rule: str, fit: dict[str, Any], batch_sizes: np.ndarray) -> np.ndarray:
    """The fitted LR of ``rule`` at ``batch_sizes``."""
    b = np.asarray(batch_sizes, dtype=float)
    if rule == "saturating":
        return fit["eta_max"] / (1.0 + fit["b_noise"] / b)
    k = fit["exponent"] if rule == "power" else FIXED_EXPONENTS[rule]
    return np.exp(fit["intercept"][rule] + k * np.log(b))
