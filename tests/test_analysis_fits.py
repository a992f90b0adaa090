"""The fitting pieces on plain arrays: critical batch, regimes, LR rules, LR interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.best_lr import interpolated_argmin
from analysis.bootstrap import percentile_ci
from analysis.critical import fit_critical_batch
from analysis.lr_rules import fit_lr_rules
from analysis.regimes import regimes

B = np.array([16, 32, 64, 128, 256, 512, 1024, 2048], dtype=float)


def test_critical_batch_exact_on_noiseless_hyperbola() -> None:
    s = 1200 * (1 + 700 / B)
    fit = fit_critical_batch(B, s)
    assert fit.b_crit == pytest.approx(700, rel=1e-6)
    assert fit.s_min == pytest.approx(1200, rel=1e-6)
    assert fit.e_min == pytest.approx(840_000, rel=1e-6)
    assert fit.n_points == 8 and fit.reason is None


def test_critical_batch_with_multiplicative_noise_and_ordering() -> None:
    rng = np.random.default_rng(3)
    noise = np.exp(rng.normal(0, 0.05, B.size))
    low = fit_critical_batch(B, 1000 * (1 + 100 / B) * noise).b_crit
    high = fit_critical_batch(B, 1000 * (1 + 800 / B) * noise).b_crit
    assert low == pytest.approx(100, rel=0.15)
    assert high == pytest.approx(800, rel=0.15)
    assert high > low


def test_critical_batch_drops_censored_and_refuses_too_few_points() -> None:
    s = list(1000 * (1 + 256 / B))
    s[0] = None
    assert fit_critical_batch(B, s).n_points == 7
    few = fit_critical_batch([32, 64, 128], [5000, None, None])
    assert few.b_crit is None and few.s_min is None and "1 batch size" in few.reason


def test_critical_batch_not_identified_when_scaling_stays_perfect() -> None:
    fit = fit_critical_batch(B, 1e6 / B)
    assert fit.b_crit is None and "1/B" in fit.reason


def test_regimes_read_off_measured_steps() -> None:
    s = 1000 * (1 + 256 / B)  # 17000, 9000, 5000, 3000, 2000, 1500, 1250, 1125
    r = regimes(B, s)
    # Within 20% of 17000 * 16 / B up to B = 64 (5000 <= 1.2 * 4250); 3000 > 1.2 * 2125.
    assert r.perfect_scaling_up_to == 64
    # 1250 -> 1125 is the first doubling that cuts S by less than 10%.
    assert r.diminishing_returns_up_to == 1024
    still_falling = regimes(B[:4], s[:4])
    assert still_falling.diminishing_returns_up_to is None
    assert "diminishing_returns_up_to" in still_falling.reasons


@pytest.mark.parametrize("rule,exponent", [("linear", 1.0), ("sqrt", 0.5)])
def test_lr_rules_name_the_fixed_rule(rule: str, exponent: float) -> None:
    rng = np.random.default_rng(0)
    lr = 0.01 * (B / 16) ** exponent * np.exp(rng.normal(0, 0.05, B.size))
    fit = fit_lr_rules(B, lr)
    assert fit.preferred_rule == rule
    assert fit.exponent == pytest.approx(exponent, abs=0.1)
    assert set(fit.aicc) == {"linear", "sqrt", "power", "saturating", "constant", "surge"}


def test_lr_rules_prefer_saturating_when_it_saturates() -> None:
    lr = 0.8 / (1 + 300 / B)
    assert fit_lr_rules(B, lr).preferred_rule == "saturating"


def test_lr_rules_need_three_interior_points() -> None:
    fit = fit_lr_rules([16, 32, 64], [0.01, None, 0.04])
    assert fit.exponent is None and fit.preferred_rule is None and fit.reason


def test_interpolated_argmin_recovers_parabola_vertex() -> None:
    x = np.log(np.geomspace(1e-3, 1, 7))
    true = np.log(0.02)
    y = 3.0 + 0.8 * (x - true) ** 2
    x_star, edge, valid = interpolated_argmin(x, y[None, :])
    assert valid[0] and not edge[0]
    assert x_star[0] == pytest.approx(true, abs=1e-9)


def test_interpolated_argmin_flags_edges_and_skips_censored() -> None:
    x = np.log(np.geomspace(1e-3, 1, 7))
    rising = np.arange(7.0)[None, :]
    x_star, edge, _ = interpolated_argmin(x, rising)
    assert edge[0] and x_star[0] == pytest.approx(x[0])
    # Right neighbour censored: the vertex uses the points to the left and never moves past
    # the best measured LR toward the censored one (that would be extrapolation).
    y = 3.0 + 0.8 * (x - (x[3] + 0.3)) ** 2
    y[4] = np.inf
    x_star, edge, valid = interpolated_argmin(x, y[None, :])
    assert valid[0] and not edge[0]
    assert x_star[0] == pytest.approx(x[3])
    y[4] = 3.0 + 0.8 * (x[4] - (x[3] + 0.3)) ** 2
    assert interpolated_argmin(x, y[None, :])[0][0] == pytest.approx(x[3] + 0.3)
    none = np.full((1, 7), np.inf)
    assert not interpolated_argmin(x, none)[2][0]


def test_percentile_ci_keeps_rank_of_unbounded_resamples() -> None:
    s = np.r_[np.linspace(1, 2, 90), np.full(10, np.inf)]
    lo, hi = percentile_ci(s)
    assert lo == pytest.approx(1.0, abs=0.05) and hi is None
    assert percentile_ci(np.r_[np.ones(3), np.full(7, np.nan)]) is None
