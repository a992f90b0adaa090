"""Critical batch size (McCandlish et al. 2018): S(B) = S_min (1 + B_crit / B).

Equivalently E(B) = E_min (1 + B / B_crit) with E = B S and B_crit = E_min / S_min. The fit
starts from least squares of S on 1/B and refines by non-linear least squares on log S
(see ``hyperbola_fit``). Censored batch sizes (NaN/None steps) are dropped. With fewer than
three points, or a B_crit pinned beyond the measured range (S still falls as 1/B, or does
not fall at all), every value is None and ``reason`` says why.

    from analysis.critical import fit_critical_batch
    fit_critical_batch([32, 64, 128, 256, 512, 1024], [9000, 5000, 3000, 2000, 1500, 1250])
    # {'b_crit': 256.0, 's_min': 1000.0, 'e_min': 256000.0, 'n_points': 6, 'reason': None}
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .hyperbola_fit import BOUND_DECADES, fit_log_hyperbola

MIN_POINTS = 3


def critical_batch_batched(batch_sizes: np.ndarray, steps: np.ndarray) -> dict[str, np.ndarray]:
    """Fit each row of ``steps`` (r, m; NaN = censored). Returns arrays of shape (r,).

    Keys: b_crit, s_min, e_min (NaN where not estimable), n_points, at_lower, at_upper.
    """
    b = np.asarray(batch_sizes, dtype=float)
    s = np.atleast_2d(np.asarray(steps, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.where(np.isfinite(s) & (s > 0), np.log(s), np.nan)
    fit = fit_log_hyperbola(b, log_s, sign=1.0)
    ok = (fit.n >= MIN_POINTS) & ~fit.at_lower & ~fit.at_upper
    b_crit = np.where(ok, np.exp(fit.c), np.nan)
    s_min = np.where(ok, np.exp(fit.a), np.nan)
    return {
        "b_crit": b_crit, "s_min": s_min, "e_min": b_crit * s_min,
        "n_points": fit.n.astype(int), "at_lower": fit.at_lower & (fit.n >= MIN_POINTS),
        "at_upper": fit.at_upper & (fit.n >= MIN_POINTS),
    }


def fit_critical_batch(batch_sizes: Sequence[float] | np.ndarray, steps: Sequence[float | None] | np.ndarray) -> dict[str, Any]:
    """Fit S(B) = S_min (1 + B_crit/B) to plain arrays; None marks a censored batch size.

    Returns {"b_crit", "s_min", "e_min", "n_points", "reason"}: floats, or None with the
    reason when the data cannot identify the curve.
    """
    b = np.asarray(batch_sizes, dtype=float)
    s = np.array([np.nan if v is None else v for v in steps], dtype=float)
    if b.shape != s.shape or b.ndim != 1:
        raise ValueError("batch_sizes and steps must be 1-D and of equal length")
    keep = np.isfinite(s) & (s > 0) & np.isfinite(b) & (b > 0)
    b, s = b[keep], s[keep]
    n_points = int(keep.sum())
    out: dict[str, Any] = {"b_crit": None, "s_min": None, "e_min": None, "n_points": n_points, "reason": None}
    if np.unique(b).size < MIN_POINTS:
        out["reason"] = (f"only {np.unique(b).size} batch size(s) reached the target; "
                         f"the fit needs {MIN_POINTS}")
        return out
    r = critical_batch_batched(b, s[None, :])
    if r["at_upper"][0]:
        out["reason"] = (f"S(B) still falls like 1/B at the largest batch size: B_crit is beyond "
                         f"{10 ** BOUND_DECADES:.0f}x the largest measured B")
    elif r["at_lower"][0]:
        out["reason"] = (f"S(B) does not fall with B: B_crit is below 1/{10 ** BOUND_DECADES:.0f} "
                         f"of the smallest measured B")
    else:
        out.update(b_crit=float(r["b_crit"][0]), s_min=float(r["s_min"][0]), e_min=float(r["e_min"][0]))
    return out


def steps_curve(batch_sizes: np.ndarray, s_min: float, b_crit: float) -> np.ndarray:
    """S(B) = S_min (1 + B_crit / B)."""
    return s_min * (1.0 + b_crit / np.asarray(batch_sizes, dtype=float))
