"""ASHA that compares trials only within one batch size, on the examples-seen axis.

Plain ASHA ranks every trial at a rung against all others; at equal examples seen a large
batch has taken fewer steps and looks worse, so plain ASHA would stop every large-batch
trial early -- exactly the bias a batch-size study must not have. This scheduler keeps one
independent set of rungs (``orchestrator.rungs``) per batch size.

Tune does not restore a scheduler's state when a sweep resumes, so the whole state is a
plain dict (``state()`` / ``load_state()``) that the sweep's ``SchedulerState`` callback
hands to Tune's experiment checkpoints, which do restore callbacks.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from orchestrator.rungs import Rungs
from orchestrator.study import Study
from orchestrator.tune_config import config_of

SHARED = 0  # the one group of a shared (not per-batch-size) ASHA


class PerBatchSizeASHA(FIFOScheduler):
    """One set of ASHA rungs per batch size; records which trials it stopped early."""

    def __init__(
        self,
        metric: str,
        mode: str,
        grace_examples: int,
        reduction_factor: float,
        max_examples_by_batch: dict[int, int],
        per_batch_size: bool = True,
        time_attr: str = "examples_seen",
    ) -> None:
        super().__init__()
        self._rank_metric, self._time_attr = metric, time_attr
        self._sign = 1.0 if mode == "max" else -1.0
        self._grace, self._rf = grace_examples, reduction_factor
        self._max_t = dict(max_examples_by_batch)
        if not per_batch_size:
            # one shared ASHA state (the biased baseline, kept for comparison studies)
            self._max_t = {SHARED: max(self._max_t.values())}
        self._per_batch = per_batch_size
        self._rungs: dict[int, Rungs] = {}
        self._group_of: dict[str, int] = {}
        self.early_stopped: set[str] = set()

    @classmethod
    def for_study(cls, study: Study) -> PerBatchSizeASHA:
        es = study.early_stopping
        return cls(
            metric=es.metric,
            mode=es.mode,
            grace_examples=es.grace_examples,
            reduction_factor=es.reduction_factor,
            max_examples_by_batch={b: study.budget.examples_cap(b) for b in study.search.batch_sizes},
            per_batch_size=es.per_batch_size,
        )

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metric and mode come from the study, not from TuneConfig

    def _group(self, group: int) -> Rungs:
        if group not in self._rungs:
            self._rungs[group] = Rungs.new(self._grace, self._max_t[group], self._rf)
        return self._rungs[group]

    def _value(self, result: dict[str, Any]) -> float | None:
        v = result.get(self._rank_metric)
        return None if v is None or self._time_attr not in result else self._sign * float(v)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._group_of[trial.trial_id] = config_of(trial).batch_size if self._per_batch else SHARED

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        value = self._value(result)
        if value is None:
            return TrialScheduler.CONTINUE  # e.g. a diverged trial's last, unevaluated row
        rungs = self._group(self._group_of[trial.trial_id])
        t = float(result[self._time_attr])
        if t >= rungs.max_t:
            return TrialScheduler.STOP  # the end of the budget, not early stopping
        if rungs.decide(trial.trial_id, t, value):
            self.early_stopped.add(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        group = self._group_of.get(trial.trial_id)
        value = self._value(result or {})
        if group is None or value is None:
            return
        rungs = self._group(group)
        t = float(result[self._time_attr])
        rungs.decide(trial.trial_id, t, value)
        # A trial that ended because it reached the target never reaches the later rungs;
        # without it there, slow trials are only compared with each other and bad
        # learning rates run to the cap.
        if (trial.trial_id not in self.early_stopped and math.isfinite(value)
                and config_of(trial).ends_at(result)):
            rungs.credit(trial.trial_id, t, value)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        pass  # what a trial recorded at its rungs stays: others were compared with it

    def rung_summary(self) -> dict[int, list[tuple[float, int]]]:
        """Per batch size: (rung in examples, trials recorded there), smallest rung first."""
        return {b: r.counts() for b, r in sorted(self._rungs.items())}

    def debug_string(self) -> str:
        return "PerBatchSizeASHA " + " ".join(
            f"B={b}:" + ",".join(str(n) for _, n in rungs) for b, rungs in self.rung_summary().items()
        )

    def state(self) -> dict[str, Any]:
        """Everything needed to continue: the rung records of every batch size."""
        return {
            "rungs": {b: r.state() for b, r in self._rungs.items()},
            "group_of": dict(self._group_of),
            "early_stopped": sorted(self.early_stopped),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._rungs.update({int(b): Rungs.from_state(r) for b, r in state["rungs"].items()})
        self._group_of.update(state["group_of"])
        self.early_stopped |= set(state["early_stopped"])


def make_scheduler(study: Study) -> TrialScheduler:
    """The study's scheduler: ASHA per batch size (or shared), or FIFO for ``none``."""
    if study.early_stopping.scheduler == "none":
        return FIFOScheduler()
    return PerBatchSizeASHA.for_study(study)
