"""Successive halving for one group of trials, held as plain data: ``Rungs`` decides
asynchronously (Li et al. 2020, "ASHA"), ``SyncRungs`` synchronously (Jamieson &
Talwalkar 2016, "successive halving").

Both are plain data so that the whole state can be saved and restored (Tune does not
persist a scheduler's state) and no private attribute of Ray's classes is touched.
``Rungs`` makes the same decisions as Ray Tune's ``AsyncHyperBandScheduler`` with one
bracket.

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
        return self.decide_at(trial_id, t, value) is not None

    def decide_at(self, trial_id: str, t: float, value: float) -> float | None:
        """Record one result; the rung (milestone) it stops the trial at, or None."""
        for k in reversed(range(len(self.milestones))):
            if t < self.milestones[k] or trial_id in self.records[k]:
                continue
            cut = self.cutoff(k)
            self.records[k][trial_id] = value
            return self.milestones[k] if cut is not None and value < cut else None
        return None

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
        return {
            "milestones": list(self.milestones),
            "reduction_factor": self.reduction_factor,
            "max_t": self.max_t,
            "records": [dict(r) for r in self.records],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Rungs:
        return cls(
            list(state["milestones"]),
            float(state["reduction_factor"]),
            float(state["max_t"]),
            [dict(r) for r in state["records"]],
        )


# Verdicts of ``SyncRungs`` (the scheduler maps them to Tune's CONTINUE / PAUSE / STOP).
CONTINUE, PAUSE, STOP = "continue", "pause", "stop"


def _rank(value: float) -> float:
    """A value as the ranking sees it: NaN (e.g. a loss that blew up) is the worst."""
    return -math.inf if math.isnan(value) else value


def keep_count(n: int, reduction_factor: float) -> int:
    """Trials a synchronous rung keeps of ``n`` recorded there: the best ceil(n / rf)."""
    return max(1, math.ceil(n / reduction_factor - 1e-9))


@dataclass
class SyncRungs:
    """Synchronous successive halving for one group of ``n_trials`` trials.

    A trial that reaches a rung waits there (the scheduler pauses it, freeing its slot)
    until every live trial of the group has reached it. Live means not ended: the trials
    that have not started yet count. Then the rung keeps the best ``keep_count(n, rf)`` of
    the ``n`` trials recorded there -- a trial that ended at the target before the rung
    counts with its final value -- and stops the other waiting trials. The decisions
    depend only on the trials' values, never on the order or timing in which they ran.

        >>> r = SyncRungs.new(grace=10, max_t=100, reduction_factor=3, n_trials=3)
        >>> r.arrive("a", 10, 1.0), r.arrive("b", 10, 3.0)
        (('pause', {}), ('pause', {}))
        >>> r.arrive("c", 11, 0.5)   # the last live trial: rung 10 keeps 1 of 3
        ('stop', {'a': 'stop', 'b': 'continue'})
        >>> r.stopped
        {'a': 10.0, 'c': 10.0}
    """

    milestones: list[float]
    """Rung positions on the time axis, smallest first."""
    reduction_factor: float
    """Each rung keeps the best 1/reduction_factor of the trials recorded there."""
    max_t: float
    """End of every trial's budget on the time axis."""
    n_trials: int
    """Trials in the group, started or not."""
    records: list[dict[str, float]]
    """Per milestone: trial id -> the (larger-is-better) value recorded there."""
    cutoffs: list[float | None]
    """Per milestone: the worst value the rung kept once decided; None while undecided."""
    ended: set[str]
    """Trials no longer live: ended by themselves (target, cap, divergence, error) or stopped."""
    stopped: dict[str, float]
    """Trials stopped early -> the milestone they were stopped at."""

    @classmethod
    def new(cls, grace: float, max_t: float, reduction_factor: float, n_trials: int) -> SyncRungs:
        ms = Rungs.new(grace, max_t, reduction_factor).milestones
        return cls(
            ms, float(reduction_factor), float(max_t), int(n_trials), [{} for _ in ms], [None] * len(ms), set(), {}
        )

    def live(self) -> int:
        """Trials of the group that have not ended (including those not started)."""
        return self.n_trials - len(self.ended)

    def waiting_at(self, trial_id: str) -> int | None:
        """The undecided rung a live trial waits at; None when it may run."""
        if trial_id in self.ended:
            return None
        for k, rec in enumerate(self.records):
            if trial_id in rec and self.cutoffs[k] is None:
                return k
        return None

    def runnable(self, trial_id: str) -> bool:
        return trial_id not in self.ended and self.waiting_at(trial_id) is None

    def arrive(self, trial_id: str, t: float, value: float) -> tuple[str, dict[str, str]]:
        """Record one result of a running trial at time ``t``: its own verdict (continue,
        pause: wait at a rung, stop), and the verdicts this completes for waiting trials."""
        if trial_id in self.stopped:
            return STOP, {}
        late = self._record(trial_id, t, value)
        if late is not None:  # at a rung decided without it (not in a well-counted group)
            self.stopped[trial_id] = late
            self.ended.add(trial_id)
            return STOP, {}
        changes = self._settle()
        changes.pop(trial_id, None)
        if trial_id in self.stopped:
            return STOP, changes
        return (PAUSE if self.waiting_at(trial_id) is not None else CONTINUE), changes

    def end(self, trial_id: str, t: float | None, value: float | None, credit: bool) -> dict[str, str]:
        """A trial ended by itself or was removed; ``credit``: it ended at the target, so it
        counts with ``value`` at every later rung (it would only have improved). Returns the
        verdicts this completes for waiting trials."""
        if trial_id in self.ended:
            return {}
        if value is not None and t is not None:
            self._record(trial_id, t, value)
            if credit:
                for k, m in enumerate(self.milestones):
                    if m > t and self.cutoffs[k] is None:
                        self.records[k].setdefault(trial_id, value)
        self.ended.add(trial_id)
        return self._settle()

    def shrink(self, n_trials: int) -> dict[str, str]:
        """The group turned out to hold only ``n_trials`` (the others will never start):
        the verdicts this completes for waiting trials."""
        self.n_trials = min(self.n_trials, int(n_trials))
        return self._settle()

    def _record(self, trial_id: str, t: float, value: float) -> float | None:
        """Record at every rung ``t`` has passed; the milestone of a decided rung that the
        value falls short of, if any (a latecomer)."""
        for k, m in enumerate(self.milestones):
            if t < m or trial_id in self.records[k]:
                continue
            self.records[k][trial_id] = value
            cut = self.cutoffs[k]
            if cut is not None and _rank(value) < cut:
                return m
        return None

    def _settle(self) -> dict[str, str]:
        """Decide every rung that all live trials have reached, smallest first."""
        changes: dict[str, str] = {}
        for k, rec in enumerate(self.records):
            if self.cutoffs[k] is not None:
                continue
            if not rec or sum(1 for t in rec if t not in self.ended) < self.live():
                break  # later rungs hold a subset of this one's trials: not complete either
            ranked = sorted(rec, key=lambda t: (-_rank(rec[t]), t))
            keep = keep_count(len(ranked), self.reduction_factor)
            self.cutoffs[k] = _rank(rec[ranked[keep - 1]])
            for t in ranked[keep:]:
                if t not in self.ended:
                    self.stopped[t] = self.milestones[k]
                    self.ended.add(t)
                    changes[t] = STOP
            for t in ranked[:keep]:
                if t not in self.ended:
                    changes[t] = CONTINUE if self.waiting_at(t) is None else PAUSE
        return {t: v for t, v in changes.items() if v != PAUSE}

    def counts(self) -> list[tuple[float, int]]:
        """(milestone, trials recorded there), smallest first."""
        return [(m, len(r)) for m, r in zip(self.milestones, self.records)]

    def state(self) -> dict[str, Any]:
        return {
            "milestones": list(self.milestones),
            "reduction_factor": self.reduction_factor,
            "max_t": self.max_t,
            "n_trials": self.n_trials,
            "records": [dict(r) for r in self.records],
            "cutoffs": list(self.cutoffs),
            "ended": sorted(self.ended),
            "stopped": dict(self.stopped),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SyncRungs:
        return cls(
            list(state["milestones"]),
            float(state["reduction_factor"]),
            float(state["max_t"]),
            int(state["n_trials"]),
            [dict(r) for r in state["records"]],
            list(state["cutoffs"]),
            set(state["ended"]),
            dict(state["stopped"]),
        )
