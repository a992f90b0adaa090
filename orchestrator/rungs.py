"""Asynchronous successive halving for one group of trials (Li et al. 2020, "ASHA").

The same decisions as Ray Tune's ``AsyncHyperBandScheduler`` with one bracket, held as
plain data so that the whole state can be saved and restored (Tune does not persist a
scheduler's state) and no private attribute of Ray's class is touched.

Rungs sit at ``grace * rf**k`` up to ``max_t``. When a trial first reports at or past a
rung it has not been recorded at (the highest such rung), it is stopped if its value is
below the ``1 - 1/rf`` quantile of the values recorded there so far, and is recorded there.
Values are oriented so that larger is better.

    >>> r = Rungs.new(grace=10, max_t=100, reduction_factor=3)
    >>> r.milestones
    [10.0, 30.0, 90.0]
    >>> [r.decide(t, 10, v) for t, v in [("a", 1.0), ("b", 3.0), ("c", 0.5)]]
    [False, False, True]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Rungs:
    """The rungs of one ASHA bracket and the values recorded at each."""

    milestones: list[float]
    """Rung positions on the time axis, smallest first."""
    reduction_factor: float
    """Each rung keeps the best 1/reduction_factor of the trials recorded there."""
    max_t: float
    """End of every trial's budget on the time axis."""
    records: list[dict[str, float]]
    """Per milestone: trial id -> the (larger-is-better) value recorded there."""

    @classmethod
    def new(cls, grace: float, max_t: float, reduction_factor: float) -> Rungs:
        grace = min(grace, max_t)
        n = int(math.log(max_t / grace) / math.log(reduction_factor) + 1)
        milestones = [float(grace * reduction_factor**k) for k in range(n)]
        return cls(milestones, float(reduction_factor), float(max_t), [{} for _ in milestones])

    def cutoff(self, k: int) -> float | None:
        """The value a trial must reach at rung ``k`` to continue (None: nothing to compare)."""
        values = list(self.records[k].values())
        return float(np.nanpercentile(values, (1 - 1 / self.reduction_factor) * 100)) if values else None

    def decide(self, trial_id: str, t: float, value: float) -> bool:
        """Record one result; True when it stops the trial early."""
        for k in reversed(range(len(self.milestones))):
            if t < self.milestones[k] or trial_id in self.records[k]:
                continue
            cut = self.cutoff(k)
            self.records[k][trial_id] = value
            return cut is not None and value < cut
        return False

    def credit(self, trial_id: str, t: float, value: float) -> None:
        """Count a trial at every rung above ``t`` with ``value``: a trial that ended at the
        target never reaches the later rungs, and would only have improved on its value."""
        for k, m in enumerate(self.milestones):
            if m > t:
                self.records[k].setdefault(trial_id, value)

    def counts(self) -> list[tuple[float, int]]:
        """(milestone, trials recorded there), smallest first."""
        return [(m, len(r)) for m, r in zip(self.milestones, self.records)]

    def state(self) -> dict[str, Any]:
        return {"milestones": list(self.milestones), "reduction_factor": self.reduction_factor,
                "max_t": self.max_t, "records": [dict(r) for r in self.records]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Rungs:
        return cls(list(state["milestones"]), float(state["reduction_factor"]), float(state["max_t"]),
                   [dict(r) for r in state["records"]])
