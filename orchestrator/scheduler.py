"""Successive halving that compares trials only within one batch size, on the
examples-seen axis: asynchronous (``asha``) or synchronous (``sha``).

Plain ASHA ranks every trial at a rung against all others; at equal examples seen a large
batch has taken fewer steps and looks worse, so plain ASHA would stop every large-batch
trial early -- exactly the bias a batch-size study must not have. These schedulers keep
one independent set of rungs (``orchestrator.rungs``) per batch size -- per (batch size,
training fraction), a ``Stratum``, when the study sweeps ``search.train_fraction``.

``PerBatchSizeASHA`` decides as results come: a trial reaching a rung is compared with
whatever was recorded there before it. ``PerBatchSizeSHA`` waits: a trial reaching a rung
is paused (its slot goes to other work) until every live trial of its batch size has
reached that rung, and then the rung keeps the best 1/reduction_factor; its decisions do
not depend on which trials happened to run first.

Both start trials in ``grid.start_order`` (``choose_trial_to_run``) and record every trial
they stop with the rung it was stopped at (``stopped_at``, written by the sweep to
``RUN_DIR/tune/early_stopping.json``). Tune does not restore a scheduler's state when a
sweep resumes, so the whole state is a plain dict (``state()`` / ``load_state()``) that the
sweep's ``SchedulerState`` callback hands to Tune's experiment checkpoints, which do
restore callbacks.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from orchestrator import rungs as sync
from orchestrator.grid import start_order
from orchestrator.rungs import Rungs, SyncRungs
from orchestrator.strata import SHARED, Stratum, dump_groups, load_groups, stratum_name, stratum_of
from orchestrator.study import Study
from orchestrator.tune_config import config_of

RECORD_VERSION = 2

_TUNE = {sync.CONTINUE: TrialScheduler.CONTINUE, sync.PAUSE: TrialScheduler.PAUSE, sync.STOP: TrialScheduler.STOP}


class _PerBatchSize(FIFOScheduler):
    """What both schedulers share: groups, the start order, the record of stopped trials."""

    kind = ""
    _rung_class: type[Rungs] | type[SyncRungs] = Rungs

    def __init__(
        self,
        metric: str,
        mode: str,
        grace_examples: int,
        reduction_factor: float,
        max_examples_by_batch: dict[int, int],
        per_batch_size: bool = True,
        fractions: list[float] | None = None,
        time_attr: str = "examples_seen",
        order: list[tuple[Stratum, float, int]] | None = None,
    ) -> None:
        super().__init__()
        self._rank_metric, self._mode, self._time_attr = metric, mode, time_attr
        self._sign = 1.0 if mode == "max" else -1.0
        self._grace, self._rf = grace_examples, reduction_factor
        self._caps = dict(max_examples_by_batch)
        self._per_batch = per_batch_size
        self._fractions = sorted(fractions or [1.0])
        # (stratum, lr, seed) -> position in the start order
        self._order = {key: i for i, key in enumerate(order or [])}
        self._stratum_of: dict[str, Stratum] = {}
        self._trials: dict[str, Trial] = {}
        self._pos: dict[str, int] = {}  # trial id -> position in the start order
        self.early_stopped: set[str] = set()
        """Trials this scheduler stopped early (shared with the sink and the progress display)."""
        self.stopped_at: dict[str, float] = {}
        """Trial id -> the rung (examples seen) it was stopped at."""
        self._rungs: dict[Stratum, Any] = {}

    @classmethod
    def _study_kwargs(cls, study: Study) -> dict[str, Any]:
        es = study.early_stopping
        return dict(
            metric=es.metric,
            mode=es.mode,
            grace_examples=es.grace_examples,
            reduction_factor=es.reduction_factor,
            max_examples_by_batch={b: study.budget.examples_cap(b) for b in study.search.batch_sizes},
            per_batch_size=es.per_batch_size,
            fractions=study.search.train_fraction,
            order=[(p.stratum, p.lr, p.seed) for p in start_order(study)],
        )

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metric and mode come from the study, not from TuneConfig

    def _value(self, result: dict[str, Any]) -> float | None:
        v = result.get(self._rank_metric)
        return None if v is None or self._time_attr not in result else self._sign * float(v)

    def _max_t(self, group: Stratum) -> int:
        """The budget end of a group, in examples: its batch size's cap (the largest, shared)."""
        return max(self._caps.values()) if group == SHARED else self._caps[group[0]]

    def _key(self, trial: Trial) -> Stratum:
        """The group of a trial from its config: its (batch size, fraction), or SHARED."""
        return stratum_of(config_of(trial)) if self._per_batch else SHARED

    def _group_of(self, trial_id: str) -> Stratum | None:
        g = self._stratum_of.get(trial_id)
        return g if g is None or self._per_batch else SHARED

    def _position(self, trial: Trial) -> int:
        if trial.trial_id not in self._pos:
            c = config_of(trial)
            self._pos[trial.trial_id] = self._order.get((stratum_of(c), c.lr, c.seed), len(self._order))
        return self._pos[trial.trial_id]

    def _stopped(self, trial_id: str, rung: float) -> None:
        self.early_stopped.add(trial_id)
        self.stopped_at[trial_id] = float(rung)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._stratum_of[trial.trial_id] = stratum_of(config_of(trial))
        self._trials[trial.trial_id] = trial

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        """The pending trial first in the start order (Tune re-queues restored trials by
        their last result time, so its own list is not the start order after a resume)."""
        pending = [t for t in tune_controller.get_trials() if t.status == Trial.PENDING]
        if pending:
            return min(pending, key=self._position)
        return next((t for t in tune_controller.get_trials() if t.status == Trial.PAUSED), None)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        pass  # what a trial recorded at its rungs stays: others were compared with it

    def _groups(self) -> dict[Stratum, Rungs | SyncRungs]:
        return dict(self._rungs)

    def state(self) -> dict[str, Any]:
        """Everything needed to continue, mid-rung included: each (batch size, fraction)'s
        rung records (with SHA: decided cutoffs, ended and stopped trials)."""
        return {"rungs": dump_groups(self._rungs), **self._common_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self._rungs.update({g: self._rung_class.from_state(r) for g, r in load_groups(state["rungs"])})
        self._load_common(state)

    def rung_summary(self) -> dict[Stratum, list[tuple[float, int]]]:
        """Per group ((batch size, fraction), or SHARED): (rung in examples, trials recorded there)."""
        return {g: r.counts() for g, r in sorted(self._groups().items())}

    def debug_string(self) -> str:
        groups = self.rung_summary().items()
        return f"{type(self).__name__} " + " ".join(
            f"{stratum_name(g)}:" + ",".join(str(n) for _, n in rungs) for g, rungs in groups
        )

    def rung_positions(self) -> dict[int, list[float]]:
        """Per batch size of the study: the rungs its trials are compared at, in examples."""
        out = {}
        for b in self._caps:
            group = (b, 1.0) if self._per_batch else SHARED
            out[b] = Rungs.new(self._grace, self._max_t(group), self._rf).milestones
        return out

    def record(self) -> dict[str, Any]:
        """What early stopping did, for ``RUN_DIR/tune/early_stopping.json``: the settings,
        per (batch size, fraction) its rungs with the trials recorded and stopped at each,
        and every trial stopped early with the rung it stopped at."""
        groups = self._groups()
        batches = []
        for b, milestones in sorted(self.rung_positions().items()):
            for f in sorted({*self._fractions, *(f for _, f in self._stratum_of.values())}):
                stratum = (b, f)
                g = groups.get(stratum if self._per_batch else SHARED)
                here = [g.records[k] if g is not None and k < len(g.records) else {} for k in range(len(milestones))]
                mine = {t for t, s in self._stratum_of.items() if s == stratum}
                rungs = [
                    {
                        "examples": m,
                        "recorded": len(mine & set(at)),
                        "stopped": sum(self.stopped_at.get(t) == m for t in mine),
                    }
                    for m, at in zip(milestones, here, strict=True)
                ]
                batches.append({"batch_size": b, "train_fraction": f, "max_examples": self._caps[b], "rungs": rungs})
        return {
            "version": RECORD_VERSION,
            "scheduler": self.kind,
            "per_batch_size": self._per_batch,
            "metric": self._rank_metric,
            "mode": self._mode,
            "grace_examples": self._grace,
            "reduction_factor": self._rf,
            "batches": batches,
            "stopped_at": dict(sorted(self.stopped_at.items())),
        }

    def _common_state(self) -> dict[str, Any]:
        return {
            "stratum_of": {t: list(g) for t, g in self._stratum_of.items()},
            "early_stopped": sorted(self.early_stopped),
            "stopped_at": dict(self.stopped_at),
        }

    def _load_common(self, state: dict[str, Any]) -> None:
        if "batch_of" in state:  # a run from before training fractions: all of the data
            self._stratum_of.update({t: (int(b), 1.0) for t, b in state["batch_of"].items()})
        else:
            self._stratum_of.update({t: (int(g[0]), float(g[1])) for t, g in state["stratum_of"].items()})
        self.early_stopped |= set(state["early_stopped"])
        self.stopped_at.update(state["stopped_at"])


class PerBatchSizeASHA(_PerBatchSize):
    """One set of asynchronous rungs per batch size; records which trials it stopped early."""

    kind = "asha"

    @classmethod
    def for_study(cls, study: Study) -> PerBatchSizeASHA:
        return cls(**cls._study_kwargs(study))

    def _group(self, group: Stratum) -> Rungs:
        if group not in self._rungs:
            self._rungs[group] = Rungs.new(self._grace, self._max_t(group), self._rf)
        return self._rungs[group]

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        value = self._value(result)
        if value is None:
            return TrialScheduler.CONTINUE  # e.g. a diverged trial's last, unevaluated row
        rungs = self._group(self._key(trial))
        t = float(result[self._time_attr])
        if t >= rungs.max_t:
            return TrialScheduler.STOP  # the end of the budget, not early stopping
        rung = rungs.decide_at(trial.trial_id, t, value)
        if rung is not None:
            self._stopped(trial.trial_id, rung)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        group = self._group_of(trial.trial_id)
        value = self._value(result or {})
        if group is None or value is None:
            return
        rungs = self._group(group)
        t = float(result[self._time_attr])
        rungs.decide(trial.trial_id, t, value)
        # A trial that ended because it reached the target never reaches the later rungs;
        # without it there, slow trials are only compared with each other and bad
        # learning rates run to the cap.
        if trial.trial_id not in self.early_stopped and math.isfinite(value) and config_of(trial).ends_at(result):
            rungs.credit(trial.trial_id, t, value)


class PerBatchSizeSHA(_PerBatchSize):
    """Synchronous successive halving per batch size (``orchestrator.rungs.SyncRungs``).

    A trial reaching a rung is paused (Tune saves it and frees its slot; the trainable
    checkpoints at the rungs, ``rung_positions``) until every live trial of its batch size
    is there; the rung then promotes the best 1/reduction_factor, which this scheduler hands
    back to Tune first (``choose_trial_to_run``), and stops the rest.
    """

    kind = "sha"
    _rung_class = SyncRungs
    _supports_buffered_results = False  # a decision must follow the result it is about

    def __init__(self, *args: Any, trials_by_stratum: dict[Stratum, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        n = dict(trials_by_stratum)
        self._n_trials = n if self._per_batch else {SHARED: sum(n.values())}

    @classmethod
    def for_study(cls, study: Study) -> PerBatchSizeSHA:
        n = Counter(p.stratum for p in start_order(study))
        return cls(**cls._study_kwargs(study), trials_by_stratum=dict(n))

    def _group(self, group: Stratum) -> SyncRungs:
        if group not in self._rungs:
            self._rungs[group] = SyncRungs.new(self._grace, self._max_t(group), self._rf, self._n_trials[group])
        return self._rungs[group]

    def _rungs_of(self, trial_id: str) -> SyncRungs | None:
        group = self._group_of(trial_id)
        return None if group is None else self._group(group)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        rungs = self._rungs_of(trial.trial_id)
        # A resumed sweep re-queues every unfinished trial as PENDING; one that waits at an
        # undecided rung goes back to PAUSED (Tune files it by the status it has after this
        # hook), so it is not restarted only to be paused again.
        if rungs is not None and trial.status == Trial.PENDING and rungs.waiting_at(trial.trial_id) is not None:
            trial.set_status(Trial.PAUSED)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        """A paused trial its rung has promoted, else the pending trial first in the start
        order; never a trial waiting at an undecided rung."""
        chosen = self._choose(tune_controller)
        trials = tune_controller.get_trials()
        if chosen is None and not any(t.status in (Trial.RUNNING, Trial.PENDING) for t in trials):
            # Nothing runs and every trial left waits at a rung: the group counted trials
            # that never came (a study whose grid changed under a resumed run). Decide with
            # the trials there are rather than wait forever.
            known = Counter(self._group_of(t) for t in self._stratum_of)
            for g, rungs in self._rungs.items():
                self._apply(tune_controller, rungs, rungs.shrink(known[g]))
            chosen = self._choose(tune_controller)
        return chosen

    def _choose(self, tune_controller: Any) -> Trial | None:
        best: tuple[int, int] | None = None
        chosen = None
        for t in tune_controller.get_trials():
            rungs = self._rungs_of(t.trial_id)
            if t.status not in (Trial.PENDING, Trial.PAUSED) or (rungs and not rungs.runnable(t.trial_id)):
                continue
            key = (0 if t.status == Trial.PAUSED else 1, self._position(t))
            if best is None or key < best:
                best, chosen = key, t
        return chosen

    def _apply(self, tune_controller: Any, group: SyncRungs, changes: dict[str, str]) -> None:
        """Act on the verdicts a rung decision gave trials other than the current one."""
        for trial_id, verdict in changes.items():
            if verdict != sync.STOP:
                continue  # promoted: choose_trial_to_run hands it back to Tune
            self._stopped(trial_id, group.stopped[trial_id])
            trial = self._trials.get(trial_id)
            if trial is not None and tune_controller is not None and trial.status != Trial.TERMINATED:
                tune_controller.stop_trial(trial)  # paused (or saving on its way there)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        value = self._value(result)
        if value is None:
            return TrialScheduler.CONTINUE  # e.g. a diverged trial's last, unevaluated row
        group = self._group(self._key(trial))
        t = float(result[self._time_attr])
        if t >= group.max_t or config_of(trial).ends_at(result):
            # the end of the budget or the target: the trial ends here (on_trial_complete)
            return TrialScheduler.STOP if t >= group.max_t else TrialScheduler.CONTINUE
        verdict, changes = group.arrive(trial.trial_id, t, value)
        if verdict == sync.STOP:
            self._stopped(trial.trial_id, group.stopped[trial.trial_id])
        self._apply(tune_controller, group, changes)
        return _TUNE[verdict]

    def _end(self, tune_controller: Any, trial: Trial, result: dict[str, Any] | None) -> None:
        group = self._rungs_of(trial.trial_id)
        if group is None or trial.trial_id in group.ended:
            return
        result = result or {}
        value = self._value(result)
        t = float(result[self._time_attr]) if value is not None else None
        credit = value is not None and math.isfinite(value) and config_of(trial).ends_at(result)
        self._apply(tune_controller, group, group.end(trial.trial_id, t, value, credit))

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        self._end(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._end(tune_controller, trial, None)


EarlyStoppingScheduler = PerBatchSizeASHA | PerBatchSizeSHA


def scheduler_kind(study: Study) -> str:
    """The scheduler a study runs with: its ``early_stopping.scheduler``, except that the
    adaptive LR search gets ``asha`` for ``sha`` (a synchronous rung waits for every trial
    of its batch size, and the adaptive search decides which trials exist from results)."""
    kind = study.early_stopping.scheduler
    return "asha" if kind == "sha" and study.search.strategy != "grid" else kind


def make_scheduler(study: Study) -> TrialScheduler:
    """The study's scheduler: asynchronous or synchronous successive halving per batch size
    (or shared), or FIFO for ``none``."""
    kind = scheduler_kind(study)
    if kind == "none":
        return FIFOScheduler()
    return PerBatchSizeSHA.for_study(study) if kind == "sha" else PerBatchSizeASHA.for_study(study)
