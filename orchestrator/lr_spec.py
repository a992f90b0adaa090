"""The three forms of a study's ``search.lr``: a log-spaced grid, a grid centred per batch
size on a scaling rule, and LR policies compared at equal budget.

    lr = { min = 0.003, max = 3.0, points = 9 }
    lr = { rule = "sqrt", base_batch = 128, base_lr = 0.1, decades = 1.0, points = 7 }
    lr = { policies = ["constant", "linear", "sqrt", "tuned"], base_batch = 32, base_lr = 0.01,
           tuned = { min = 0.003, max = 1.0, points = 7 } }

``orchestrator.grid.lr_values`` turns each into the learning rates of one batch size.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from trainables.contract import LR_RULE_EXPONENTS

PositiveInt = Annotated[int, Field(gt=0)]
LR_FORM_TAGS = ("lr_grid", "lr_rule", "lr_policies")
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


def lr_form(v: Any) -> str:
    """Which form a ``search.lr`` table is (its pydantic union tag)."""
    # the key that only one form has decides which form it is, so errors name the keys of
    # the form the user meant: ``rule``, ``policies``, else a plain grid
    if isinstance(v, LrRule) or (isinstance(v, dict) and "rule" in v):
        return "lr_rule"
    if isinstance(v, LrPolicies) or (isinstance(v, dict) and "policies" in v):
        return "lr_policies"
    return "lr_grid"
