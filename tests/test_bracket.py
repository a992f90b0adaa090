"""The adaptive search's bracketing and transfer logic on synthetic objectives (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.bracket import DIVERGED, REACHED, Bracket, Key, predict_log_lr, start_bracket


def run(br: Bracket, f, parallel: bool = True) -> list[int]:
    """Drive ``br`` to the end on objective ``f`` (index -> Key); the indices run, in order."""
    ran = []
    for i in sorted(br.pending):  # results already on their way
        br.complete(i, f(i))
        ran.append(i)
    while not br.done():
        props = br.proposals()
        assert props, "not done but nothing to propose and nothing pending"
        batch = props if parallel else props[:1]
        for i in batch:
            br.pending.add(i)
        for i in batch:
            br.complete(i, f(i))
            ran.append(i)
    return ran


def bowl(opt: float, cap: int | None = None):
    def f(i: int) -> Key:
        return DIVERGED if cap is not None and i >= cap else (REACHED, (i - opt) ** 2)

    return f


@pytest.mark.parametrize("n", [5, 9, 19, 29])
@pytest.mark.parametrize("parallel", [True, False])
def test_unimodal_response_is_always_bracketed_at_the_argmin(n: int, parallel: bool) -> None:
    rng = np.random.default_rng(n)
    for opt in np.linspace(-0.4, n - 0.6, 37):
        for centre in range(n):
            for width in (1, 2, max(1, n // 4)):
                br = Bracket(n=n, centre=centre, width=width)
                ran = run(br, bowl(opt + rng.uniform(-0.01, 0.01)), parallel)
                k = br.best()
                want = int(np.clip(round(opt), 0, n - 1))
                assert abs(k - opt) <= abs(want - opt) + 1e-9, (n, opt, centre, width)
                assert br.bracketed()
                # the analysis's parabola needs both neighbours
                assert k == 0 or k - 1 in br.values
                assert k == n - 1 or k + 1 in br.values
                assert len(ran) == len(set(ran))


def test_optimum_at_the_grid_edge_extends_the_search() -> None:
    br = Bracket(n=19, centre=9, width=2)
    ran = run(br, bowl(-3.0))
    assert br.best() == 0 and 0 in ran and 1 in br.values
    assert len(ran) < 19
    br = Bracket(n=19, centre=3, width=1)
    run(br, bowl(30.0))
    assert br.best() == 18


def test_diverged_lrs_cap_the_search() -> None:
    # the optimum of the smooth part is past the stability limit: the best is just below it
    br = Bracket(n=19, centre=10, width=2)
    ran = run(br, bowl(16.0, cap=12))
    assert br.best() == 11 and br.cap == 12
    assert max(ran) == 12  # one diverged trial at most bounds it; nothing above is tried
    br = Bracket(n=19, centre=14, width=3)
    ran = run(br, bowl(5.0, cap=8))
    assert br.best() == 5 and all(i <= 17 for i in ran)
    assert not any(i > br.cap for i in ran[3:])  # after the first round nothing above the cap


def test_every_lr_diverged_ends_at_the_bottom_of_the_grid() -> None:
    br = Bracket(n=9, centre=4, width=2)
    run(br, lambda i: DIVERGED)
    assert br.best() == 0 and br.done()


def test_state_round_trip_gives_the_same_proposals() -> None:
    br = Bracket(n=19, centre=6, width=3)
    f = bowl(12.3)
    for i in br.proposals():
        br.pending.add(i)
    br.complete(3, f(3))
    copy = Bracket.from_state(br.state())
    assert copy.proposals() == br.proposals() and copy.pending == br.pending
    assert run(copy, f) == run(br, f)


@pytest.mark.parametrize("exponent", [1.0, 0.5])
def test_transfer_follows_a_known_power_rule(exponent: float) -> None:
    base = 0.01
    rule = lambda b: base * (b / 8) ** exponent  # noqa: E731
    known = [(b, rule(b)) for b in (8, 16, 32, 64)]
    for b in (128, 512, 4):
        mu, sd = predict_log_lr(b, known)
        assert mu == pytest.approx(math.log(rule(b)), abs=1e-6)
        assert sd < 0.05
    # two points: the line through them
    mu, _ = predict_log_lr(128, known[:2])
    assert mu == pytest.approx(math.log(rule(128)), abs=1e-9)
    # one point: the prior B^0.5 with a spread that grows with the distance
    mu, sd = predict_log_lr(32, known[:1])
    assert mu == pytest.approx(math.log(base) + 0.5 * math.log(4))
    assert sd == pytest.approx(0.5 * math.log(4))
    assert predict_log_lr(32, []) is None


def test_prediction_centres_the_bracket_on_the_grid() -> None:
    grid = list(np.geomspace(2**-7, 4, 19))
    mu = math.log(grid[12]) + 0.01
    br = start_bracket(grid, (mu, 0.01))
    assert br.centre == 12 and br.width == 1 and br.proposals() == [11, 12, 13]
    wide = start_bracket(grid, (mu, 3 * math.log(2) / 2))
    assert wide.width == 3
    assert start_bracket(grid, None).centre == 9
