"""The resolved trial grid: batch size × training fraction × learning rate × seed, each
trial's config, and the order in which the sweep starts the trials.

    from orchestrator.study import load_study
    from orchestrator.grid import start_order, trial_grid
    for point in trial_grid(load_study("fashion-mnist")):
        print(point)
    start_order(load_study("fashion-mnist"))[:9]   # the centre LR of every batch size
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.lr_spec import LrGrid, LrPolicies, LrRangeTest
from orchestrator.strata import Stratum
from orchestrator.study import Study
from trainables.contract import TrialConfig, round_lr, rule_lr
from trainables.schedule import Mode, micro_batch_size


@dataclass(frozen=True)
class TrialPoint:
    """One trial of the grid."""

    batch_size: int
    micro_batch_size: int
    lr: float
    seed: int
    train_fraction: float = 1.0
    mode: Mode | None = None
    """The ``[schedule]`` mode of the trial (None: the study's first, if it has one)."""

    @property
    def stratum(self) -> Stratum:
        """What early stopping compares a trial within: (batch size, training fraction)."""
        return (self.batch_size, self.train_fraction)


def lr_values(study: Study, batch_size: int) -> list[float]:
    """The learning rates tried at one batch size, ascending (of LR policies: the union of
    each rule's LR and the tuned grid, so a rule's LR that the grid holds runs once)."""
    lr = study.search.lr
    if isinstance(lr, LrPolicies):
        tuned = _grid(lr.tuned) if lr.tuned is not None else []
        return sorted({*tuned, *(rule_lr(p, lr.base_lr, lr.base_batch, batch_size) for p in lr.fixed())})
    if isinstance(lr, LrGrid):
        return _grid(lr)
    if isinstance(lr, LrRangeTest):
        if lr.centres is None or batch_size not in lr.centres:
            # before the range tests (the dry run): placeholders, one per grid point
            return [float(i + 1) for i in range(lr.points)]
        centre = lr.centres[batch_size]
    else:
        centre = rule_lr(lr.rule, lr.base_lr, lr.base_batch, batch_size)
    grid = centre * (np.logspace(-lr.decades, lr.decades, lr.points) if lr.points > 1 else np.ones(1))
    return [round_lr(x) for x in grid]


def _grid(lr: LrGrid) -> list[float]:
    return [round_lr(x) for x in np.geomspace(lr.min, lr.max, lr.points)]


def trial_grid(study: Study) -> list[TrialPoint]:
    """Every trial of the study, ordered by batch size, training fraction, learning rate,
    schedule mode, seed."""
    points = []
    modes: list[Mode | None] = list(study.schedule.mode) if study.schedule else [None]
    for b in study.search.batch_sizes:
        # a worker's share of the batch in micro-batches (B = workers × micro × accumulation)
        mb = micro_batch_size(b // study.resources.workers_per_trial, study.budget.max_micro_batch)
        for f in study.search.train_fraction:
            for lr in lr_values(study, b):
                for mode in modes:
                    for seed in range(study.search.seeds):
                        points.append(TrialPoint(b, mb, lr, seed, f, mode))
    return points


def centre_out(n: int) -> list[int]:
    """Indices ``0..n-1`` from the centre outwards, the larger index first on a tie.

    >>> centre_out(9)
    [4, 5, 3, 6, 2, 7, 1, 8, 0]
    """
    c = (n - 1) / 2
    return sorted(range(n), key=lambda i: (abs(i - c), -i))


def start_order(study: Study) -> list[TrialPoint]:
    """Every trial of the study in the order the sweep starts them.

    Within a batch size the learning rates go from the centre of its grid outwards (the
    seeds of one learning rate together), so that the trials an early-stopping rung meets
    first are likely good ones and the grid's edges, which are the slow or diverging ones,
    come last and are compared with them. Batch sizes take turns (round robin, smallest
    first): the k-th trial of every batch size starts before the (k+1)-th of any, so a
    batch size's earlier trials are well ahead, or done, when its later ones reach a rung.
    With several training fractions, each (batch size, fraction) takes its turn.
    """
    grid = trial_grid(study)
    per_batch: list[list[TrialPoint]] = []
    for stratum in dict.fromkeys(p.stratum for p in grid):
        points = [p for p in grid if p.stratum == stratum]
        lrs = sorted({p.lr for p in points})
        rank = {lrs[i]: r for r, i in enumerate(centre_out(len(lrs)))}
        per_batch.append(sorted(points, key=lambda p: (rank[p.lr], p.seed)))
    longest = max(len(points) for points in per_batch)
    return [points[k] for k in range(longest) for points in per_batch if k < len(points)]


def trial_config(study: Study, point: TrialPoint) -> TrialConfig:
    """The typed config one trial's trainable receives (contract: "trainables")."""
    s, sched, max_micro = study.search, study.schedule, study.budget.max_micro_batch
    milestones = tuple(round(m) for m in sched.milestones) if sched else ()
    return TrialConfig(
        batch_size=point.batch_size,
        micro_batch_size=point.micro_batch_size,
        lr=point.lr,
        seed=point.seed,
        optimizer=s.optimizer,
        momentum=s.momentum,
        weight_decay=s.weight_decay,
        warmup_examples=s.warmup_examples,
        max_steps=study.budget.max_steps,
        max_examples=study.budget.max_examples,
        cpus=study.resources.worker_cpus,
        target=study.target,
        stop_at_target=study.stops_at_target,
        settings=study.trainable_settings().model_dump(mode="json"),
        train_fraction=point.train_fraction,
        world_size=study.resources.workers_per_trial,
        schedule=None if sched is None else sched.to_ramp(point.mode or sched.mode[0], milestones, max_micro),
    )


def format_grid(study: Study) -> str:
    """The dry-run listing: one line per batch size, then the trial count (an LR range
    test's trials: ``orchestrator.range_test.format_range_test``)."""
    lines = [
        f"study {study.name}: trainable {study.trainable}, optimizer {study.search.optimizer}, "
        f"protocol {study.protocol.kind}"
    ]
    lr = study.search.lr
    if isinstance(lr, LrPolicies):
        lines.append(f"LR policies {', '.join(lr.policies)} (base lr {lr.base_lr:g} at B={lr.base_batch})")
    if study.schedule is not None:
        lines.append(format_schedule(study))
    fractions = study.search.train_fraction
    if fractions != [1.0]:
        lines.append("training fractions " + ", ".join(f"{f:g}" for f in fractions) + " at every batch size")
    lines.append(f"{'batch':>7} {'micro':>7}  {'seeds':>5}  learning rates")
    grid = trial_grid(study)
    pending = isinstance(lr, LrRangeTest) and lr.centres is None
    for b in study.search.batch_sizes:
        pts = [p for p in grid if p.batch_size == b]
        lrs = sorted({p.lr for p in pts})
        shown = " ".join(f"{x:.3g}" for x in lrs)
        if isinstance(lr, LrRangeTest) and pending:
            shown = f"{len(lrs)} LRs over ±{lr.decades:g} decades, centred after the range test"
        lines.append(f"{b:>7} {pts[0].micro_batch_size:>7}  {study.search.seeds:>5}  {shown}")
    strata = f", {len(fractions)} fractions each" if len(fractions) > 1 else ""
    if study.schedule is not None and len(study.schedule.mode) > 1:
        strata += f", {len(study.schedule.mode)} schedule modes each"
    lines.append(f"{len(grid)} trials ({len(study.search.batch_sizes)} batch sizes{strata})")
    if not pending:
        lines.append(format_order(study))
    return "\n".join(lines)


def format_order(study: Study, first: int = 6) -> str:
    """The dry run's note on the start order: LR positions per batch size, first trials."""
    order = start_order(study)
    n_lrs = len(lr_values(study, study.search.batch_sizes[0]))
    seeds = ", the seeds of one LR together" if study.search.seeds > 1 else ""
    on = len(study.search.train_fraction) > 1
    head = ", ".join(
        f"B={p.batch_size}{f' on {p.train_fraction:g}' if on else ''} lr={p.lr:.3g}" for p in order[:first]
    )
    return (
        f"order: within a batch size, LRs by grid position {' '.join(str(i + 1) for i in centre_out(n_lrs))} "
        f"(centre outwards){seeds}; batch sizes take turns: {head}" + (", ..." if len(order) > first else "")
    )


def format_schedule(study: Study) -> str:
    """The dry run's line on ``[schedule]``: the shape, and the batches each mode reaches."""
    from trainables.schedule import Plan

    s = study.schedule
    assert s is not None
    text = f"schedule: lr {s.lr}"
    if s.milestones:
        text += f", milestones at {', '.join(f'{m:.0f}' for m in s.milestones)} examples, factor {s.factor:g}"
    b = study.search.batch_sizes[0]
    for mode in s.mode:
        point = TrialPoint(
            b, micro_batch_size(b // study.resources.workers_per_trial, study.budget.max_micro_batch), 0.1, 0, mode=mode
        )
        plan = Plan.of(trial_config(study, point))
        steps = " -> ".join(
            f"B={p.batch_size}" + (f" lr×{p.lr_scale:g}" if p.lr_scale != 1 else "") for p in plan.phases
        )
        text += f"; {mode}: {steps} ({plan.cap} updates at B={b})"
    return text
