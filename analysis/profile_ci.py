"""Intervals from a fit's own residuals, for when resampling trials cannot vary the data.

A sweep with one trial per batch size (only the best run per B published, or one LR that
reached the target) gives a bootstrap over trials nothing to resample: every resample is
the full data, and a percentile interval comes out zero-width. The scatter of the points
about the fitted curve still measures the noise, and these intervals use it.

- ``profile_intervals``: the profile likelihood of a curve log y = a + sign * g(c; B) with
  one shape parameter c and an intercept a (S(B) = S_min (1 + B_crit/B): a = log S_min,
  c = log B_crit; the surge and saturating LR laws: a = log eta_max, c = log B_noise).
  For each c the least-squares a is exact, and RSS(a, c) = RSS(c) + n (a - a(c))^2, so the
  95% region {RSS <= RSS_min + F(1, n-2) sigma^2} with sigma^2 = RSS_min / (n - 2) (Gaussian
  log residuals; Bates & Watts 1988, ch. 6) is read off a fine grid in c; its projections
  give the intervals of c, a and a + c (log B_crit, log S_min, log E_min) and a pointwise
  band of the curve. An end that reaches the grid's bound (100x beyond the measured B) is
  open (None): the data do not bound the parameter on that side.
- ``slope_interval``: the t interval of an OLS slope (the free LR exponent).

Both accept a floor on sigma: a best LR read off a grid is known only to about a third of
the grid's spacing (Porian et al.'s floor, SCIENCE.md section 5), even where the points lie
on a line because the grid was centred on a rule.

    import numpy as np
    from analysis.profile_ci import hyperbola_shape, profile_intervals
    b = np.array([32, 64, 128, 256, 512, 1024.0])
    log_s = np.log(1000 * (1 + 256 / b)) + np.array([0.05, -0.04, 0.02, -0.06, 0.03, 0.01])
    p = profile_intervals(np.log(b), log_s, hyperbola_shape, sign=1.0)
    np.exp(p.c)            # 95% interval of B_crit, about (207, 321)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .hyperbola_fit import BOUND_DECADES

LEVEL = 0.95
GRID_POINTS = 2001

Shape = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""g(c, x): shape values (K, m) for K values of c and m points x = log B."""

LogInterval = tuple[float | None, float | None]


def hyperbola_shape(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log(1 + e^c / B): S(B) = S_min (1 + B_crit/B) with sign +1, saturating LR with -1."""
    return np.logaddexp(0.0, c[:, None] - x[None, :])


def surge_shape(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log cosh((log B - c)/2): eta = eta_max / (1/2 (sqrt(B_noise/B) + sqrt(B/B_noise))), sign -1."""
    u = 0.5 * np.abs(x[None, :] - c[:, None])
    return u + np.log1p(np.exp(-2.0 * u)) - np.log(2.0)


@dataclass(frozen=True)
class ProfileCI:
    """Profile-likelihood intervals on the log scale; None where the data give none."""

    c: LogInterval | None
    """Interval of the shape parameter c (log B_crit, log B_noise)."""

    a: LogInterval | None
    """Interval of the intercept a (log S_min, log eta_max)."""

    a_plus_c: LogInterval | None
    """Interval of a + c (log E_min for the steps curve)."""

    band_x: np.ndarray | None
    """Grid of log B at which ``band_low`` and ``band_high`` give the curve's log y."""

    band_low: np.ndarray | None
    band_high: np.ndarray | None

    sigma: float
    """Residual standard deviation used (after the floor); NaN without residual freedom."""

    dof: int
    """Residual degrees of freedom, points - 2."""

    reason: str | None = None
    """Why the intervals are None."""


def _none(sigma: float, dof: int, reason: str) -> ProfileCI:
    return ProfileCI(None, None, None, None, None, None, sigma, dof, reason)


def _extent(values: np.ndarray, at_bound: np.ndarray) -> LogInterval:
    """(min, max) of ``values`` over the region; an end reached at a grid bound is open."""
    i, j = int(np.argmin(values)), int(np.argmax(values))
    return (None if at_bound[i] else float(values[i]), None if at_bound[j] else float(values[j]))


def profile_intervals(
    x: np.ndarray,
    y: np.ndarray,
    shape: Shape,
    sign: float,
    sigma_floor: float = 0.0,
    band_x: np.ndarray | None = None,
    level: float = LEVEL,
) -> ProfileCI:
    """Profile-likelihood intervals of y = a + sign * shape(c, x) (x = log B, y = log value).

    NaN in ``y`` marks a missing point. ``band_x`` (log B) asks for a pointwise band.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    dof = n - 2
    if dof < 1:
        return _none(np.nan, dof, f"{n} points leave no residual degree of freedom for a 2-parameter curve")
    ln10 = np.log(10.0)
    c = np.linspace(x.min() - BOUND_DECADES * ln10, x.max() + BOUND_DECADES * ln10, GRID_POINTS)
    g = sign * shape(c, x)  # (K, m)
    a_hat = np.mean(y[None, :] - g, axis=1)  # (K,)
    rss = np.sum((y[None, :] - a_hat[:, None] - g) ** 2, axis=1)
    best = int(np.argmin(rss))
    rss_min = float(rss[best])
    sigma2 = max(rss_min / dof, sigma_floor**2)
    if sigma2 <= 1e-24:
        return _none(0.0, dof, "the points lie exactly on the fitted curve: no scatter to estimate an interval from")
    q = float(stats.f.ppf(level, 1, dof))
    threshold = rss_min + q * sigma2
    inside = rss <= threshold
    idx = np.flatnonzero(inside)
    at_bound = np.zeros(GRID_POINTS, dtype=bool)
    at_bound[[0, -1]] = True
    # The ends of the c interval, interpolated to where RSS crosses the threshold.
    lo_i, hi_i = int(idx.min()), int(idx.max())
    c_lo = None if lo_i == 0 else float(np.interp(threshold, [rss[lo_i], rss[lo_i - 1]], [c[lo_i], c[lo_i - 1]]))
    c_hi = (
        None
        if hi_i == GRID_POINTS - 1
        else float(np.interp(threshold, [rss[hi_i], rss[hi_i + 1]], [c[hi_i], c[hi_i + 1]]))
    )
    half = np.sqrt(np.maximum(threshold - rss[idx], 0.0) / n)
    a_lo, _ = _extent(a_hat[idx] - half, at_bound[idx])
    _, a_hi = _extent(a_hat[idx] + half, at_bound[idx])
    e_lo, _ = _extent(a_hat[idx] + c[idx] - half, at_bound[idx])
    _, e_hi = _extent(a_hat[idx] + c[idx] + half, at_bound[idx])
    low = high = None
    if band_x is not None:
        curve = a_hat[idx, None] + sign * shape(c[idx], np.asarray(band_x, dtype=float))
        low, high = (curve - half[:, None]).min(axis=0), (curve + half[:, None]).max(axis=0)
    return ProfileCI(
        c=(c_lo, c_hi),
        a=(a_lo, a_hi),
        a_plus_c=(e_lo, e_hi),
        band_x=band_x,
        band_low=low,
        band_high=high,
        sigma=float(np.sqrt(sigma2)),
        dof=dof,
    )


def slope_interval(
    x: np.ndarray, y: np.ndarray, sigma_floor: float = 0.0, level: float = LEVEL
) -> tuple[LogInterval | None, str | None]:
    """The t interval of the OLS slope of y on x, and the reason when there is none."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 3:
        return None, f"{n} points leave no residual degree of freedom for a line"
    dx = x - x.mean()
    sxx = float(np.sum(dx * dx))
    if sxx <= 0:
        return None, "all points share one batch size"
    k = float(np.sum(dx * (y - y.mean())) / sxx)
    resid = y - y.mean() - k * dx
    sigma = max(float(np.sqrt(np.sum(resid**2) / (n - 2))), sigma_floor)
    if sigma <= 1e-12:
        return None, "the points lie exactly on a line: no scatter to estimate an interval from"
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * sigma / np.sqrt(sxx)
    return (k - half, k + half), None
