"""Batched least squares of y = a + sign * g(c; x) for a one-parameter shape g, by profiling.

For a fixed c the intercept a is the mean of y - sign * g, so the fit is a 1-D search over
c: a grid of 81 values spanning the measured x (= log B) and 2 decades beyond it on each
side, then four rounds of zooming in on the best. A c pinned at a bound means the curve's
feature (the surge law's peak) lies beyond the data. Used for the surge LR law,
log eta = log eta_max - log cosh((log B - log B_noise)/2) (Li et al. 2024).

    import numpy as np
    from analysis.profile_ci import surge_shape
    from analysis.shape_fit import fit_shape
    b = np.array([32, 64, 128, 256, 512, 1024, 2048.0])
    eta = 0.1 / (0.5 * (np.sqrt(256 / b) + np.sqrt(b / 256)))
    f = fit_shape(np.log(b), np.log(eta)[None, :], surge_shape, sign=-1.0)
    np.exp(f.a), np.exp(f.c)          # about (0.1, 256)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hyperbola_fit import BOUND_DECADES
from .profile_ci import Shape

COARSE = 81
ZOOM_ROUNDS = 4
ZOOM_POINTS = 21


@dataclass(frozen=True)
class ShapeFit:
    """The fit of each of r rows; every field is (r,)."""

    a: np.ndarray
    c: np.ndarray
    rss: np.ndarray
    n: np.ndarray
    at_bound: np.ndarray
    """c pinned at the grid's lower or upper bound: the feature lies beyond the data."""


def _profile(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, c: np.ndarray, shape: Shape, sign: float
) -> tuple[np.ndarray, np.ndarray]:
    """(a, rss) for every row and every candidate c: y (r, m), c (r, K) -> (r, K) each."""
    r, k = c.shape
    g = sign * shape(c.ravel(), x).reshape(r, k, -1)  # (r, K, m)
    n = np.maximum(w.sum(axis=1), 1)[:, None]
    a = np.sum(w[:, None, :] * (y[:, None, :] - g), axis=-1) / n
    rss = np.sum(w[:, None, :] * (y[:, None, :] - a[..., None] - g) ** 2, axis=-1)
    return a, rss


def fit_shape(x: np.ndarray, log_y: np.ndarray, shape: Shape, sign: float) -> ShapeFit:
    """Fit every row of ``log_y`` (r, m; NaN = missing) against x = log B (m,)."""
    x = np.asarray(x, dtype=float)
    y = np.atleast_2d(np.asarray(log_y, dtype=float))
    r = y.shape[0]
    w = np.isfinite(y).astype(float)
    y = np.where(w > 0, y, 0.0)
    n = w.sum(axis=1)
    used = w > 0
    x_lo = np.where(used, x, np.inf).min(axis=1)
    x_hi = np.where(used, x, -np.inf).max(axis=1)
    x_lo, x_hi = np.where(np.isfinite(x_lo), x_lo, 0.0), np.where(np.isfinite(x_hi), x_hi, 0.0)
    c_lo = x_lo - BOUND_DECADES * np.log(10)
    c_hi = x_hi + BOUND_DECADES * np.log(10)
    grid = c_lo[:, None] + (c_hi - c_lo)[:, None] * np.linspace(0, 1, COARSE)[None, :]
    a, rss = _profile(x, y, w, grid, shape, sign)
    best = np.argmin(rss, axis=1)
    rows = np.arange(r)
    c, step = grid[rows, best], (c_hi - c_lo) / (COARSE - 1)
    for _ in range(ZOOM_ROUNDS):
        cand = np.clip(
            c[:, None] + step[:, None] * np.linspace(-1, 1, ZOOM_POINTS)[None, :], c_lo[:, None], c_hi[:, None]
        )
        a_z, rss_z = _profile(x, y, w, cand, shape, sign)
        best = np.argmin(rss_z, axis=1)
        c = cand[rows, best]
        step = step * 2 / (ZOOM_POINTS - 1)
    a_fin, rss_fin = _profile(x, y, w, c[:, None], shape, sign)
    eps = 1e-6 * (c_hi - c_lo)
    return ShapeFit(a=a_fin[:, 0], c=c, rss=rss_fin[:, 0], n=n, at_bound=(c <= c_lo + eps) | (c >= c_hi - eps))
