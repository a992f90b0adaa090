"""Critical batch size (McCandlish et al. 2018): S(B) = S_min (1 + B_crit / B).

Equivalently E(B) = E_min (1 + B / B_crit) with E = B S and B_crit = E_min / S_min. The fit
starts from least squares of S on 1/B and refines by non-linear least squares on log S
(see ``hyperbola_fit``). Censored batch sizes (NaN/None steps) are dropped. With fewer than
three points, or a B_crit pinned beyond the measured range (S still falls as 1/B, or does
not fall at all), every value is None and ``reason`` says why.

    from analysis.critical import fit_critical_batch
    fit = fit_critical_batch([32, 64, 128, 256, 512, 1024], [9000, 5000, 3000, 2000, 1500, 1250])
    fit.b_crit, fit.s_min, fit.e_min, fit.n_points    # about (256.0, 1000.0, 256000.0, 6)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .hyperbola_fit import BOUND_DECADES, fit_log_hyperbola
from .results import CriticalBatchFit

MIN_POINTS = 3


@dataclass(frozen=True)
class CriticalBatchRows:
    """The fit of every row of a (resamples, batch sizes) steps array; each field is (r,)."""

    b_crit: np.ndarray
    """B_crit; NaN where fewer than 3 points or pinned at a bound."""

    s_min: np.ndarray
    """S_min; NaN where ``b_crit`` is."""

    e_min: np.ndarray
    """B_crit * S_min; NaN where ``b_crit`` is."""

    n_points: np.ndarray
    """Finite, positive steps in the row."""

    at_lower: np.ndarray
    """Enough points, but B_crit pinned below the measured range (S does not fall with B)."""

    at_upper: np.ndarray
    """Enough points, but B_crit pinned above the measured range (S still falls as 1/B)."""


def critical_batch_batched(batch_sizes: np.ndarray, steps: np.ndarray) -> CriticalBatchRows:
    """Fit each row of ``steps`` (r, m; NaN = censored)."""
    b = np.asarray(batch_sizes, dtype=float)
    s = np.atleast_2d(np.asarray(steps, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.where(np.isfinite(s) & (s > 0), np.log(s), np.nan)
    fit = fit_log_hyperbola(b, log_s, sign=1.0)
    enough = fit.n >= MIN_POINTS
    ok = enough & ~fit.at_lower & ~fit.at_upper
    b_crit = np.where(ok, np.exp(fit.c), np.nan)
    s_min = np.where(ok, np.exp(fit.a), np.nan)
    return CriticalBatchRows(
        b_crit=b_crit,
        s_min=s_min,
        e_min=b_crit * s_min,
        n_points=fit.n.astype(int),
        at_lower=fit.at_lower & enough,
        at_upper=fit.at_upper & enough,
    )


def fit_critical_batch(
    batch_sizes: Sequence[float] | np.ndarray, steps: Sequence[float | None] | np.ndarray
) -> CriticalBatchFit:
    """Fit S(B) = S_min (1 + B_crit/B) to plain arrays; None marks a censored batch size.

    The bootstrap fields of the result stay None; ``analysis.fits`` adds them.
    """
    b = np.asarray(batch_sizes, dtype=float)
    s = np.array([np.nan if v is None else v for v in steps], dtype=float)
    if b.shape != s.shape or b.ndim != 1:
        raise ValueError("batch_sizes and steps must be 1-D and of equal length")
    keep = np.isfinite(s) & (s > 0) & np.isfinite(b) & (b > 0)
    b, s = b[keep], s[keep]
    n_points = int(keep.sum())
    if np.unique(b).size < MIN_POINTS:
        return _not_estimated(
            n_points, f"only {np.unique(b).size} batch size(s) reached the target; the fit needs {MIN_POINTS}"
        )
    r = critical_batch_batched(b, s[None, :])
    if r.at_upper[0]:
        return _not_estimated(
            n_points,
            f"S(B) still falls like 1/B at the largest batch size: "
            f"B_crit is beyond {10**BOUND_DECADES:.0f}x the largest "
            "measured B",
        )
    if r.at_lower[0]:
        return _not_estimated(
            n_points, f"S(B) does not fall with B: B_crit is below 1/{10**BOUND_DECADES:.0f} of the smallest measured B"
        )
    return CriticalBatchFit(
        b_crit=float(r.b_crit[0]), s_min=float(r.s_min[0]), e_min=float(r.e_min[0]), n_points=n_points
    )


def _not_estimated(n_points: int, reason: str) -> CriticalBatchFit:
    return CriticalBatchFit(b_crit=None, s_min=None, e_min=None, n_points=n_points, reason=reason)


def steps_curve(batch_sizes: np.ndarray, s_min: float | np.ndarray, b_crit: float | np.ndarray) -> np.ndarray:
    """S(B) = S_min (1 + B_crit / B); the parameters may be arrays that broadcast against B."""
    return s_min * (1.0 + b_crit / np.asarray(batch_sizes, dtype=float))
