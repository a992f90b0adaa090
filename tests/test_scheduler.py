"""PerBatchSizeASHA on its own: rungs per batch size, target back-fill, state round trip."""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from orchestrator.scheduler import PerBatchSizeASHA
from orchestrator.tune_config import CONFIG_KEY
from support import trial as trial_config


def trial(tid: str, batch_size: int) -> Trial:
    cfg = trial_config({"batch_size": batch_size, "lr": 0.1, "max_steps": 100, "target_metric": "val_accuracy",
                        "target_mode": "max", "target_value": 0.9})
    return Trial("fn", config={CONFIG_KEY: cfg.to_dict()}, trial_id=tid, stub=True)


def scheduler() -> PerBatchSizeASHA:
    return PerBatchSizeASHA(metric="val_loss", mode="min", grace_examples=100, reduction_factor=3,
                            max_examples_by_batch={16: 2700, 1024: 2700})


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
    r = s._rungs[16]
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
