"""LR scaling rules: constant and surge join linear, sqrt, power and saturating, and the
preferred rule never contradicts the free exponent's interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis import load_run
from analysis.fits import analyse
from analysis.lr_rules import fit_lr_rules, fit_lr_rules_batched, preferred_rule
from analysis.results import LrScalingFit, fits_json
from analysis.synthetic import write_synthetic_run

B = np.array([32, 64, 128, 256, 512, 1024, 2048, 4096, 8192], dtype=float)
# The residual sigma of a best LR read off a grid of log spacing 0.58 (see lr_rules.GRID_FLOOR).
GRID_SIGMA = 0.33 * 0.58


def surge(b: np.ndarray, b_noise: float, eta_max: float = 0.1) -> np.ndarray:
    b = np.asarray(b, dtype=float)
    return eta_max / (0.5 * (np.sqrt(b_noise / b) + np.sqrt(b / b_noise)))


def assert_consistent(fit: LrScalingFit) -> None:
    """The preferred rule's log-log slope lies inside the free exponent's interval."""
    assert fit.preferred_rule is not None
    lo, hi = fit.exponent_ci95
    k = fit.rule_exponent[fit.preferred_rule]
    assert (lo is None or lo - 1e-9 <= k) and (hi is None or k <= hi + 1e-9), (fit.preferred_rule, k, lo, hi)
    if fit.preferred_rule in fit.laws:
        assert fit.laws[fit.preferred_rule].identified


def noisy(lr: np.ndarray, seed: int, sigma: float = 0.05) -> np.ndarray:
    return lr * np.exp(np.random.default_rng(seed).normal(0, sigma, lr.size))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("b_noise", [256.0, 1024.0])
def test_surge_data_are_recognised_with_b_noise(seed: int, b_noise: float) -> None:
    fit = fit_lr_rules(B, noisy(surge(B, b_noise), seed), sigma_floor=GRID_SIGMA)
    assert fit.preferred_rule == "surge"
    assert fit.laws["surge"].b_noise == pytest.approx(b_noise, rel=0.2)
    lo, hi = fit.laws["surge"].b_noise_ci95
    assert lo < b_noise < hi
    assert_consistent(fit)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "rule,law",
    [
        ("constant", lambda b: np.full(b.shape, 0.05)),
        ("sqrt", lambda b: 0.01 * np.sqrt(b / 32)),
        ("linear", lambda b: 0.01 * b / 32),
        ("saturating", lambda b: 0.8 / (1 + 300 / b)),
    ],
)
def test_each_rule_is_named_on_its_own_data(seed: int, rule: str, law: object) -> None:
    fit = fit_lr_rules(B, noisy(law(B), seed, 0.03), sigma_floor=GRID_SIGMA)  # type: ignore[operator]
    assert fit.preferred_rule == rule
    assert_consistent(fit)


@pytest.mark.parametrize("k,seed,old", [(0.62, 2, "sqrt"), (0.75, 2, "linear")])
def test_a_fixed_rule_outside_the_free_interval_is_not_preferred(k: float, seed: int, old: str) -> None:
    b = B[:5]
    lr = noisy(0.01 * (b / 32) ** k, seed, 0.02)
    # Before: AICc alone (the old four rules, fixed ones winning ties within 2) chose `old`.
    r = fit_lr_rules_batched(b, lr[None, :])
    old_rules = {name: r.aicc[name] for name in ("linear", "sqrt", "power", "saturating")}
    assert preferred_rule(old_rules, {name: True for name in old_rules})[0] == old
    fit = fit_lr_rules(b, lr)
    lo, hi = fit.exponent_ci95
    assert not lo <= {"sqrt": 0.5, "linear": 1.0}[old] <= hi
    assert fit.preferred_rule == "power" and not fit.consistent[old]
    assert fit.selection_note.startswith("no fixed rule fits; free exponent")
    assert_consistent(fit)


def test_a_noise_law_pinned_beyond_the_data_is_not_preferred() -> None:
    fit = fit_lr_rules(B, noisy(0.01 * np.sqrt(B / 32), 0, 0.03))
    assert not fit.laws["surge"].identified or fit.laws["surge"].b_noise > B.max()
    assert fit.preferred_rule == "sqrt"


def test_without_an_interval_the_choice_says_it_is_unchecked() -> None:
    # Five points with no scatter at all: no residual interval can be drawn.
    fit = fit_lr_rules(B[:5], 0.01 * (B[:5] / 32) ** 0.5)
    assert fit.exponent_ci95 is None and "AICc alone" in fit.selection_note
    assert fit.preferred_rule == "sqrt"


@pytest.mark.parametrize(
    "name,law,rule",
    [
        ("surge", lambda b: surge(b, 256.0), "surge"),
        ("flat", lambda b: np.full(np.shape(b), 0.05), "constant"),
        ("sqrt", lambda b: 0.02 * np.sqrt(np.asarray(b) / 32), "sqrt"),
        ("linear", lambda b: 0.01 * np.asarray(b) / 32, "linear"),
    ],
)
def test_end_to_end_rule_from_synthetic_sweeps(tmp_path: Path, name: str, law: object, rule: str) -> None:
    write_synthetic_run(tmp_path, lr_law=law, rng_seed=2, evals_per_trial=20)  # type: ignore[arg-type]
    a = analyse(load_run(tmp_path), n_boot=100)
    fit = a.lr_scaling
    assert fit.preferred_rule == rule, (name, fit.aicc)
    assert_consistent(fit)
    fits = fits_json(a)["lr_scaling"]
    assert fits["preferred_rule"] == rule and set(fits["aicc"]) >= {"constant", "surge"}
    if rule == "surge":
        assert fit.laws["surge"].b_noise == pytest.approx(256.0, rel=0.2)
        assert fits["surge"]["b_noise"] == pytest.approx(fit.laws["surge"].b_noise)
        lo, hi = fits["surge"]["b_noise_ci95"]
        assert lo < 256 < hi
