"""Gradient noise scale: unbiased estimators, EMA ratio, torch helper, NQM agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from support import trial
from trainables import nqm
from trainables.noise_scale import (
    NoiseScaleEstimator,
    grad_sq_norm,
    unbiased_grad_sq_norm,
    unbiased_trace_cov,
)


def _synthetic(rng: np.random.Generator, g: np.ndarray, sd: np.ndarray, b_small: int, k: int, reps: int):
    """|G_small|² (mean over k small batches) and |G_big|² (their mean) for ``reps`` draws.

    Per-example gradients are g + N(0, diag(sd²)), so a batch of b has noise sd/√b.
    """
    small = g + rng.standard_normal((reps, k, g.size)) * sd / math.sqrt(b_small)
    big = small.mean(axis=1)
    return (small**2).sum(-1).mean(-1), (big**2).sum(-1)


def test_formulas_invert_the_expected_squared_norms() -> None:
    g2, tr = 3.0, 50.0
    at = lambda b: g2 + tr / b  # E|G_B|² = |G|² + tr(Σ)/B
    assert unbiased_grad_sq_norm(at(8), at(32), 8, 32) == pytest.approx(g2)
    assert unbiased_trace_cov(at(8), at(32), 8, 32) == pytest.approx(tr)
    with pytest.raises(ValueError):
        unbiased_trace_cov(1.0, 1.0, 32, 8)


def test_estimators_are_unbiased_on_gaussian_gradients() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal(20) * 0.3
    sd = rng.uniform(0.5, 2.0, 20)
    g2_true, tr_true = float(g @ g), float(sd @ sd)
    small, big = _synthetic(rng, g, sd, b_small=8, k=4, reps=40_000)
    g2 = unbiased_grad_sq_norm(small, big, 8, 32)
    tr = unbiased_trace_cov(small, big, 8, 32)
    for est, true in ((g2, g2_true), (tr, tr_true)):
        assert abs(est.mean() - true) < 4 * est.std() / math.sqrt(est.size)
    # the naive squared norm is biased by tr(Σ)/B, far beyond that tolerance
    assert big.mean() - g2_true > 20 * g2.std() / math.sqrt(g2.size)


def test_ema_ratio_recovers_b_simple_on_gaussian_gradients() -> None:
    rng = np.random.default_rng(1)
    g = np.zeros(50)
    g[:5] = 0.2  # |G|² = 0.2
    sd = np.full(50, 2.0)  # tr(Σ) = 200 -> B_simple = 1000
    small, big = _synthetic(rng, g, sd, b_small=256, k=4, reps=3000)
    est = NoiseScaleEstimator()
    for s, b in zip(small, big):
        est.update(float(s), float(b), 256, 1024)
    assert est.b_simple == pytest.approx(1000.0, rel=0.1)
    assert est.b_simple == est.trace_cov / est.grad_sq_norm


def test_estimator_bias_correction_none_and_state() -> None:
    est = NoiseScaleEstimator(beta=0.99)
    assert est.b_simple is None and est.grad_sq_norm is None
    at = lambda b: 2.0 + 10.0 / b
    est.update(at(4), at(8), 4, 8)
    # bias-corrected from the first update: the EMA equals the (exact) estimate
    assert est.grad_sq_norm == pytest.approx(2.0) and est.trace_cov == pytest.approx(10.0)
    for _ in range(5):
        est.update(at(4), at(8), 4, 8)
    assert est.b_simple == pytest.approx(5.0)
    # the ratio of EMAs, not the EMA of ratios: (10+30)/(2+1) rather than mean(5, 30)
    two = NoiseScaleEstimator(beta=0.5)
    two.update(2.0 + 10.0 / 4, 2.0 + 10.0 / 8, 4, 8)  # |G|²=2, tr=10
    two.update(1.0 + 30.0 / 4, 1.0 + 30.0 / 8, 4, 8)  # |G|²=1, tr=30
    w = np.array([0.5 * 0.5, 0.5]) / 0.75  # bias-corrected EMA weights
    assert two.b_simple == pytest.approx((w @ [10, 30]) / (w @ [2, 1]))
    # |G|² estimate <= 0 (noise-dominated): no ratio
    neg = NoiseScaleEstimator()
    neg.update(1.0, 0.4, 4, 8)  # (8*0.4 - 4*1.0)/4 < 0
    assert neg.grad_sq_norm < 0 and neg.b_simple is None
    restored = NoiseScaleEstimator()
    restored.load_state_dict(est.state_dict())
    assert restored.b_simple == est.b_simple and restored.count == est.count


def test_grad_sq_norm_of_torch_parameters() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    frozen = torch.nn.Parameter(torch.ones(2))  # never used: its .grad stays None
    model(torch.randn(8, 5)).pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()] + [frozen.grad]
    manual = sum(float((p.grad.double() ** 2).sum()) for p in model.parameters())
    assert grad_sq_norm(grads) == pytest.approx(manual, rel=1e-12)
    assert grad_sq_norm([None]) == 0.0


def test_nqm_sampled_estimate_at_fixed_start_point() -> None:
    # lr = 0 keeps x at its start (all ones): B_simple = tr(H)/|Hx|² = Σh/Σh².
    dim = 1000
    h = nqm.curvatures(dim)
    rows = []
    nqm.train(
        trial(
            {
                "batch_size": 16,
                "lr": 0.0,
                "seed": 0,
                "max_steps": 3000,
                "dim": dim,
                "mode": "sampled",
                "noise_scale_every": 1,
            }
        ),
        lambda m, checkpoint=None: rows.append(m),
    )
    assert rows[-1]["grad_noise_scale"] == pytest.approx(h.sum() / (h @ h), rel=0.1)


def test_nqm_estimate_at_a_trained_point_matches_analytic_b_simple() -> None:
    # A point late in training, where B_simple is large (~10^3); there x is frozen and the
    # NQM's measurement (two independent batches, B_small = B, B_big = 2B) repeated.
    dim, B = 1000, 4096
    h = nqm.curvatures(dim)
    ckpts = []
    nqm.train(
        trial(
            {
                "batch_size": 64,
                "lr": 0.5,
                "seed": 0,
                "max_steps": 5000,
                "dim": dim,
                "mode": "sampled",
                "noise_scale_every": 0,
            }
        ),
        lambda m, checkpoint=None: ckpts.append(checkpoint),
    )
    x = ckpts[-1]["state"]["x"]
    grad = h * x
    analytic = h.sum() / (grad @ grad)  # tr(Σ)/|G|², Σ = H per example
    assert analytic > 300
    rng, est, sd = np.random.default_rng(0), NoiseScaleEstimator(), np.sqrt(h / B)
    for _ in range(3000):
        small, big = nqm.noise_scale_norms(grad, rng.standard_normal(dim) * sd, rng.standard_normal(dim) * sd)
        est.update(small, big, B, 2 * B)
    assert est.b_simple == pytest.approx(analytic, rel=0.1)


def test_b_simple_is_none_while_the_trace_estimate_is_not_positive() -> None:
    from trainables.noise_scale import NoiseScaleEstimator

    est = NoiseScaleEstimator()
    # |G_small|² < |G_big|²: by chance the smaller batch looked less noisy, tr(Σ) < 0
    est.update(g_small_sq=1.0, g_big_sq=1.2, b_small=2048, b_big=4096)
    assert est.trace_cov is not None and est.trace_cov < 0 and est.grad_sq_norm > 0
    assert est.b_simple is None
