"""Gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018, appendix A).

From the squared norms of one gradient averaged over a small batch and over a big one,
E|G_B|² = |G|² + tr(Σ)/B gives unbiased estimates of |G|² and tr(Σ). Each single estimate
is very noisy (and |G|² can come out negative), so the two are smoothed by separate
bias-corrected EMAs and only then divided: averaging the ratio would be biased and
heavy-tailed.

Example (synthetic gradients with |G|² = 1 and tr(Σ) = 50, so B_simple = 50):

    >>> import numpy as np
    >>> from trainables.noise_scale import NoiseScaleEstimator
    >>> rng = np.random.default_rng(0)
    >>> g = np.zeros(50); g[0] = 1.0                      # true gradient, |G|² = 1
    >>> est = NoiseScaleEstimator()
    >>> for _ in range(2000):
    ...     small = [g + rng.standard_normal(50) / np.sqrt(8) for _ in range(4)]  # 4 batches of 8
    ...     big = sum(small) / 4                                                 # one batch of 32
    ...     g2_small = float(np.mean([s @ s for s in small]))
    ...     est.update(g2_small, float(big @ big), b_small=8, b_big=32)
    >>> 40 < est.b_simple < 60
    True

In data-parallel training B_small is the per-device batch (its squared norm averaged over
devices) and B_big the all-reduced global batch; on one device, two micro-batches of an
accumulated batch serve the same purpose.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is only needed by callers that pass tensors
    import torch

__all__ = [
    "unbiased_grad_sq_norm",
    "unbiased_trace_cov",
    "grad_sq_norm",
    "NoiseScaleEstimator",
]


def _check_sizes(b_small: float, b_big: float) -> None:
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got b_small={b_small}, b_big={b_big}")


def unbiased_grad_sq_norm(g_small_sq: float, g_big_sq: float, b_small: float, b_big: float) -> float:
    """Unbiased estimate of |G|²: (B_big|G_big|² − B_small|G_small|²)/(B_big − B_small)."""
    _check_sizes(b_small, b_big)
    return (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)


def unbiased_trace_cov(g_small_sq: float, g_big_sq: float, b_small: float, b_big: float) -> float:
    """Unbiased estimate of tr(Σ) (per-example covariance): (|G_small|² − |G_big|²)/(1/B_small − 1/B_big)."""
    _check_sizes(b_small, b_big)
    return (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)


def grad_sq_norm(grads: Iterable[torch.Tensor | None]) -> float:
    """Squared L2 norm of a gradient given as tensors, e.g. ``[p.grad for p in model.parameters()]``.

    ``None`` entries (parameters without a gradient) are skipped. Accumulates in float64 and
    synchronises once, so it is cheap enough to call every few steps on a GPU.
    """
    total = None
    for g in grads:
        if g is None:
            continue
        sq = g.detach().double().pow(2).sum()
        total = sq if total is None else total + sq
    return 0.0 if total is None else float(total)


class NoiseScaleEstimator:
    """Separate bias-corrected EMAs of |G|² and tr(Σ); ``b_simple`` is their ratio.

    ``update`` takes one pair of squared norms; ``b_simple`` is ``None`` until both smoothed
    estimates are positive and finite (early on, or in the noise-dominated regime,
    |G|² estimates can be ≤ 0 and a ratio would mean nothing).
    """

    def __init__(self, beta: float = 0.99) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError("beta must be in [0, 1)")
        self.beta = beta
        self.count = 0
        self._g2 = 0.0
        self._trace = 0.0

    def update(self, g_small_sq: float, g_big_sq: float, b_small: float, b_big: float) -> None:
        """Add one measurement: squared gradient norms at batch sizes ``b_small`` < ``b_big``."""
        g2 = unbiased_grad_sq_norm(g_small_sq, g_big_sq, b_small, b_big)
        tr = unbiased_trace_cov(g_small_sq, g_big_sq, b_small, b_big)
        self._g2 = self.beta * self._g2 + (1.0 - self.beta) * g2
        self._trace = self.beta * self._trace + (1.0 - self.beta) * tr
        self.count += 1

    def _correction(self) -> float:
        # EMAs start at 0; dividing by 1 − β^(t+1) (t counted from 0) removes that bias.
        return 1.0 - self.beta**self.count

    @property
    def grad_sq_norm(self) -> float | None:
        """Bias-corrected EMA of the |G|² estimates (None before the first update)."""
        return self._g2 / self._correction() if self.count else None

    @property
    def trace_cov(self) -> float | None:
        """Bias-corrected EMA of the tr(Σ) estimates (None before the first update)."""
        return self._trace / self._correction() if self.count else None

    @property
    def b_simple(self) -> float | None:
        """EMA(tr Σ) / EMA(|G|²), or None while that is not meaningful."""
        g2, tr = self.grad_sq_norm, self.trace_cov
        # Both smoothed estimates must be positive: with few measurements, or a batch far
        # above the noise scale, the unbiased tr(Σ) estimate can be <= 0, and a zero or
        # negative "noise scale" is noise, not a measurement.
        if g2 is None or tr is None or not (math.isfinite(g2) and math.isfinite(tr)) or g2 <= 0 or tr <= 0:
            return None
        return tr / g2

    def state_dict(self) -> dict[str, Any]:
        """Plain-python state for a checkpoint."""
        return {"beta": self.beta, "count": self.count, "g2": self._g2, "trace": self._trace}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.beta = float(state["beta"])
        self.count = int(state["count"])
        self._g2 = float(state["g2"])
        self._trace = float(state["trace"])
