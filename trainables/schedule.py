"""A trainable's schedules: when it evaluates, and its batch size, learning rate and
momentum at each update.

Evaluations fall on log-spaced steps, dense enough to place a target crossing. Consecutive
evaluation steps differ by at most ``ratio`` (5% by default), so the step at which a metric
first crosses a target is known to within that ratio at every batch size, while a run of S
steps costs only O(log S / log ratio) evaluations.

A study's ``[schedule]`` (``orchestrator.schedule_spec``) reaches the trainable as a
``Ramp`` in ``TrialConfig.schedule``; ``Plan.of(config)`` resolves it per update:

    plan = Plan.of(config)
    for step in range(plan.cap):                      # optimizer updates
        b, micro = plan.batch(step), plan.micro(step) # this update's batch, its micro-batch
        lr, m = plan.lr_at_step(step), plan.momentum_at(step)
        ...
    plan.examples(plan.cap)                           # examples seen at the end

At each milestone (in examples) ``mode`` either divides the LR by ``factor`` (``decay_lr``),
multiplies the batch size by it (``increase_batch``; Smith, Kindermans, Ying & Le 2017), or
multiplies the batch while it stays within ``max_batch_size`` and divides the LR after
(``hybrid``). The change takes effect at the first update that starts at or after the
milestone, so a milestone that is a multiple of the batch before it is met exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from trainables.contract import TrialConfig

LrShape = Literal["constant", "step", "cosine", "linear_decay", "one_cycle", "range_test"]
Mode = Literal["decay_lr", "increase_batch", "hybrid"]

ONE_CYCLE_RISE = 0.3
"""one_cycle: the LR rises over this fraction of the horizon (PyTorch's ``pct_start``)."""
ONE_CYCLE_DIV = 25.0
"""one_cycle: it starts at peak / 25 (``div_factor``) and ends at peak / 25 / 1e4."""
ONE_CYCLE_FINAL_DIV = 1e4


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


def decay_factor(shape: str, progress: float, end_factor: float = 0.0) -> float:
    """The LR multiplier of a decay ``shape`` at ``progress`` in [0, 1] of its horizon:
    ``linear`` (``linear_decay``) and ``cosine`` to ``end_factor``, 1 for any other."""
    p = min(max(progress, 0.0), 1.0)
    if shape in ("linear", "linear_decay"):
        return 1.0 - (1.0 - end_factor) * p
    if shape == "cosine":
        return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0


def micro_batch_size(batch_size: int, max_micro_batch: int) -> int:
    """Largest divisor of ``batch_size`` that fits ``max_micro_batch``.

    A divisor, so that every micro-batch has the same size and the averaged gradient
    equals the full-batch gradient exactly.
    """
    if batch_size <= max_micro_batch:
        return batch_size
    k = math.ceil(batch_size / max_micro_batch)
    while batch_size % k:
        k += 1
    return batch_size // k


@dataclass(frozen=True)
class Ramp:
    """A trial's schedule over examples seen: the LR's shape and what each milestone changes."""

    lr: LrShape = "constant"
    """constant; step (a change at each milestone, as ``mode`` says); cosine or linear_decay
    to 0 over the trial's examples; one_cycle (Smith 2018: up from peak/25 over the first
    30%, then cosine down to peak/25/1e4); range_test (exponential from ``range_min`` at the
    first update to the trial's ``lr`` at the last: Smith's LR range test)."""
    milestones: tuple[int, ...] = ()
    """Examples at which the step schedule changes (increasing)."""
    factor: float = 10.0
    """What a milestone divides the LR or multiplies the batch size by (> 1)."""
    mode: Mode = "decay_lr"
    """decay_lr, increase_batch or hybrid (module docstring)."""
    max_batch_size: int | None = None
    """increase_batch and hybrid: the largest batch the schedule may reach (hybrid decays
    the LR at a milestone that would pass it)."""
    max_micro_batch: int = 4096
    """A grown batch runs in micro-batches of at most this size (averaged accumulation)."""
    momentum_after: float | None = None
    """The momentum rule (Smith et al. 2017, B ∝ 1/(1 − m)): at the first batch increase the
    momentum becomes this and the batch grows by a further (1 − m)/(1 − momentum_after)."""
    range_min: float | None = None
    """range_test: the LR of the first update."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"milestones": list(self.milestones)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ramp:
        return cls(**{**d, "milestones": tuple(d.get("milestones", ()))})


@dataclass(frozen=True)
class Phase:
    """A stretch of updates with one batch size, LR scale and momentum."""

    start_step: int
    """Its first update (0-based)."""
    start_examples: int
    """Examples seen before that update."""
    batch_size: int
    micro_batch_size: int
    lr_scale: float
    """What the milestones so far multiplied the LR by."""
    momentum: float


@dataclass(frozen=True)
class Plan:
    """One trial's schedule resolved per update (``Plan.of(config)``)."""

    ramp: Ramp
    batch_size: int
    """The trial's starting batch (``TrialConfig.batch_size``, the curves' ``batch_size``)."""
    micro_batch_size: int
    lr: float
    momentum: float
    warmup_examples: int
    max_steps: int | None
    max_examples: int | None
    world_size: int = 1

    @classmethod
    def of(cls, config: TrialConfig) -> Plan:
        """The plan of a trial (a constant one when its study has no ``[schedule]``)."""
        return cls(
            config.schedule or Ramp(),
            config.batch_size,
            config.micro_batch_size,
            config.lr,
            config.momentum,
            config.warmup_examples,
            config.max_steps,
            config.max_examples,
            config.world_size,
        )

    @cached_property
    def phases(self) -> tuple[Phase, ...]:
        r = self.ramp
        out = [Phase(0, 0, self.batch_size, self.micro_batch_size, 1.0, self.momentum)]
        if r.lr != "step":
            return tuple(out)
        for milestone in r.milestones:
            last = out[-1]
            updates = max(0, math.ceil((milestone - last.start_examples) / last.batch_size))
            b, scale, m = last.batch_size, last.lr_scale, last.momentum
            grow = r.mode == "increase_batch" or (r.mode == "hybrid" and b * r.factor <= (r.max_batch_size or 0))
            if grow:
                b = round(b * r.factor)
                if r.momentum_after is not None and m != r.momentum_after:
                    b, m = round(b * (1 - m) / (1 - r.momentum_after)), r.momentum_after
            else:
                scale /= r.factor
            micro = self.micro_batch_size
            if b != last.batch_size:
                micro = micro_batch_size(b // self.world_size, r.max_micro_batch)
            out.append(
                Phase(last.start_step + updates, last.start_examples + updates * last.batch_size, b, micro, scale, m)
            )
        return tuple(out)

    @property
    def grows(self) -> bool:
        """Whether the batch size changes on the way."""
        return any(p.batch_size != self.batch_size for p in self.phases)

    def phase(self, step: int) -> Phase:
        """The phase update ``step`` (0-based) belongs to."""
        return next(p for p in reversed(self.phases) if p.start_step <= step)

    def batch(self, step: int) -> int:
        """The global batch size of update ``step``."""
        return self.phase(step).batch_size

    def micro(self, step: int) -> int:
        """Its micro-batch size on one worker."""
        return self.phase(step).micro_batch_size

    def examples(self, steps: int) -> int:
        """Examples seen after ``steps`` updates."""
        p = self.phase(max(steps - 1, 0)) if steps else self.phases[0]
        return p.start_examples + (steps - p.start_step) * p.batch_size

    def updates_within(self, examples: int) -> int:
        """The most updates whose examples fit in ``examples`` (at least one)."""
        p = next(p for p in reversed(self.phases) if examples >= p.start_examples)
        return max(1, p.start_step + (examples - p.start_examples) // p.batch_size)

    @cached_property
    def cap(self) -> int:
        """Optimizer updates the trial may take: the tighter of ``max_steps`` and the updates
        that fit in ``max_examples`` (``trainables.contract.step_cap`` when the batch never
        changes; ``TrialConfig`` has checked that one of them is set)."""
        return min(c for c in (self.max_steps, self.max_examples and self.updates_within(self.max_examples)) if c)

    def lr_at_step(self, step: int) -> float:
        """The learning rate of update ``step``: warmup in examples, the shape over the
        trial's examples, the milestones' scale."""
        r, seen = self.ramp, self.examples(step + 1)
        if r.lr == "range_test":
            lo = r.range_min or self.lr
            return lo * (self.lr / lo) ** (step / max(self.cap - 1, 1))
        warm = self.warmup_examples
        base = lr_at(self.lr, seen, warm) * self.phase(step).lr_scale
        if seen <= warm or r.lr in ("constant", "step"):
            return base
        p = min(max((seen - warm) / max(self.examples(self.cap) - warm, 1), 0.0), 1.0)
        if r.lr != "one_cycle":
            return base * decay_factor(r.lr, p)
        low = base / ONE_CYCLE_DIV
        if p < ONE_CYCLE_RISE:  # the cosine decay run backwards, from low up to the peak
            return base * decay_factor("cosine", 1.0 - p / ONE_CYCLE_RISE, low / base)
        end = low / ONE_CYCLE_FINAL_DIV
        return base * decay_factor("cosine", (p - ONE_CYCLE_RISE) / (1.0 - ONE_CYCLE_RISE), end / base)

    def momentum_at(self, step: int) -> float:
        """The momentum of update ``step``."""
        return self.phase(step).momentum

    def current(self, steps: int) -> dict[str, float]:
        """The curves' ``batch_size_current`` and ``momentum_current`` after ``steps``
        updates: those of the last one."""
        last = self.phase(max(steps - 1, 0))
        return {"batch_size_current": float(last.batch_size), "momentum_current": last.momentum}

    def eval_steps(self, ratio: float) -> list[int]:
        """When the trial evaluates: every update of a range test, else ``eval_steps``."""
        if self.ramp.lr == "range_test":
            return list(range(1, self.cap + 1))
        return eval_steps(self.cap, ratio)

    def segments(self, start: int, end: int) -> list[tuple[int, int]]:
        """[start, end) cut where the batch size, LR scale or momentum change (the NQM
        advances each piece in closed form)."""
        cuts = sorted({start, end, *(p.start_step for p in self.phases if start < p.start_step < end)})
        return list(zip(cuts[:-1], cuts[1:], strict=True))
