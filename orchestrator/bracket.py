"""The pure logic of the adaptive LR search (no Ray): bracketing on a log-LR grid, and the
transfer of the optimum across batch sizes.

A ``Bracket`` searches one batch size's LR grid (indices 0..n-1, log-spaced). It starts
with three points around a predicted centre (``centre - width``, ``centre``, ``centre +
width``), extends past the best point in the direction of improvement until the best has
a worse (or equal) neighbour on both sides or sits at the grid's edge, then halves the
gaps next to the best point until both neighbours are one grid step away: the study's
resolution. A diverged LR (or a failed trial) is worse than anything, and no LR above the
lowest diverged one is ever proposed. For a unimodal response in log LR this finds the
grid's argmin, and with its two neighbours, which is what the analysis's parabola needs.

Objectives are ``Key`` tuples, lower is better, as the analysis ranks trials: (0, log
steps-to-target) when the target was reached, (1, best target metric, oriented so lower is
better) when not, (2, inf) when diverged or failed.

    >>> b = Bracket(n=9, centre=4, width=2)
    >>> b.proposals()
    [2, 4, 6]
    >>> for i, v in zip([2, 4, 6], [3.0, 1.0, 2.0]): b.complete(i, (0, v))
    >>> b.proposals()
    [3, 5]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Key = tuple[int, float]
REACHED, NOT_REACHED, WORST = 0, 1, 2
DIVERGED: Key = (WORST, math.inf)
# Prior of the transfer while fewer than two batch sizes are known: the best LR scales as
# B^0.5 +- 0.5 (between the constant and the linear rule).
PRIOR_EXPONENT = 0.5
PRIOR_EXPONENT_SD = 0.5


@dataclass
class Bracket:
    """The search over one batch size's LR grid."""

    n: int
    """Number of grid points."""
    centre: int
    """Predicted index of the best LR."""
    width: int
    """Initial half-width in grid steps (the prediction's uncertainty)."""
    values: dict[int, Key] = field(default_factory=dict)
    """Completed indices -> objective."""
    pending: set[int] = field(default_factory=set)
    """Indices proposed and not yet complete."""

    def __post_init__(self) -> None:
        self.centre = min(max(int(self.centre), 0), self.n - 1)
        self.width = max(1, int(self.width))

    @property
    def cap(self) -> int:
        """Proposals stay below this index: the lowest diverged one (else n)."""
        return min((i for i, v in self.values.items() if v[0] == WORST), default=self.n)

    def best(self) -> int | None:
        """The best completed index (the lowest on a tie), None before any completes."""
        if not self.values:
            return None
        return min(self.values, key=lambda i: (self.values[i], i))

    def _initial(self) -> list[int]:
        pts = {min(max(self.centre + d, 0), self.n - 1) for d in (-self.width, 0, self.width)}
        return sorted(pts)

    def proposals(self) -> list[int]:
        """Indices worth running now, given what completed; pending ones are not repeated.

        Empty while a side of the best point waits for a pending result, and when done.
        """
        k = self.best()
        if k is None:
            out = self._initial()
        else:
            out = [i for i in (self._side(k, -1), self._side(k, +1)) if i is not None]
        cap = self.cap
        return [i for i in out if i not in self.pending and i not in self.values and i < cap]

    def _side(self, k: int, d: int) -> int | None:
        """The next index on side ``d`` (-1 left, +1 right) of the best ``k``, or None."""
        edge = 0 if d < 0 else min(self.n, self.cap) - 1
        if k == edge or (d > 0 and k > edge):
            return None  # bounded by the grid's edge (or by divergence)
        if any((i - k) * d > 0 for i in self.pending):
            return None  # a result on this side is on its way
        known = [i for i in self.values if (i - k) * d > 0]
        if not known:  # extend in the direction of improvement, by the current spacing
            other = [abs(i - k) for i in self.values if i != k]
            step = min(other) if other else self.width
            cand = k + d * max(1, step)
            return max(cand, 0) if d < 0 else min(cand, edge)
        gap = min(abs(i - k) for i in known)
        if gap <= 1:
            return None  # refined to the grid's resolution
        return k + d * (gap // 2)

    def complete(self, index: int, value: Key) -> None:
        self.pending.discard(index)
        self.values[index] = value

    def done(self) -> bool:
        return not self.pending and not self.proposals()

    def bracketed(self) -> bool:
        """The best has a worse-or-equal neighbour (or the grid's edge) on both sides."""
        k = self.best()
        if k is None:
            return False
        left = k == 0 or any(i < k for i in self.values)
        right = k >= min(self.n, self.cap) - 1 or any(i > k for i in self.values)
        return left and right

    def state(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "centre": self.centre,
            "width": self.width,
            "values": [[i, v[0], v[1]] for i, v in sorted(self.values.items())],
            "pending": sorted(self.pending),
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Bracket:
        return cls(
            n=s["n"],
            centre=s["centre"],
            width=s["width"],
            values={int(i): (int(t), float(v)) for i, t, v in s["values"]},
            pending={int(i) for i in s["pending"]},
        )


def predict_log_lr(batch_size: int, known: Sequence[tuple[int, float]], nearest: int = 4) -> tuple[float, float] | None:
    """Predicted log best LR at ``batch_size`` and its standard deviation (in log), from the
    best LRs ``known`` at other batch sizes ((B, lr) pairs): a power law fitted (by
    ``analysis.lr_rules``) on the ``nearest`` known batch sizes in log B, so that a rule that
    bends (saturation past the critical batch size) is followed locally. With one known
    batch size the prior B^0.5 +- 0.5 is used, with two the line through them with half the
    prior's spread; None with none.
    """
    pts = sorted(
        ((b, lr) for b, lr in known if lr > 0 and math.isfinite(lr)),
        key=lambda p: (abs(math.log(p[0] / batch_size)), p[0]),
    )[:nearest]
    if not pts:
        return None
    x = math.log(batch_size)
    if len(pts) == 1:
        b0, lr0 = pts[0]
        dx = x - math.log(b0)
        return math.log(lr0) + PRIOR_EXPONENT * dx, PRIOR_EXPONENT_SD * abs(dx)
    if len(pts) == 2:
        (b0, l0), (b1, l1) = pts
        k = (math.log(l1) - math.log(l0)) / (math.log(b1) - math.log(b0))
        near = min(abs(x - math.log(b0)), abs(x - math.log(b1)))
        return math.log(l0) + k * (x - math.log(b0)), 0.5 * PRIOR_EXPONENT_SD * near
    from analysis.lr_rules import fit_lr_rules, rule_curve

    bs = np.array([p[0] for p in pts], dtype=float)
    lrs = np.array([p[1] for p in pts], dtype=float)
    fit = fit_lr_rules(bs, lrs)
    centre = float(np.log(rule_curve("power", fit, np.array([batch_size]))[0]))
    xs = np.log(bs)
    resid = np.log(lrs) - np.log(rule_curve("power", fit, bs))
    sd_resid = float(np.sqrt(np.sum(resid**2) / max(1, len(pts) - 2)))
    sd_k = 0.0
    if fit.exponent_ci95 is not None and None not in fit.exponent_ci95:
        lo, hi = fit.exponent_ci95
        sd_k = (float(hi) - float(lo)) / (2 * 1.96)  # type: ignore[arg-type]
    sd = math.hypot(sd_k * abs(x - float(xs.mean())), sd_resid)
    return centre, sd


def start_bracket(
    grid: Sequence[float], prediction: tuple[float, float] | None, default_width: int | None = None
) -> Bracket:
    """A bracket on ``grid`` (ascending LRs) centred on ``prediction`` (log LR, sd): the
    initial half-width is the sd in grid steps, at least one; without a prediction the grid's
    centre and a quarter of the grid."""
    n = len(grid)
    if prediction is None or n < 2:
        return Bracket(n=n, centre=(n - 1) // 2, width=default_width or max(1, (n - 1) // 4))
    log_grid = np.log(np.asarray(grid, dtype=float))
    spacing = float(np.median(np.diff(log_grid)))
    mu, sd = prediction
    centre = int(np.argmin(np.abs(log_grid - mu)))
    width = max(1, min(math.ceil(sd / spacing - 1e-9), max(1, (n - 1) // 4)))
    return Bracket(n=n, centre=centre, width=width)
