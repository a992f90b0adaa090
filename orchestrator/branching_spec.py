"""The study's ``[branching]`` table: a local critical batch size measured by branching
(Merrill et al. 2025; ``orchestrator.branching`` runs it, ``analysis.branching`` reads it).

    [branching]
    base_batch = 1                      # B0 of the base run
    base_lr = 0.015625                  # its LR; a branch at k·B0 gets the rule's LR
    lr_rule = "linear"                  # f(k) = k (SGD); "sqrt": √k (Adam)
    checkpoints = [4096, 16384, 65536]  # examples the base run has seen at each branch point
    multipliers = [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]
    window = 12288                      # examples every branch trains from its branch point
    tolerance = 0.02                    # a branch keeps up while its loss ≤ (1 + tolerance) × ...
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import pydantic
from pydantic import Field

from orchestrator.lr_spec import Strict
from trainables.contract import UsageError, rule_lr

PositiveInt = Annotated[int, Field(gt=0)]


class Branching(Strict):
    """From checkpoints of one base run at ``base_batch``, short branches at k·B0 with the LR
    moved by ``lr_rule``; the local critical batch size at a checkpoint is B0 times the largest
    k up to which every branch keeps up with the smaller ones (``analysis.branching``)."""

    base_batch: PositiveInt
    """B0: the batch size of the base run."""
    base_lr: float = Field(gt=0)
    """The base run's learning rate (constant after the study's warmup)."""
    lr_rule: Literal["linear", "sqrt"] = "linear"
    """How a branch at k·B0 moves the LR: ``linear`` k·η (SGD below the critical batch),
    ``sqrt`` √k·η (Adam; Malladi et al. 2022)."""
    checkpoints: list[PositiveInt] = Field(min_length=1)
    """Examples seen by the base run at each branch point, increasing, each a multiple of B0."""
    multipliers: list[Annotated[int, Field(ge=2)]] = Field(default=[2, 4, 8, 16, 32], min_length=1)
    """k of the branches, increasing; a reference branch at k = 1 (the base continued over the
    same window) runs at every checkpoint as well."""
    window: PositiveInt
    """Examples each branch trains from its checkpoint: a multiple of every k·B0, so that every
    branch ends on exactly the same examples."""
    tolerance: float = Field(default=0.02, gt=0)
    """A branch keeps up while its final loss is at most (1 + tolerance) times that of every
    smaller k (relative, since the loss spans decades over training)."""
    metric: str = "val_loss"
    """The loss compared (lower is better): a curves column the trainable reports. It is
    measured on a fixed split at the window's end, so no smoothing is needed."""
    seeds: PositiveInt = 1
    """Branches per (checkpoint, k), each with its own data order from the checkpoint; the rule
    compares their mean final loss (a diverged one counts as not keeping up)."""
    seed: int = Field(default=0, ge=0)
    """Seed of the base run; from checkpoint i, replica r of every branch (and the base on to
    the next checkpoint, r = 0) draws its data order from seed + 1 + i + r · len(checkpoints)."""

    @pydantic.field_validator("checkpoints", "multipliers")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("must be strictly increasing")
        return v

    @pydantic.model_validator(mode="after")
    def _aligned(self) -> Branching:
        b0 = self.base_batch
        off = [c for c in self.checkpoints if c % b0]
        if off:
            raise ValueError(f"checkpoints: {off[0]} is not a multiple of base_batch {b0}")
        step = math.lcm(*(k * b0 for k in [1, *self.multipliers]))
        if self.window % step:
            raise ValueError(
                f"window: {self.window} is not a multiple of every k·base_batch (their least common multiple is "
                f"{step}); try {max(1, round(self.window / step)) * step}"
            )
        return self

    def batch_sizes(self) -> list[int]:
        """B0 and every branch's batch size."""
        return [self.base_batch * k for k in [1, *self.multipliers]]

    def lr(self, k: int) -> float:
        """The LR of a branch at k·B0."""
        return rule_lr(self.lr_rule, self.base_lr, self.base_batch, k * self.base_batch)

    def check(self, *, trainable: str, warmup_examples: int) -> None:
        """What needs the trainable and the rest of the study; raises ``UsageError``."""
        import trainables

        if not trainables.declares(trainable, "BRANCHES"):
            raise UsageError(
                f"branching: trainable {trainable} cannot start from another trial's checkpoint (its module "
                "does not declare BRANCHES = True; TrialConfig.init_state)"
            )
        known = trainables.metrics(trainable)
        if known is not None and self.metric not in known:
            raise UsageError(
                f"branching.metric: {self.metric!r} is not reported by trainable {trainable} (it reports {', '.join(known)})"
            )
        if warmup_examples > self.checkpoints[0]:
            raise UsageError(
                f"branching.checkpoints: the first ({self.checkpoints[0]}) falls inside search.warmup_examples "
                f"({warmup_examples}); branches continue at the constant LR"
            )
