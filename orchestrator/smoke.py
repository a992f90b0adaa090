"""``--budget smoke``: shrink any study to a run of well under a minute on 2 CPU cores.

Three batch sizes from the lower half of the study's range, the three central learning rates
(of an LR policies table: its rules, and three of its tuned grid), the smallest and largest
training fractions, one seed, and at most 20,000 examples or 150 steps per trial (a
fixed_budget study: 20,000 examples, the same at every batch size), of a ``[branching]``
table its first two checkpoints and multipliers, and a ``[schedule]``'s milestones at the
same fractions of the smaller budget. The result exercises the whole
pipeline (Tune, ASHA, sink, report); its numbers are not a study.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SMOKE_BATCH_SIZES = 3
SMOKE_LRS = 3
SMOKE_MAX_EXAMPLES = 20_000
SMOKE_MAX_STEPS = 150
SMOKE_GRACE_EXAMPLES = 5_000


def shrink(raw: dict[str, Any]) -> dict[str, Any]:
    """The smoke version of a validated study dict (``Study.model_dump()``)."""
    search = dict(raw["search"])
    sizes = search["batch_sizes"]
    if len(sizes) > SMOKE_BATCH_SIZES:
        idx = np.linspace(0, len(sizes) - 1, 2 * SMOKE_BATCH_SIZES - 1).round().astype(int)
        # 3 of 5 evenly spaced batch sizes: the lower half of the range. The largest
        # batches cannot reach anything in 150 steps, and they are the slowest trials.
        sizes = sorted({sizes[i] for i in idx[:SMOKE_BATCH_SIZES]})
    search["batch_sizes"] = sizes
    lr = dict(search["lr"])
    if "rule" in lr or "range_test" in lr:
        lr["decades"] = min(lr["decades"], 0.5)
        lr["points"] = min(lr["points"], SMOKE_LRS)
    elif "policies" in lr:
        if lr.get("tuned"):
            lr["tuned"] = _central(dict(lr["tuned"]))
    else:
        lr = _central(lr)
    search["lr"] = lr
    search["seeds"] = 1
    fractions = search.get("train_fraction", [1.0])
    search["train_fraction"] = sorted({min(fractions), max(fractions)})
    budget = dict(raw["budget"])
    budget.pop("max_epochs", None)  # validation resolved it into max_examples
    budget["max_examples"] = min(budget.get("max_examples") or SMOKE_MAX_EXAMPLES, SMOKE_MAX_EXAMPLES)
    if raw.get("protocol", {}).get("kind") != "fixed_budget":
        budget["max_steps"] = min(budget.get("max_steps") or SMOKE_MAX_STEPS, SMOKE_MAX_STEPS)
    es = dict(raw.get("early_stopping", {}))
    if es:
        es["grace_examples"] = min(es.get("grace_examples", SMOKE_GRACE_EXAMPLES), SMOKE_GRACE_EXAMPLES)
    out = {**raw, "search": search, "budget": budget, "early_stopping": es}
    if raw.get("schedule") and raw["schedule"].get("milestones"):
        # the milestones at the same fractions of the shrunk budget (validation made them examples)
        old = raw["budget"].get("max_examples")
        scale = budget["max_examples"] / old if old else 1.0
        out["schedule"] = {**raw["schedule"], "milestones": [m * scale for m in raw["schedule"]["milestones"]]}
    if raw.get("branching"):
        # the first two checkpoints and multipliers: the window stays a multiple of their k·B0
        br = dict(raw["branching"])
        br["checkpoints"], br["multipliers"] = br["checkpoints"][:2], br["multipliers"][:2]
        out["branching"] = br
    return out


def _central(grid: dict[str, Any]) -> dict[str, Any]:
    """A ``{min, max, points}`` grid cut to its ``SMOKE_LRS`` central points."""
    if grid["points"] <= SMOKE_LRS:
        return grid
    values = np.geomspace(grid["min"], grid["max"], grid["points"])
    mid = len(values) // 2
    return {**grid, "min": float(values[mid - 1]), "max": float(values[mid + 1]), "points": SMOKE_LRS}
