"""The schedulers on their own: rungs per batch size, target back-fill, state round trip;
the synchronous one through a fake Tune (pause, stop while paused, promote first, resume
mid-rung); the record of the rung each stopped trial stopped at, as the report and the
progress display read it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from analysis.early_stopping import early_stopping_section
from orchestrator.grid import start_order
from orchestrator.grid import trial_config as grid_trial_config
from orchestrator.progress import ProgressCallback, render
from orchestrator.scheduler import PerBatchSizeASHA, PerBatchSizeSHA, make_scheduler, scheduler_kind
from orchestrator.study import load_study
from orchestrator.sweep import SchedulerState
from orchestrator.tune_config import CONFIG_KEY
from support import trial as trial_config


def trial(tid: str, batch_size: int, train_fraction: float = 1.0) -> Trial:
    cfg = trial_config(
        {
            "batch_size": batch_size,
            "train_fraction": train_fraction,
            "lr": 0.1,
            "max_steps": 100,
            "target_metric": "val_accuracy",
            "target_mode": "max",
            "target_value": 0.9,
        }
    )
    return Trial("fn", config={CONFIG_KEY: cfg.to_dict()}, trial_id=tid, stub=True)


def scheduler() -> PerBatchSizeASHA:
    return PerBatchSizeASHA(
        metric="val_loss",
        mode="min",
        grace_examples=100,
        reduction_factor=3,
        max_examples_by_batch={16: 2700, 1024: 2700},
    )


def result(examples: int, val_loss: float, acc: float = 0.5) -> dict:
    return {"examples_seen": examples, "val_loss": val_loss, "val_accuracy": acc}


def test_batch_sizes_are_ranked_separately() -> None:
    s = scheduler()
    small, big = trial("s0", 16), trial("b0", 1024)
    s.on_trial_add(None, small)
    s.on_trial_add(None, big)
    assert s.on_trial_result(None, small, result(100, 0.1)) == TrialScheduler.CONTINUE
    # far worse than every small-batch trial at the same rung, but alone at its batch size
    assert s.on_trial_result(None, big, result(100, 5.0)) == TrialScheduler.CONTINUE
    worse_small = trial("s9", 16)
    s.on_trial_add(None, worse_small)
    assert s.on_trial_result(None, worse_small, result(100, 1.0)) == TrialScheduler.STOP
    assert s.early_stopped == {"s9"}


def test_training_fractions_are_ranked_separately_and_survive_a_state_round_trip() -> None:
    s = scheduler()
    full, small = trial("f0", 16), trial("q0", 16, train_fraction=0.25)
    for t in (full, small):
        s.on_trial_add(None, t)
    assert s.on_trial_result(None, full, result(100, 0.1)) == TrialScheduler.CONTINUE
    # far worse than the full-data trial at the same rung, but alone on its subset
    assert s.on_trial_result(None, small, result(100, 5.0)) == TrialScheduler.CONTINUE
    restored = scheduler()
    restored.load_state(json.loads(json.dumps(s.state())))
    worse = trial("q9", 16, train_fraction=0.25)
    restored.on_trial_add(None, worse)
    assert restored.on_trial_result(None, worse, result(100, 9.0)) == TrialScheduler.STOP  # vs q0, not f0
    rec = {(b["batch_size"], b["train_fraction"]): b for b in restored.record()["batches"]}
    assert rec[(16, 0.25)]["rungs"][0]["stopped"] == 1 and rec[(16, 1.0)]["rungs"][0]["stopped"] == 0


def test_only_a_trial_at_the_target_counts_at_rungs_it_skipped() -> None:
    s = scheduler()
    winner, loser, stopped = trial("w", 16), trial("l", 16), trial("x", 16)
    for t in (winner, loser, stopped):
        s.on_trial_add(None, t)
    s.on_trial_result(None, stopped, result(100, 0.5))
    s.early_stopped.add("x")  # as if the scheduler had stopped it
    s.on_trial_complete(None, stopped, result(100, 0.5))
    s.on_trial_complete(None, loser, result(50, 0.9, acc=0.6))  # ended below the target
    s.on_trial_complete(None, winner, result(50, 0.2, acc=0.95))  # reached it before rung 100
    r = s._rungs[(16, 1.0)]
    rungs = dict(zip(r.milestones, r.records))
    assert {m: sorted(r) for m, r in rungs.items()} == {100: ["w", "x"], 300: ["w"], 900: ["w"], 2700: ["w"]}
    assert rungs[300]["w"] == -0.2


def test_state_round_trip_keeps_the_decisions() -> None:
    """A scheduler restored from ``state()`` stops and continues exactly where the rung
    records say: four trials at rung 100 with val_loss 0.1..0.4 put the cutoff at the 2/3
    quantile (0.2); a late trial at 0.35 is stopped, one at 0.15 continues."""
    a = scheduler()
    for i in range(4):
        t = trial(f"t{i}", 16)
        a.on_trial_add(None, t)
        a.on_trial_result(None, t, result(100, 0.1 * (i + 1)))
    assert a.early_stopped == {"t1", "t2", "t3"}  # each worse than the cutoff of those before it
    b = scheduler()
    b.load_state(a.state())
    assert b.early_stopped == {"t1", "t2", "t3"}
    late, good = trial("late", 16), trial("good", 16)
    for t in (late, good):
        b.on_trial_add(None, t)
    assert b.on_trial_result(None, late, result(100, 0.35)) == TrialScheduler.STOP
    assert b.on_trial_result(None, good, result(100, 0.15)) == TrialScheduler.CONTINUE
    assert b.early_stopped == {"t1", "t2", "t3", "late"}
    # an empty scheduler would have let the late trial through: the state carried the rung
    fresh = scheduler()
    fresh.on_trial_add(None, late)
    assert fresh.on_trial_result(None, late, result(100, 0.35)) == TrialScheduler.CONTINUE


# --------------------------------------------------------------------------- stopped at which rung


def test_asha_records_the_rung_it_stopped_a_trial_at() -> None:
    s = scheduler()
    for tid, ex, loss in [("a", 120, 0.1), ("b", 150, 0.5), ("a", 310, 0.05), ("c", 330, 0.4)]:
        t = s._trials.get(tid) or trial(tid, 16)
        if tid not in s._trials:
            s.on_trial_add(None, t)
        s.on_trial_result(None, t, result(ex, loss))
    assert s.stopped_at == {"b": 100.0, "c": 300.0}
    assert s.early_stopped == {"b", "c"}
    rec = s.record()
    b16 = next(b for b in rec["batches"] if b["batch_size"] == 16)
    assert [(r["examples"], r["recorded"], r["stopped"]) for r in b16["rungs"]] == [
        (100, 2, 1),
        (300, 2, 1),
        (900, 0, 0),
        (2700, 0, 0),
    ]
    assert rec["stopped_at"] == {"b": 100.0, "c": 300.0} and rec["scheduler"] == "asha"


# --------------------------------------------------------------------------- synchronous, through a fake Tune


class FakeTune:
    """What the scheduler sees of Tune's controller: its trials, and ``stop_trial``, which
    calls back into the scheduler as Tune does (``on_trial_remove`` for a paused trial)."""

    def __init__(self, sched: PerBatchSizeSHA, trials: list[Trial]) -> None:
        self.sched, self.trials = sched, trials

    def get_trials(self) -> list[Trial]:
        return self.trials

    def stop_trial(self, t: Trial) -> None:
        was = t.status
        t.status = Trial.TERMINATED
        if was in (Trial.PAUSED, Trial.PENDING):
            self.sched.on_trial_remove(self, t)


def sha(n_per_batch: int = 3) -> PerBatchSizeSHA:
    return PerBatchSizeSHA(
        metric="val_loss",
        mode="min",
        grace_examples=100,
        reduction_factor=3,
        max_examples_by_batch={16: 2700, 1024: 2700},
        trials_by_stratum={(16, 1.0): n_per_batch, (1024, 1.0): n_per_batch},
    )


def test_sha_pauses_at_a_rung_until_its_batch_size_is_there() -> None:
    s = sha()
    small = [trial(f"s{i}", 16) for i in range(3)]
    big = [trial(f"b{i}", 1024) for i in range(3)]
    tune = FakeTune(s, small + big)
    for t in small + big:
        s.on_trial_add(tune, t)
    for t in small[:2]:
        t.status = Trial.RUNNING
        assert s.on_trial_result(tune, t, result(120, 0.5 if t.trial_id == "s0" else 0.2)) == TrialScheduler.PAUSE
        t.status = Trial.PAUSED
    # the other batch size's rung is its own: a bad large-batch trial is not compared with them
    big[0].status = Trial.RUNNING
    assert s.on_trial_result(tune, big[0], result(120, 9.0)) == TrialScheduler.PAUSE
    big[0].status = Trial.PAUSED
    # waiting trials are never handed back to Tune; the pending ones are
    assert s.choose_trial_to_run(tune) in (small[2], big[1], big[2])
    assert not s.early_stopped
    # the last small trial completes rung 100: ceil(3/3) = 1 goes on (s1, the best), s0 and s2 stop
    small[2].status = Trial.RUNNING
    assert s.on_trial_result(tune, small[2], result(110, 0.9)) == TrialScheduler.STOP
    assert s.stopped_at == {"s0": 100.0, "s2": 100.0}
    assert small[0].status == Trial.TERMINATED  # stopped while paused, through Tune
    # the promoted, paused trial comes before any pending one
    assert s.choose_trial_to_run(tune) is small[1]
    assert s._rungs[(1024, 1.0)].cutoffs[0] is None  # still waiting for b1, b2


def test_sha_resumes_mid_rung_with_its_waiting_trials_paused() -> None:
    s = sha()
    small = [trial(f"s{i}", 16) for i in range(3)]
    tune = FakeTune(s, small)
    for t in small:
        s.on_trial_add(tune, t)
    for t, loss in zip(small[:2], (0.5, 0.2)):
        t.status = Trial.RUNNING
        assert s.on_trial_result(tune, t, result(120, loss)) == TrialScheduler.PAUSE
        t.status = Trial.PAUSED
    state = json.loads(json.dumps(s.state()))

    # a resumed sweep: Tune re-queues every unfinished trial as PENDING, in its own order
    r = sha()
    r.load_state(state)
    again = [trial(f"s{i}", 16) for i in (2, 1, 0)]
    tune2 = FakeTune(r, again)
    for t in again:
        r.on_trial_add(tune2, t)
    assert [t.status for t in again] == [Trial.PENDING, Trial.PAUSED, Trial.PAUSED]  # s0, s1 wait at rung 100
    assert r.choose_trial_to_run(tune2) is again[0]
    again[0].status = Trial.RUNNING
    assert r.on_trial_result(tune2, again[0], result(110, 0.9)) == TrialScheduler.STOP
    assert r.stopped_at == {"s0": 100.0, "s2": 100.0}  # the same decision as without the interruption
    assert r.choose_trial_to_run(tune2) is again[1]


def test_sha_a_trial_at_the_target_is_not_paused_and_counts_at_later_rungs() -> None:
    s = sha(n_per_batch=2)
    a, w = trial("a", 16), trial("w", 16)
    tune = FakeTune(s, [a, w])
    for t in (a, w):
        s.on_trial_add(tune, t)
    a.status = w.status = Trial.RUNNING
    assert s.on_trial_result(tune, a, result(120, 0.5)) == TrialScheduler.PAUSE
    a.status = Trial.PAUSED
    at_target = result(130, 0.2, acc=0.95)
    assert s.on_trial_result(tune, w, at_target) == TrialScheduler.CONTINUE  # it ends by itself
    s.on_trial_complete(tune, w, at_target)
    # rung 100 keeps 1 of 2: w (credited), so the waiting trial stops
    assert s.stopped_at == {"a": 100.0} and a.status == Trial.TERMINATED


def test_the_sweep_writes_the_record_the_report_reads(tmp_path: Path) -> None:
    """A trial stopped early is recorded with its rung: the scheduler's record, written by the
    sweep's SchedulerState, is what analysis.early_stopping counts per batch size."""
    s = sha()
    small = [trial(f"s{i}", 16) for i in range(3)]
    tune = FakeTune(s, small)
    for t in small:
        s.on_trial_add(tune, t)
    for t, loss in zip(small, (0.5, 0.2, 0.9)):
        t.status = Trial.RUNNING
        s.on_trial_result(tune, t, result(120, loss))
    SchedulerState(s, tmp_path).on_experiment_end([])
    record = json.loads((tmp_path / "tune" / "early_stopping.json").read_text())
    assert record["stopped_at"] == {"s0": 100.0, "s2": 100.0} and record["scheduler"] == "sha"
    trials = pd.DataFrame(
        {
            "trial_id": ["s0", "s1", "s2"],
            "batch_size": [16] * 3,
            "status": ["early_stopped", "completed", "early_stopped"],
            "examples_seen": [120, 900, 120],
        }
    )
    study = {
        "budget": {"max_examples": 2720},
        "early_stopping": {"scheduler": "sha", "grace_examples": 100, "reduction_factor": 3},
    }
    section = early_stopping_section(tmp_path, trials, study)
    assert section is not None
    row = section.table.iloc[0]
    assert row.stopped_at == {100.0: 2} and row.saved_at_most == 2 * (2720 - 120)  # 170 steps of 16
    assert "2 of 3 stopped (2 at 100)" in section.items[0]


def test_progress_counts_stops_per_rung_and_examples_saved(tmp_path: Path) -> None:
    study = load_study("fashion-mnist", budget="smoke")
    point = start_order(study)[0]
    tr = Trial("fn", config={CONFIG_KEY: grid_trial_config(study, point).to_dict()}, trial_id="x", stub=True)
    progress = ProgressCallback(tmp_path, study, {"x"}, None, stopped_at={"x": 1000.0})
    progress.on_trial_result(0, [tr], tr, {"examples_seen": 1104, "val_accuracy": 0.5})
    progress.on_trial_complete(0, [tr], tr)
    tr.status = Trial.TERMINATED
    snap = progress.snapshot([tr], done=True)
    row = next(b for b in snap["batches"] if b["batch_size"] == point.batch_size)
    cap = study.budget.examples_cap(point.batch_size)
    assert row["stopped_at"] == {"1000.0": 1} and row["saved_examples"] == cap - 1104
    assert snap["early_stopping"]["stopped"] == 1
    text = render(snap)
    assert "1k:1" in text and f"early stopping ({study.early_stopping.scheduler}): 1 trials stopped" in text


def test_sha_decides_with_the_trials_there_are_when_nothing_else_can_run() -> None:
    s = sha()  # counts 3 trials per batch size
    a, b = trial("s0", 16), trial("s1", 16)  # the third never comes
    tune = FakeTune(s, [a, b])
    for t, loss in ((a, 0.5), (b, 0.2)):
        s.on_trial_add(tune, t)
        t.status = Trial.RUNNING
        assert s.on_trial_result(tune, t, result(120, loss)) == TrialScheduler.PAUSE
        t.status = Trial.PAUSED
    # nothing runs or is pending, both wait: rung 100 is decided with the two there are
    assert s.choose_trial_to_run(tune) is b
    assert s.stopped_at == {"s0": 100.0} and a.status == Trial.TERMINATED


def test_the_adaptive_search_gets_asynchronous_rungs() -> None:
    sha_study = ['early_stopping.scheduler="sha"']
    study = load_study("fashion-mnist", overrides=[*sha_study, "search.strategy=adaptive"])
    assert study.early_stopping.scheduler == "sha" and scheduler_kind(study) == "asha"
    assert isinstance(make_scheduler(study), PerBatchSizeASHA)
    assert isinstance(make_scheduler(load_study("fashion-mnist", overrides=sha_study)), PerBatchSizeSHA)
