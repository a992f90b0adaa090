"""Batched least squares of log y = a + sign * log(1 + exp(c) / B) over many rows at once.

sign = +1 is the steps curve S(B) = S_min (1 + B_crit / B)  (a = log S_min, c = log B_crit);
sign = -1 is the saturating LR law eta(B) = eta_max / (1 + B_noise / B)  (a = log eta_max,
c = log B_noise). Both are linear in 1/B after exp(sign * log y): z = A + A e^c / B, so an
ordinary least-squares fit of z on 1/B gives the start (McCandlish et al. 2018, App. D),
then Levenberg-Marquardt on the log residuals, because the errors are multiplicative. Each
row of ``log_y`` is an independent problem (a bootstrap resample); NaN marks a missing point.

    import numpy as np
    from analysis.hyperbola_fit import fit_log_hyperbola
    b = np.array([32, 64, 128, 256, 512.0])
    s = 1000 * (1 + 256 / b)
    fit_log_hyperbola(b, np.log(s)[None, :], sign=1)   # a = log 1000, c = log 256
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# c is kept within this many decades beyond the measured range of B: farther out the curve
# is a pure power law over the data and c is not identified.
BOUND_DECADES = 2.0


@dataclass(frozen=True)
class HyperbolaFit:
    """The fit of each of r rows; every field is (r,)."""

    a: np.ndarray
    """log S_min (sign +1) or log eta_max (sign -1)."""

    c: np.ndarray
    """log B_crit (sign +1) or log B_noise (sign -1)."""

    rss: np.ndarray
    """Sum of squared log residuals."""

    n: np.ndarray
    """Points used."""

    at_lower: np.ndarray
    """c pinned at its lower bound."""

    at_upper: np.ndarray
    """c pinned at its upper bound."""


def _profile_a(log_y: np.ndarray, w: np.ndarray, g: np.ndarray, sign: float) -> np.ndarray:
    """The least-squares a for given curve shape g = log(1 + e^c / B)."""
    return np.sum(w * (log_y - sign * g), axis=-1) / np.maximum(np.sum(w, axis=-1), 1)


def _rss(log_y: np.ndarray, w: np.ndarray, a: np.ndarray, c: np.ndarray, inv_b: np.ndarray, sign: float) -> np.ndarray:
    g = np.log1p(np.exp(c)[..., None] * inv_b)
    return np.sum(w * (log_y - a[..., None] - sign * g) ** 2, axis=-1)


def fit_log_hyperbola(b: np.ndarray, log_y: np.ndarray, sign: float = 1.0, iterations: int = 40) -> HyperbolaFit:
    """Fit every row of ``log_y`` (r, m) against batch sizes ``b`` (m,); NaN = missing."""
    b = np.asarray(b, dtype=float)
    log_y = np.atleast_2d(np.asarray(log_y, dtype=float))
    r, m = log_y.shape
    w = np.isfinite(log_y).astype(float)
    log_y = np.where(w > 0, log_y, 0.0)
    n = w.sum(axis=1)
    inv_b = 1.0 / b
    used = w > 0
    b_lo = np.where(used, b, np.inf).min(axis=1) if m else np.full(r, 1.0)
    b_hi = np.where(used, b, -np.inf).max(axis=1) if m else np.full(r, 1.0)
    b_lo = np.where(np.isfinite(b_lo), b_lo, 1.0)
    b_hi = np.where(np.isfinite(b_hi), b_hi, 1.0)
    c_lo = np.log(b_lo) - BOUND_DECADES * np.log(10)
    c_hi = np.log(b_hi) + BOUND_DECADES * np.log(10)

    # Start 1: OLS of z = exp(sign log y) on 1/B, valid where intercept and slope are > 0.
    z = np.where(used, np.exp(sign * log_y), 0.0)
    sw = np.maximum(n, 1)
    mx = np.sum(w * inv_b, axis=1) / sw
    mz = np.sum(w * z, axis=1) / sw
    sxx = np.sum(w * (inv_b - mx[:, None]) ** 2, axis=1)
    sxz = np.sum(w * (inv_b - mx[:, None]) * (z - mz[:, None]), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = sxz / sxx
        intercept = mz - slope * mx
        c_ols = np.log(slope / intercept)
    ols_ok = (intercept > 0) & (slope > 0) & np.isfinite(c_ols)
    c_start = np.clip(np.where(ols_ok, c_ols, 0.5 * (c_lo + c_hi)), c_lo, c_hi)
    a_start = _profile_a(log_y, w, np.log1p(np.exp(c_start)[:, None] * inv_b), sign)
    rss_start = _rss(log_y, w, a_start, c_start, inv_b, sign)

    # Start 2: best of a coarse grid in c with a profiled out; guards a poor OLS start.
    grid = c_lo[:, None] + (c_hi - c_lo)[:, None] * np.linspace(0, 1, 41)[None, :]
    g_grid = np.log1p(np.exp(grid)[..., None] * inv_b)  # (r, 41, m)
    a_grid = _profile_a(log_y[:, None, :], w[:, None, :], g_grid, sign)
    rss_grid = np.sum(w[:, None, :] * (log_y[:, None, :] - a_grid[..., None] - sign * g_grid) ** 2, axis=-1)
    best = np.argmin(rss_grid, axis=1)
    take = rss_grid[np.arange(r), best] < rss_start
    a = np.where(take, a_grid[np.arange(r), best], a_start)
    c = np.where(take, grid[np.arange(r), best], c_start)
    rss = np.minimum(rss_grid[np.arange(r), best], rss_start)

    lam = np.full(r, 1e-3)
    for _ in range(iterations):
        u = np.exp(c)[:, None] * inv_b
        res = w * (log_y - a[:, None] - sign * np.log1p(u))
        jc = w * sign * u / (1.0 + u)
        h00, h01, h11 = n, np.sum(jc, axis=1), np.sum(jc * jc, axis=1)
        g0, g1 = np.sum(res, axis=1), np.sum(jc * res, axis=1)
        d00, d11 = h00 * (1 + lam), h11 * (1 + lam) + 1e-12
        det = d00 * d11 - h01 * h01
        with np.errstate(divide="ignore", invalid="ignore"):
            da = np.where(det > 0, (d11 * g0 - h01 * g1) / det, 0.0)
            dc = np.where(det > 0, (d00 * g1 - h01 * g0) / det, 0.0)
        c_new = np.clip(c + dc, c_lo, c_hi)
        a_new = a + da
        rss_new = _rss(log_y, w, a_new, c_new, inv_b, sign)
        better = rss_new < rss
        a, c, rss = np.where(better, a_new, a), np.where(better, c_new, c), np.where(better, rss_new, rss)
        lam = np.where(better, lam / 3, lam * 4)
    eps = 1e-6
    return HyperbolaFit(a=a, c=c, rss=rss, n=n, at_lower=c <= c_lo + eps, at_upper=c >= c_hi - eps)
