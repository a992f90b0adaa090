"""The rungs as plain data: asynchronous ``Rungs`` name the rung they stop a trial at;
synchronous ``SyncRungs`` decide a rung only once every live trial of the group is there,
decide the same whatever the arrival order, and continue mid-rung from their state."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from orchestrator.rungs import CONTINUE, PAUSE, STOP, Rungs, SyncRungs, keep_count


def test_async_rungs_name_the_rung_they_stop_at() -> None:
    r = Rungs.new(grace=10, max_t=100, reduction_factor=3)
    assert r.decide_at("a", 12, 1.0) is None
    assert r.decide_at("b", 11, 0.5) == 10.0  # below the cutoff of rung 10
    assert r.decide_at("a", 31, 2.0) is None  # first at rung 30
    assert r.decide_at("c", 35, 1.0) == 30.0  # past rung 30 when first seen: judged there
    assert r.decide("d", 95, 5.0) is False


@pytest.mark.parametrize(
    ("n", "rf", "kept"),
    [(1, 3, 1), (2, 3, 1), (3, 3, 1), (4, 3, 2), (7, 3, 3), (9, 3, 3), (10, 3, 4), (9, 2, 5), (8, 4, 2)],
)
def test_a_rung_keeps_the_best_ceil_n_over_rf(n: int, rf: float, kept: int) -> None:
    assert keep_count(n, rf) == kept == math.ceil(n / rf)


def curve(value: float, t: float) -> float:
    """A larger-is-better value that improves with t; a larger ``value`` is better throughout."""
    return value - 1.0 / math.sqrt(t)


MILESTONES = (10.0, 30.0, 90.0)


def play(
    order: list[str],
    values: dict[str, float],
    ends: dict[str, float] | None = None,
    rungs: SyncRungs | None = None,
    slots: int = 2,
) -> SyncRungs:
    """Run a group through ``SyncRungs`` like the scheduler does: ``slots`` trials at a time
    from ``order``, each reporting at t = 11, 12, ... and waiting at a rung when told. A
    trial in ``ends`` ends by itself at that time (target reached: credited). Checks, at
    every stop, that every live trial of the group had reached the rung."""
    ends = ends or {}
    r = rungs or SyncRungs.new(grace=10, max_t=100, reduction_factor=3, n_trials=len(order))
    t_of = {tid: 1.0 for tid in order}
    queue = [tid for tid in order if tid not in r.ended]
    promoted: list[str] = []
    running: list[str] = []

    def check(changes: dict[str, str], own: tuple[str, str] | None = None) -> None:
        stops = {t for t, v in changes.items() if v == STOP} | ({own[0]} if own and own[1] == STOP else set())
        live = [u for u in order if u not in r.ended or u in stops]  # live before this call
        for tid in stops:
            m = r.stopped[tid]
            assert all(t_of[u] >= m for u in live), (tid, m, t_of)
        promoted.extend(t for t, v in changes.items() if v == CONTINUE)

    while True:
        while len(running) < slots and (promoted or queue):
            running.append(promoted.pop(0) if promoted else queue.pop(0))
        if not running:
            break
        tid = running.pop(0)
        t = t_of[tid] = max(t_of[tid] + 1.0, 11.0 if t_of[tid] < 10 else t_of[tid] * 1.2)
        if tid in ends and t >= ends[tid]:
            check(r.end(tid, t, curve(values[tid], t), credit=True))
            continue
        if t >= r.max_t:
            check(r.end(tid, t, curve(values[tid], t), credit=False))
            continue
        verdict, changes = r.arrive(tid, t, curve(values[tid], t))
        check(changes, (tid, verdict))
        if verdict == CONTINUE:
            running.append(tid)
        elif verdict == PAUSE:
            assert r.waiting_at(tid) is not None
    assert r.live() == 0
    return r


def test_a_rung_waits_for_every_live_trial_then_keeps_the_best_third() -> None:
    values = {f"t{i}": float(i) for i in range(9)}
    r = SyncRungs.new(grace=10, max_t=100, reduction_factor=3, n_trials=9)
    for i in range(8):
        verdict, changes = r.arrive(f"t{i}", 11, curve(i, 11))
        assert (verdict, changes) == (PAUSE, {})  # 8 of 9 there: nothing is decided
        assert r.cutoffs[0] is None
    # the last one completes the rung: the best three (t6, t7, t8) go on, the rest stop
    verdict, changes = r.arrive("t8", 11, curve(8, 11))
    assert verdict == CONTINUE
    assert changes == {**{f"t{i}": STOP for i in range(6)}, "t6": CONTINUE, "t7": CONTINUE}
    assert r.stopped == {f"t{i}": 10.0 for i in range(6)}
    done = play(list(values), values, rungs=r)  # the rest of the run
    assert done.stopped == {**{f"t{i}": 10.0 for i in range(6)}, "t6": 30.0, "t7": 30.0}


def test_ended_trials_complete_a_rung_and_a_trial_at_the_target_keeps_its_slot() -> None:
    r = SyncRungs.new(grace=10, max_t=100, reduction_factor=3, n_trials=4)
    assert r.arrive("a", 11, -1.0)[0] == PAUSE
    assert r.arrive("b", 11, -2.0)[0] == PAUSE
    assert r.end("x", None, None, credit=False) == {}  # diverged before the rung: no longer live
    # "w" reached the target at t=5 with the best value: it counts at every rung, so the
    # rung (keep ceil(3/3) = 1) keeps w, and both waiting trials stop
    assert r.end("w", 5, 0.0, credit=True) == {"a": STOP, "b": STOP}
    assert r.stopped == {"a": 10.0, "b": 10.0}
    assert r.live() == 0


@pytest.mark.parametrize("seed", range(6))
def test_decisions_do_not_depend_on_the_order_or_the_concurrency(seed: int) -> None:
    rng = random.Random(seed)
    ids = [f"t{i}" for i in range(9)]
    values = {t: rng.uniform(0, 3) for t in ids}
    ends = {t: rng.choice([15.0, 50.0]) for t in rng.sample(ids, 2)}  # two reach the target
    reference = play(ids, values, ends).stopped
    assert reference  # something was stopped
    for slots, order in itertools.product((1, 2, 4), (ids[::-1], rng.sample(ids, 9))):
        assert play(order, values, ends, slots=slots).stopped == reference


def test_the_state_round_trip_continues_mid_rung() -> None:
    ids = [f"t{i}" for i in range(9)]
    values = {t: float(i % 5) + 0.1 * i for i, t in enumerate(ids)}
    reference = play(ids, values).stopped
    r = SyncRungs.new(grace=10, max_t=100, reduction_factor=3, n_trials=9)
    for tid in ids[:5]:  # five wait at rung 10
        assert r.arrive(tid, 11, curve(values[tid], 11))[0] == PAUSE
    restored = SyncRungs.from_state(json.loads(json.dumps(r.state())))
    assert restored == r
    assert [restored.waiting_at(t) for t in ids] == [0] * 5 + [None] * 4
    assert play(ids, values, rungs=restored).stopped == reference


def test_a_latecomer_at_a_decided_rung_is_judged_by_its_cutoff() -> None:
    r = SyncRungs.new(grace=10, max_t=100, reduction_factor=3, n_trials=2)
    r.arrive("a", 11, 1.0)
    assert r.arrive("b", 11, 2.0) == (CONTINUE, {"a": STOP})
    # a trial the group did not count (e.g. a study edited under a resumed run)
    assert r.arrive("c", 12, 1.5) == (STOP, {})
    assert r.stopped["c"] == 10.0
    assert r.arrive("d", 12, 3.0)[0] == CONTINUE
    assert r.milestones == list(MILESTONES)
