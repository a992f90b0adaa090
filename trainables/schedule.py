"""A trainable's schedules: when it evaluates, and its learning rate at each update.

Evaluations fall on log-spaced steps, dense enough to place a target crossing. Consecutive evaluation steps differ by at most ``ratio`` (5% by default), so the step at
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


def lr_at(base_lr: float, examples_seen: int, warmup_examples: int) -> float:
    """Linear warmup from 0 to ``base_lr`` over ``warmup_examples``, then constant.

    Warmup is measured in examples, not steps, so that it means the same amount of data
    at every batch size (Goyal et al. 2017 warm up over 5 epochs).
    """
    if warmup_examples <= 0 or examples_seen >= warmup_examples:
        return base_lr
    return base_lr * max(examples_seen, 1) / warmup_examples
