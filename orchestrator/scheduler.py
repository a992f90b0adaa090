"""ASHA that compares trials only within one batch size, on the examples-seen axis.

Plain ASHA ranks every trial at a rung against all others; at equal examples seen a large
batch has taken fewer steps and looks worse, so plain ASHA would stop every large-batch
trial early -- exactly the bias a batch-size study must not have. This scheduler keeps one
independent ASHA state per batch size.

Tune does not restore a scheduler's state when a sweep resumes, so the whole state is a
picklable dict (``state()`` / ``load_state()``) that the sweep's ``SchedulerState``
callback hands to Tune's experiment checkpoints, which do restore callbacks.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from orchestrator.study import Study
from trainables.common import target_reached


def trial_batch_size(trial: Trial) -> int:
    """The batch size of a trial (the sweep nests each trial's flat config under "t")."""
    return int(trial.config["t"]["batch_size"])


class PerBatchSizeASHA(FIFOScheduler):
    """One ``AsyncHyperBandScheduler`` per batch size; records which trials it stopped."""

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
        self._metric, self._mode, self._time_attr = metric, mode, time_attr
        self._grace = grace_examples
        self._rf = reduction_factor
        self._max_t = dict(max_examples_by_batch)
        if not per_batch_size:
            # one shared ASHA state (the biased baseline, kept for comparison studies)
            self._max_t = {0: max(self._max_t.values())}
        self._per_batch = per_batch_size
        self._by_batch: dict[int, AsyncHyperBandScheduler] = {}
        self._batch_of: dict[str, int] = {}
        self.early_stopped: set[str] = set()

    @classmethod
    def for_study(cls, study: Study) -> "PerBatchSizeASHA":
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

    def _asha(self, batch_size: int) -> AsyncHyperBandScheduler:
        if batch_size not in self._by_batch:
            max_t = self._max_t[batch_size]
            self._by_batch[batch_size] = AsyncHyperBandScheduler(
                time_attr=self._time_attr,
                metric=self._metric,
                mode=self._mode,
                max_t=max_t,
                grace_period=min(self._grace, max_t),
                reduction_factor=self._rf,
            )
        return self._by_batch[batch_size]

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        b = trial_batch_size(trial) if self._per_batch else 0
        self._batch_of[trial.trial_id] = b
        self._asha(b).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        b = self._batch_of[trial.trial_id]
        action = self._asha(b).on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._asha(b)._max_t:
            # a STOP at the example cap is the end of the budget, not early stopping
            self.early_stopped.add(trial.trial_id)
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        b = self._batch_of.get(trial.trial_id)
        if b is None or trial.trial_id not in self._asha(b)._trial_info:
            return
        asha = self._asha(b)
        value = result.get(self._metric) if result else None
        if (trial.trial_id not in self.early_stopped and value is not None and math.isfinite(value)
                and target_reached(result, trial.config["t"])):
            # A trial that ended because it reached the target never reaches the later
            # rungs; without it there, the slow trials are only compared with each other
            # and bad learning rates run to the cap. It counts at every rung it skipped
            # with its final value, which it would only have improved on.
            for milestone, recorded in asha._brackets[0]._rungs:
                if milestone > result[self._time_attr] and trial.trial_id not in recorded:
                    recorded[trial.trial_id] = asha._metric_op * value
        asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        b = self._batch_of.get(trial.trial_id)
        if b is not None:
            self._asha(b)._trial_info.pop(trial.trial_id, None)

    def rung_summary(self) -> dict[int, list[tuple[float, int]]]:
        """Per batch size: (rung in examples, trials recorded there), smallest rung first."""
        return {
            b: [(m, len(rec)) for m, rec in reversed(s._brackets[0]._rungs)]
            for b, s in sorted(self._by_batch.items())
        }

    def debug_string(self) -> str:
        return "PerBatchSizeASHA " + " ".join(
            f"B={b}:" + ",".join(str(n) for _, n in rungs) for b, rungs in self.rung_summary().items()
        )

    def state(self) -> dict[str, Any]:
        """Everything needed to continue: the rung records of every batch size."""
        return {
            "by_batch": {b: copy.deepcopy(s.__dict__) for b, s in self._by_batch.items()},
            "batch_of": dict(self._batch_of),
            "early_stopped": set(self.early_stopped),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for b, d in state["by_batch"].items():
            self._asha(b).__dict__.update(d)
        self._batch_of.update(state["batch_of"])
        self.early_stopped |= state["early_stopped"]


def make_scheduler(study: Study) -> TrialScheduler:
    """The study's scheduler: ASHA per batch size (or shared), or FIFO for ``none``."""
    if study.early_stopping.scheduler == "none":
        return FIFOScheduler()
    return PerBatchSizeASHA.for_study(study)
