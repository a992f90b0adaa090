"""The noisy quadratic model: exact dynamics, Monte Carlo agreement, S(B), resume."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pydantic
import pytest

from support import trial
from trainables import nqm
from trainables.schedule import eval_steps


class _Stop(Exception):
    pass


def _run(config: dict, stop_below: float | None = None) -> tuple[list[dict], list[dict | None]]:
    """All reports of one trial; stops early (like stop_at_target) below ``stop_below``."""
    rows, ckpts = [], []

    def report(metrics: dict, checkpoint: dict | None = None) -> None:
        rows.append(metrics)
        ckpts.append(checkpoint)
        if stop_below is not None and metrics["val_loss"] <= stop_below:
            raise _Stop

    try:
        nqm.train(trial(config), report)
    except _Stop:
        pass
    return rows, ckpts


def _steps_to_target(config: dict, target: float) -> float:
    """First evaluation step with val_loss <= target (inf if never or diverged)."""
    rows, _ = _run(config, stop_below=target)
    last = rows[-1]
    return float(last["step"]) if not last.get("diverged") and last["val_loss"] <= target else math.inf


def _best_over_grid(steps_at, n: int, start: int) -> tuple[float, int]:
    """min over grid indices of steps_at(i), by a local search that is exact for a
    unimodal S(lr): move to the best of i-2..i+2 until i itself is the best."""
    cache: dict[int, float] = {}

    def f(i: int) -> float:
        if i not in cache:
            cache[i] = steps_at(i) if 0 <= i < n else math.inf
        return cache[i]

    i = start
    while True:
        j = min(range(i - 2, i + 3), key=lambda k: (f(k), k))
        if f(j) >= f(i):
            return f(i), i
        i = j


# ---------------------------------------------------------------- exact dynamics


def test_expected_recursion_equals_closed_form() -> None:
    dim, B, lr = 200, 4, 0.7
    h = nqm.curvatures(dim)
    a, var = np.full(dim, lr), h / B
    s_star = lr / (B * (2 - lr * h))  # = a² var / (1 − (1 − a h)²)
    s = np.ones(dim)
    for t in range(1, 301):
        s = nqm.expected_step(s, a, h, var)
        if t in (1, 7, 50, 300):
            closed = s_star + (1 - lr * h) ** (2 * t) * (1 - s_star)
            np.testing.assert_allclose(s, closed, rtol=1e-12)
            np.testing.assert_allclose(nqm.expected_jump(np.ones(dim), a, h, var, t), closed, rtol=1e-12)

    # train() jumps between evaluations; its losses are the closed form at every eval step
    rows, _ = _run({"batch_size": B, "lr": lr, "max_steps": 5000, "dim": dim})
    assert [r["step"] for r in rows] == eval_steps(5000)
    for r in rows:
        closed = s_star + (1 - lr * h) ** (2 * r["step"]) * (1 - s_star)
        assert r["val_loss"] == pytest.approx(0.5 * h @ closed, rel=1e-12)
        assert r["train_loss"] == r["val_loss"]
        assert r["epoch"] is None and r["val_accuracy"] is None
        assert r["examples_seen"] == r["step"] * B and r["lr_current"] == lr
        # expected mode reports the exact tr(Σ)/E|G|²
        assert r["grad_noise_scale"] == pytest.approx(h.sum() / (h * h @ closed), rel=1e-9)


def test_momentum_jump_equals_stepwise_recursion_with_warmup_and_preconditioning() -> None:
    dim, B, lr, beta, p, warm = 64, 8, 0.3, 0.9, 0.5, 160  # warmup: 20 steps
    cfg = {
        "batch_size": B,
        "lr": lr,
        "momentum": beta,
        "warmup_examples": warm,
        "max_steps": 3000,
        "dim": dim,
        "precondition": p,
    }
    rows, _ = _run(cfg)
    h = nqm.curvatures(dim)
    m = np.stack([np.ones(dim), np.zeros(dim), np.zeros(dim)])
    losses = {}
    for t in range(3000):
        lr_t = lr * min(1.0, (t + 1) * B / warm)
        m = nqm.expected_momentum_step(m, lr_t * h**-p, h, h / B, beta)
        losses[t + 1] = 0.5 * h @ m[0]
    assert rows[0]["lr_current"] == pytest.approx(lr / 20) and rows[-1]["lr_current"] == lr
    for r in rows:
        assert r["val_loss"] == pytest.approx(losses[r["step"]], rel=1e-9)
    # with β = 0 the momentum recursion reduces to plain SGD
    a, var = np.full(dim, lr), h / B
    m0 = nqm.expected_momentum_step(np.stack([np.ones(dim), np.zeros(dim), np.zeros(dim)]), a, h, var, 0.0)
    np.testing.assert_allclose(m0[0], nqm.expected_step(np.ones(dim), a, h, var), rtol=1e-14)


def test_momentum_recursion_matches_monte_carlo() -> None:
    # Under-damped heavy ball with warmup: the cross moment E[xu] matters, so a sign or
    # convention error in the 3×3 recursion would show up far outside the tolerance.
    dim, runs = 16, 400
    cfg = {
        "batch_size": 4,
        "lr": 0.2,
        "momentum": 0.9,
        "warmup_examples": 40,
        "max_steps": 120,
        "dim": dim,
        "noise_scale_every": 0,
    }
    expected, _ = _run(cfg)
    xs, losses = [], []
    for seed in range(runs):
        rows, ckpts = _run({**cfg, "mode": "sampled", "seed": seed})
        losses.append([r["val_loss"] for r in rows])
        xs.append(ckpts[-1]["state"]["x"])
    losses, xs = np.array(losses), np.array(xs)
    exp_loss = np.array([r["val_loss"] for r in expected])
    z = (losses.mean(0) - exp_loss) / (losses.std(0, ddof=1) / math.sqrt(runs))
    assert np.abs(z).max() < 4.5
    # per coordinate at the last step: E[x_i²] against the exact second moment
    _, ck = _run(cfg)
    m_exact = ck[-1]["state"]["m"][0]
    sq = xs**2
    z_coord = (sq.mean(0) - m_exact) / (sq.std(0, ddof=1) / math.sqrt(runs))
    assert np.abs(z_coord).max() < 4.5
    # and the check has power: plain SGD at the same effective step α/(1-β) differs
    plain, _ = _run({**cfg, "momentum": 0.0, "lr": 2.0})
    assert abs(plain[-1]["val_loss"] - exp_loss[-1]) > 10 * losses.std(0)[-1] / math.sqrt(runs)


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_expected_weight_distance_is_the_root_mean_square_of_the_sampled_ones(beta: float) -> None:
    """Expected mode's ``weight_distance`` against √(mean over 400 seeds of ‖x − 1‖²) of
    sampled mode (the same moments, drawn), at every evaluation, with warmup: within 4.5
    standard errors; and sampled mode's own value is ‖x − 1‖ of its checkpoint."""
    dim, runs = 16, 400
    cfg = {"batch_size": 4, "lr": 0.2, "momentum": beta, "warmup_examples": 40, "max_steps": 120, "dim": dim}
    cfg["noise_scale_every"] = 0
    expected, _ = _run(cfg)
    sq = []
    for seed in range(runs):
        rows, ckpts = _run({**cfg, "mode": "sampled", "seed": seed})
        assert rows[-1]["weight_distance"] == pytest.approx(np.linalg.norm(ckpts[-1]["state"]["x"] - 1.0))
        sq.append([r["weight_distance"] ** 2 for r in rows])
    d2 = np.array(sq)
    exact = np.array([r["weight_distance"] ** 2 for r in expected])
    z = (d2.mean(0) - exact) / (d2.std(0, ddof=1) / math.sqrt(runs))
    assert np.abs(z).max() < 4.5 and exact[0] > 0 and exact[-1] > exact[0]
    # resuming from a checkpoint carries the means: the same distances after it
    full, ckpts = _run(cfg)
    rest, _ = _run({**cfg, "_checkpoint": ckpts[len(full) // 2]})
    assert [r["weight_distance"] for r in rest] == pytest.approx(
        [r["weight_distance"] for r in full[len(full) // 2 + 1 :]]
    )


def test_divergence_is_reported_and_stops() -> None:
    rows, ckpts = _run({"batch_size": 64, "lr": 2.5, "max_steps": 10_000, "dim": 100})
    assert rows[-1]["diverged"] is True and rows[-1]["step"] < 100
    assert not any(r.get("diverged") for r in rows[:-1])
    rows, _ = _run({"batch_size": 64, "lr": 2.5, "max_steps": 10_000, "dim": 100, "mode": "sampled"})
    assert rows[-1]["diverged"] is True and rows[-1]["step"] < 100
    # heavy ball is stable up to α·h_max < 2(1 + β) = 3.8: matrix-power jumps blow up past it
    rows, _ = _run({"batch_size": 64, "lr": 3.7, "momentum": 0.9, "max_steps": 10_000, "dim": 100})
    assert not any(r.get("diverged") for r in rows)
    rows, _ = _run({"batch_size": 64, "lr": 3.9, "momentum": 0.9, "max_steps": 10_000, "dim": 100})
    assert rows[-1]["diverged"] is True and rows[-1]["step"] < 10_000


def test_config_validation_and_caps() -> None:
    with pytest.raises(pydantic.ValidationError, match="bogus"):
        nqm.TrainableConfig(dim=10, bogus=1)
    with pytest.raises(ValueError, match="sgd"):
        _run({"batch_size": 1, "lr": 0.1, "max_steps": 10, "optimizer": "adamw"})
    with pytest.raises(ValueError, match="set max_examples or max_steps"):
        _run({"batch_size": 1, "lr": 0.1, "max_steps": None, "max_examples": None})
    rows, _ = _run({"batch_size": 8, "lr": 0.1, "max_steps": 1000, "max_examples": 800, "dim": 10})
    assert rows[-1]["step"] == 100 and rows[-1]["examples_seen"] == 800


# ---------------------------------------------------------------- determinism and resume


def test_sampled_mode_is_seeded_and_measuring_does_not_change_the_curve() -> None:
    cfg = {"batch_size": 16, "lr": 0.5, "seed": 3, "max_steps": 300, "dim": 100, "mode": "sampled"}
    a, _ = _run(cfg)
    b, _ = _run(cfg)
    c, _ = _run({**cfg, "noise_scale_every": 0})
    d, _ = _run({**cfg, "seed": 4})
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b] == [r["val_loss"] for r in c]
    assert [r["val_loss"] for r in a] != [r["val_loss"] for r in d]
    assert all(r["grad_noise_scale"] is None for r in c) and a[-1]["grad_noise_scale"] > 0


@pytest.mark.parametrize(
    "extra",
    [
        {},  # closed-form jumps
        {"momentum": 0.9, "warmup_examples": 3000},  # warmup, then matrix powers
        {"momentum": 0.9, "mode": "sampled", "precondition": 0.3},  # RNG streams + EMA state
    ],
)
def test_resume_continues_the_same_curve(extra: dict) -> None:
    cfg = {"batch_size": 32, "lr": 0.05, "seed": 1, "max_steps": 2000, "dim": 300, **extra}
    full, ckpts = _run(cfg)
    k = 40  # resume from the 41st report (step 41: inside warmup for the second case)
    ckpt = pickle.loads(pickle.dumps(ckpts[k]))  # the orchestrator pickles it (torch.save)
    resumed, _ = _run({**cfg, "_checkpoint": ckpt})
    drop = lambda rows: [{k_: v for k_, v in r.items() if k_ != "wall_time_s"} for r in rows]
    assert drop(resumed) == drop(full[k + 1 :])
    assert resumed[0]["wall_time_s"] >= ckpt["elapsed"]
    with pytest.raises(ValueError, match="checkpoint"):
        _run({**cfg, "lr": 0.06, "_checkpoint": ckpt})


# ---------------------------------------------------------------- steps to target


DIM = 2000
GRID = 2.0 ** (np.arange(-56, 13) / 4)  # 2^-14 .. 2^3 by 2^(1/4): α doubles in 4 grid steps
BATCHES = [1, 2, 4, 16, 64, 256, 1024, 4096, 16384, 32768, 65536]
VARIANTS = {"plain": {}, "momentum": {"momentum": 0.9}, "precondition": {"precondition": 0.5}}


def _steps_table(extra: dict) -> dict[int, float]:
    """S(B): best steps-to-target over GRID at each batch size, target = 1% of initial loss."""
    target = 0.01 * 0.5 * nqm.curvatures(DIM).sum()
    base = {"lr": None, "max_steps": 2**24, "dim": DIM, "noise_scale_every": 0, **extra}
    steps_at = lambda B: (lambda i: _steps_to_target({**base, "batch_size": B, "lr": float(GRID[i])}, target))
    # B = 1: coarse scan by factors of 2, then refine; each next B starts where the best
    # LR would be under the linear rule (capped by the grid), and searches locally.
    coarse = [steps_at(1)(i) for i in range(0, len(GRID), 4)]
    start = 4 * int(np.argmin(coarse))
    table, prev_b, prev_best = {}, 1, start
    for B in BATCHES:
        f = steps_at(B)
        start = min(prev_best + 4 * int(round(math.log2(B / prev_b))), len(GRID) - 1)
        # past the stability limit nothing reaches the target; the previous best LR does
        # (S at a fixed LR only falls with B), so step down towards it
        while start > prev_best and not math.isfinite(f(start)):
            start -= 1
        table[B], prev_best = _best_over_grid(f, len(GRID), start)
        prev_b = B
    return table


@pytest.fixture(scope="module")
def tables() -> dict[str, dict[int, float]]:
    return {name: _steps_table(extra) for name, extra in VARIANTS.items()}


def test_steps_to_target_perfect_scaling_then_saturation(tables: dict) -> None:
    for name, s in tables.items():
        assert all(math.isfinite(v) for v in s.values()), name
        assert s[1] / s[2] == pytest.approx(2.0, rel=0.15), name  # S ∝ 1/B at small B
        assert s[65536] / s[32768] > 0.9, name  # flat at large B
        values = [s[b] for b in BATCHES]
        assert all(x >= y for x, y in zip(values, values[1:])), name  # never worse with larger B


def test_momentum_and_preconditioning_raise_the_critical_batch_size(tables: dict) -> None:
    from analysis.critical import fit_critical_batch

    b = np.array(BATCHES, dtype=float)
    crit = {name: fit_critical_batch(b, np.array([s[B] for B in BATCHES])).b_crit for name, s in tables.items()}
    assert crit["momentum"] > 2 * crit["plain"]
    assert crit["precondition"] > 2 * crit["plain"]
    # at small B momentum only rescales the LR (α/(1−β)), so S matches plain SGD there
    assert tables["momentum"][1] == pytest.approx(tables["plain"][1], rel=0.1)


# ---------------------------------------------------------------- the built-in study


def test_builtin_study_target_is_reachable_with_interior_best_lr() -> None:
    from orchestrator.grid import lr_values
    from orchestrator.study import load_study

    study = load_study("nqm")
    assert study.trainable == "nqm" and study.early_stopping.scheduler == "none"
    settings = study.trainable_settings().model_dump()
    for B in (1, 65536):
        lrs = lr_values(study, B)
        cfg = {"batch_size": B, "max_steps": study.budget.max_steps, "momentum": study.search.momentum, **settings}
        steps = [_steps_to_target({**cfg, "lr": lr}, study.target.value) for lr in lrs]
        best = int(np.argmin(steps))
        assert math.isfinite(steps[best]), B
        assert 0 < best < len(lrs) - 1, (B, lrs[best])  # the optimum is interior
        assert not math.isfinite(steps[-1])  # the grid reaches instability
