"""When a trainable evaluates: log-spaced steps, dense enough to place a target crossing.

Consecutive evaluation steps differ by at most ``ratio`` (5% by default), so the step at
which a metric first crosses a target is known to within that ratio at every batch size,
while a run of S steps costs only O(log S / log ratio) evaluations.
"""

from __future__ import annotations

import math


def eval_steps(max_steps: int, ratio: float = 1.05, first: int = 1) -> list[int]:
    """Sorted evaluation steps in [first, max_steps], always including ``max_steps``.

    Every step up to ``1 / (ratio - 1)`` is evaluated (integer steps cannot be spaced
    more finely than 1); after that each step is at most ``ratio`` times the previous.
    """
    if max_steps < 1:
        raise ValueError("max_steps must be >= 1")
    if ratio <= 1.0:
        raise ValueError("ratio must be > 1")
    steps: list[int] = []
    s = max(1, first)
    while s < max_steps:
        steps.append(s)
        s = max(s + 1, math.floor(s * ratio))
    steps.append(max_steps)
    return steps
