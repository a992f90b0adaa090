"""A study's ``[schedule]``: the learning rate's shape and, at milestones, an LR decay or a
batch-size increase (Smith, Kindermans, Ying & Le 2017, "Don't decay the learning rate,
increase the batch size").

    [schedule]
    lr = "step"
    milestones = [20, 40]             # epochs (unit = "epochs") or examples
    unit = "epochs"
    factor = 5
    mode = ["decay_lr", "increase_batch", "hybrid"]   # one, or several to compare
    max_batch_size = 3200             # increase_batch: 128 -> 640 -> 3200 from B = 128
    hybrid_batch_size = 640           # hybrid: 128 -> 640, then the LR decays

Each mode listed is a grid axis: every (batch size, LR, seed) runs once per mode, the curves'
``batch_size`` stays the starting batch and ``batch_size_current`` is the batch of the
moment. ``to_ramp`` gives the typed ``trainables.schedule.Ramp`` a trial receives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import pydantic
from pydantic import Field

from orchestrator.lr_spec import LrRangeTest, Strict
from trainables.contract import UsageError
from trainables.schedule import Mode, Plan, Ramp, micro_batch_size

if TYPE_CHECKING:
    from orchestrator.study import Study

PositiveFloat = Annotated[float, Field(gt=0)]


class Schedule(Strict):
    """``[schedule]``: LR shape, milestones, and what a milestone changes."""

    lr: Literal["constant", "step", "cosine", "linear_decay", "one_cycle"] = "constant"
    """After warmup: constant; step (a change at each milestone, as ``mode`` says); cosine
    or linear_decay to 0 over the trial's budget; one_cycle (Smith 2018)."""
    milestones: list[PositiveFloat] = []
    """Where the step schedule changes, increasing, in ``unit``s (lr = "step" only)."""
    unit: Literal["examples", "epochs"] = "examples"
    """Unit of ``milestones``: examples, or epochs of the trainable's training set (it must
    say how large that is: ``train_size``)."""
    factor: float = 10.0
    """What a milestone divides the LR or multiplies the batch size by (> 1; an integer
    when the batch grows)."""
    mode: list[Mode] = ["decay_lr"]
    """decay_lr, increase_batch, hybrid (raise B while it stays within max_batch_size, then
    decay the LR), or a list of them to compare in one study."""
    max_batch_size: int | None = Field(default=None, gt=0)
    """The largest batch increase_batch may reach (required by it and by hybrid)."""
    hybrid_batch_size: int | None = Field(default=None, gt=0)
    """hybrid: the batch it grows to before it decays the LR (default max_batch_size)."""
    momentum_after: float | None = Field(default=None, ge=0, lt=1)
    """The momentum rule B ∝ 1/(1 − m) (Smith et al. 2017, §5.2): at the first batch increase
    the momentum becomes this and the batch grows by a further (1 − m)/(1 − momentum_after)."""

    @pydantic.field_validator("mode", mode="before")
    @classmethod
    def _listed(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @pydantic.field_validator("mode")
    @classmethod
    def _once(cls, v: list[Mode]) -> list[Mode]:
        if len(set(v)) != len(v) or not v:
            raise ValueError("list each mode once")
        return v

    @pydantic.field_validator("milestones")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("milestones must increase")
        return v

    @property
    def grows(self) -> bool:
        """Whether some mode raises the batch size."""
        return any(m != "decay_lr" for m in self.mode)

    def to_ramp(self, mode: Mode, milestones: tuple[int, ...], max_micro_batch: int) -> Ramp:
        """The ``Ramp`` of one mode, milestones resolved to examples."""
        cap = self.hybrid_batch_size if mode == "hybrid" and self.hybrid_batch_size else self.max_batch_size
        return Ramp(
            lr=self.lr,
            milestones=milestones,
            factor=self.factor,
            mode=mode,
            max_batch_size=cap,
            max_micro_batch=max_micro_batch,
            momentum_after=self.momentum_after,
        )


def train_size_of(study: Study) -> int | None:
    """The trainable's training examples per epoch (None: it does not say); a trainable
    that cannot find its data is a UsageError."""
    import trainables

    try:
        return trainables.train_size(study.trainable, study.trainable_settings())
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None


def check(study: Study, plans: list[Plan], train_size: int | None) -> None:
    """Raise ``UsageError`` naming the key for what the table alone cannot see: the other
    tables it must agree with, the milestones against the budget, the batches each mode's
    plans reach against its cap, the micro-batches and the training set."""
    s = study.schedule
    assert s is not None
    if s.factor <= 1:
        raise UsageError(f"schedule.factor: must be > 1 (got {s.factor:g}); a milestone decays the LR or grows B by it")
    if s.lr != "step" and (s.milestones or s.mode != ["decay_lr"]):
        raise UsageError(f'schedule.lr: milestones and batch-increase modes need lr = "step" (got {s.lr!r})')
    if s.lr == "step" and not s.milestones:
        raise UsageError('schedule.milestones: lr = "step" needs at least one milestone')
    if s.lr == "one_cycle" and study.search.warmup_examples:
        raise UsageError("search.warmup_examples: one_cycle's first 30% is its warmup; set 0")
    if s.grows and s.max_batch_size is None:
        raise UsageError("schedule.max_batch_size: required when a mode raises the batch size (increase_batch, hybrid)")
    if s.hybrid_batch_size is not None and ("hybrid" not in s.mode or s.hybrid_batch_size > (s.max_batch_size or 0)):
        raise UsageError("schedule.hybrid_batch_size: needs mode hybrid, and at most max_batch_size")
    if s.grows and s.factor != int(s.factor):
        raise UsageError(f"schedule.factor: must be a whole number when the batch grows (got {s.factor:g})")
    if s.grows and study.budget.max_examples is None:
        raise UsageError(
            "budget.max_examples: a schedule that grows the batch needs an examples budget (a step cap "
            "would give each mode different data)"
        )
    if study.search.strategy == "adaptive" and (len(s.mode) > 1 or s.grows):
        raise UsageError("search.strategy: the adaptive search caps steps per batch size; no batch increase")
    if study.branching is not None:
        raise UsageError("branching: a branched study's base run keeps its batch size; drop [schedule] or [branching]")
    if len(s.mode) > 1 and study.early_stopping.scheduler != "none":
        raise UsageError(
            'early_stopping.scheduler: a study comparing schedule modes runs each to its end; set it to "none"'
        )
    if s.momentum_after is not None and (not s.grows or s.momentum_after <= study.search.momentum):
        raise UsageError(
            f"schedule.momentum_after: must exceed search.momentum ({study.search.momentum:g}) and apply at a "
            "batch increase (mode increase_batch or hybrid)"
        )
    for plan in plans:
        _check_plan(plan, train_size, "hybrid_batch_size" if s.hybrid_batch_size else "max_batch_size")


def _check_plan(plan: Plan, train_size: int | None, hybrid_key: str) -> None:
    mode, cap = plan.ramp.mode, plan.ramp.max_batch_size
    for p in plan.phases[1:]:
        if p.start_step >= plan.cap:
            raise UsageError(
                f"schedule.milestones: a milestone at or past {p.start_examples} examples is beyond the trial's "
                f"budget ({plan.examples(plan.cap)} examples in {plan.cap} updates at B={plan.batch_size})"
            )
    for p in plan.phases:
        b = p.batch_size
        if mode != "decay_lr" and cap is not None and b > cap:
            key = hybrid_key if mode == "hybrid" else "max_batch_size"
            raise UsageError(f"schedule.{key}: mode {mode} reaches B={b} from B={plan.batch_size}, above {cap}")
        if train_size is not None and b > train_size:
            raise UsageError(
                f"schedule.max_batch_size: B={b} (mode {mode}) is larger than the "
                f"{train_size} examples of the training set, so no batch can be filled"
            )
        if b % (plan.world_size * p.micro_batch_size):
            raise UsageError(
                f"schedule.momentum_after: B={b} from B={plan.batch_size} does not split into "
                f"{plan.world_size} worker(s) of equal micro-batches"
            )


def resolved(study: Study) -> Study:
    """The study with ``[schedule]`` milestones in examples, checked against the trainable,
    the budget and the grid (``check``), and an LR range test checked against the trainable
    (``check_range_test``); the study itself when it has neither."""
    check_range_test(study)
    s = study.schedule
    if s is None:
        return study
    _check_follows(study, "schedule")
    n = train_size_of(study)
    if s.unit == "epochs":
        if n is None:
            raise UsageError(
                f"schedule.unit: trainable {study.trainable} does not say how large its training set is "
                '(no train_size); give the milestones in examples (unit = "examples")'
            )
        s = s.model_copy(update={"milestones": [float(round(e * n)) for e in s.milestones], "unit": "examples"})
        study = study.model_copy(update={"schedule": s})
    filled = None if n is None else max(1, round(n * min(study.search.train_fraction)))
    check(study, plans(study), filled)
    return study


def plans(study: Study) -> list[Plan]:
    """The plan of every (starting batch size, mode): what the checks walk (the LR and the
    seed change no batch; ``orchestrator.grid.trial_config`` builds the trials' own)."""
    s, b = study.schedule, study.budget
    assert s is not None
    milestones = tuple(round(m) for m in s.milestones)
    out = []
    for size in study.search.batch_sizes:
        workers = study.resources.workers_per_trial
        for mode in s.mode:
            out.append(
                Plan(
                    s.to_ramp(mode, milestones, b.max_micro_batch),
                    size,
                    micro_batch_size(size // workers, b.max_micro_batch),
                    1.0,
                    study.search.momentum,
                    study.search.warmup_examples,
                    b.max_steps,
                    b.max_examples,
                    workers,
                )
            )
    return out


def check_range_test(study: Study) -> None:
    """An LR range test needs a trainable that follows its rising LR, and given centres
    must name every batch size."""
    lr = study.search.lr
    if not isinstance(lr, LrRangeTest):
        return
    _check_follows(study, "search.lr.range_test")
    if lr.centres is not None and sorted(lr.centres) != study.search.batch_sizes:
        raise UsageError(
            f"search.lr.centres: give one for every batch size ({', '.join(map(str, study.search.batch_sizes))}), "
            f"got {', '.join(map(str, sorted(lr.centres)))}"
        )
    if lr.centres is not None and not all(c > 0 for c in lr.centres.values()):
        raise UsageError("search.lr.centres: learning rates must be positive")


def _check_follows(study: Study, key: str) -> None:
    import trainables

    if not trainables.declares(study.trainable, "SCHEDULES"):
        raise UsageError(
            f"{key}: trainable {study.trainable} does not follow a schedule (its module does not "
            "declare SCHEDULES = True; trainables.schedule.Plan)"
        )
