"""The resolved trial grid: batch size × learning rate × seed, and each trial's config.

    from orchestrator.study import load_study
    from orchestrator.grid import trial_grid
    for point in trial_grid(load_study("fashion-mnist")):
        print(point)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orchestrator.study import LrGrid, Study
from trainables.contract import TrialConfig


@dataclass(frozen=True)
class TrialPoint:
    """One trial of the grid."""

    batch_size: int
    micro_batch_size: int
    lr: float
    seed: int


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


def lr_values(study: Study, batch_size: int) -> list[float]:
    """The learning rates tried at one batch size."""
    lr = study.search.lr
    if isinstance(lr, LrGrid):
        grid = np.geomspace(lr.min, lr.max, lr.points)
    else:
        ratio = batch_size / lr.base_batch
        centre = lr.base_lr * (ratio if lr.rule == "linear" else math.sqrt(ratio))
        grid = centre * (np.logspace(-lr.decades, lr.decades, lr.points) if lr.points > 1 else np.ones(1))
    # 6 significant digits: readable in tables and file names, far below any LR effect.
    return [float(f"{x:.6g}") for x in grid]


def trial_grid(study: Study) -> list[TrialPoint]:
    """Every trial of the study, ordered by batch size, then learning rate, then seed."""
    points = []
    for b in study.search.batch_sizes:
        mb = micro_batch_size(b, study.budget.max_micro_batch)
        for lr in lr_values(study, b):
            for seed in range(study.search.seeds):
                points.append(TrialPoint(b, mb, lr, seed))
    return points


def trial_config(study: Study, point: TrialPoint) -> TrialConfig:
    """The typed config one trial's trainable receives (contract: "trainables")."""
    s = study.search
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
        cpus=study.resources.cpus_per_trial,
        target=study.target,
        stop_at_target=study.budget.stop_at_target,
        settings=study.trainable_settings().model_dump(mode="json"),
    )


def format_grid(study: Study) -> str:
    """The dry-run listing: one line per batch size, then the trial count."""
    lines = [f"study {study.name}: trainable {study.trainable}, optimizer {study.search.optimizer}"]
    lines.append(f"{'batch':>7} {'micro':>7}  {'seeds':>5}  learning rates")
    grid = trial_grid(study)
    for b in study.search.batch_sizes:
        pts = [p for p in grid if p.batch_size == b]
        lrs = sorted({p.lr for p in pts})
        lines.append(
            f"{b:>7} {pts[0].micro_batch_size:>7}  {study.search.seeds:>5}  "
            + " ".join(f"{x:.3g}" for x in lrs)
        )
    lines.append(f"{len(grid)} trials ({len(study.search.batch_sizes)} batch sizes)")
    return "\n".join(lines)
