"""The four forms of a study's ``search.lr``: a log-spaced grid, a grid centred per batch
size on a scaling rule, LR policies compared at equal budget, and a grid centred per batch
size by an LR range test run before the sweep.

    lr = { min = 0.003, max = 3.0, points = 9 }
    lr = { rule = "sqrt", base_batch = 128, base_lr = 0.1, decades = 1.0, points = 7 }
    lr = { policies = ["constant", "linear", "sqrt", "tuned"], base_batch = 32, base_lr = 0.01,
           tuned = { min = 0.003, max = 1.0, points = 7 } }
    lr = { range_test = { min = 1e-5, max = 10.0, steps = 100 }, decades = 1.0, points = 5 }

``orchestrator.grid.lr_values`` turns each into the learning rates of one batch size.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from trainables.contract import LR_RULE_EXPONENTS

PositiveInt = Annotated[int, Field(gt=0)]
LR_FORM_TAGS = ("lr_grid", "lr_rule", "lr_policies", "lr_range")
"""pydantic's union tags of the forms (never part of an error's key)."""


class Strict(BaseModel):
    """A table of user input: unknown keys are errors, values frozen (every study table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LrGrid(Strict):
    """A log-spaced learning-rate grid, the same for every batch size."""

    min: float = Field(gt=0)
    """Smallest learning rate of the grid."""
    max: float = Field(gt=0)
    """Largest learning rate of the grid."""
    points: PositiveInt = 9
    """Number of log-spaced learning rates from ``min`` to ``max`` inclusive."""

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> LrGrid:
        if self.max < self.min:
            raise ValueError("max must be >= min")
        if self.points == 1 and self.max != self.min:
            raise ValueError("points = 1 needs min == max (one learning rate)")
        return self


class LrRule(Strict):
    """A log-spaced grid centred, per batch size, on a scaling rule's prediction."""

    rule: Literal["linear", "sqrt"]
    """linear: lr = base_lr * B/base_batch (Goyal et al.); sqrt: base_lr * sqrt(B/base_batch)."""
    base_batch: PositiveInt
    """Batch size at which ``base_lr`` is the centre of the grid."""
    base_lr: float = Field(gt=0)
    """Learning rate the rule starts from at ``base_batch``."""
    decades: float = Field(default=1.0, gt=0)
    """Half-width of the grid around the rule's prediction, in powers of ten."""
    points: PositiveInt = 7
    """Number of log-spaced learning rates per batch size."""


LrPolicy = Literal["constant", "linear", "sqrt", "tuned"]


class LrPolicies(Strict):
    """LR policies compared at every batch size (the equal-budget experiment): each fixed
    rule's one LR, and for ``tuned`` a grid; ``tuned`` is then the best LR tried at that
    batch size, whichever policy's it is."""

    policies: list[LrPolicy] = Field(min_length=1)
    """constant: base_lr at every B; linear: base_lr * B/base_batch (Goyal et al.); sqrt:
    base_lr * sqrt(B/base_batch) (Malladi et al.); tuned: the grid ``tuned``, re-tuned per B."""
    base_batch: PositiveInt
    """Batch size at which every rule gives ``base_lr``."""
    base_lr: float = Field(gt=0)
    """Learning rate of the rules at ``base_batch``."""
    tuned: LrGrid | None = None
    """The LR grid of the ``tuned`` policy (``{min, max, points}``, the same at every B);
    required when ``policies`` has ``tuned``."""

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> LrPolicies:
        if len(set(self.policies)) != len(self.policies):
            raise ValueError("policies must be distinct")
        if ("tuned" in self.policies) != (self.tuned is not None):
            raise ValueError("tuned = {min, max, points} is needed with the tuned policy, and only with it")
        return self

    def fixed(self) -> list[str]:
        """The policies with one LR per batch size (all but ``tuned``), in LR_RULE_EXPONENTS order."""
        return [p for p in LR_RULE_EXPONENTS if p in self.policies]


class RangeTest(Strict):
    """Leslie Smith's LR range test: one short run whose LR rises exponentially."""

    min: float = Field(default=1e-6, gt=0)
    """The LR of its first update."""
    max: float = Field(default=10.0, gt=0)
    """The LR of its last update."""
    steps: int = Field(default=100, ge=10)
    """Its updates (one evaluation each)."""

    @pydantic.model_validator(mode="after")
    def _rising(self) -> RangeTest:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min:g}) must be below max ({self.max:g})")
        return self


class LrRangeTest(Strict):
    """A log-spaced grid per batch size centred on what that batch size's range test
    suggests (``analysis.range_test.suggest``), run before the sweep."""

    range_test: RangeTest
    """The range test of every batch size."""
    decades: float = Field(default=1.0, gt=0)
    """Half-width of the grid around the suggestion, in powers of ten."""
    points: PositiveInt = 5
    """Number of log-spaced learning rates per batch size."""
    centres: dict[int, float] | None = None
    """Batch size -> the suggested LR: filled by the run after its range tests
    (``orchestrator.range_test``); a study that gives them skips the tests."""


def lr_form(v: Any) -> str:
    """Which form a ``search.lr`` table is (its pydantic union tag)."""
    # the key that only one form has decides which form it is, so errors name the keys of
    # the form the user meant: ``rule``, ``policies``, else a plain grid
    if isinstance(v, LrRule) or (isinstance(v, dict) and "rule" in v):
        return "lr_rule"
    if isinstance(v, LrPolicies) or (isinstance(v, dict) and "policies" in v):
        return "lr_policies"
    if isinstance(v, LrRangeTest) or (isinstance(v, dict) and "range_test" in v):
        return "lr_range"
    return "lr_grid"
