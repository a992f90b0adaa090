"""Noisy quadratic model (NQM; Zhang et al. 2019): a batch-size study in seconds.

Loss ½ xᵀHx with H = diag(h), h_i = 1/i (i = 1..dim, condition number dim). The gradient
of one example is Hx plus noise of covariance H (Fisher ≈ Hessian), so a batch of B has
noise covariance H/B. The update is heavy-ball SGD in PyTorch's convention, optionally
preconditioned by H^(−p) (a stand-in for adaptive optimizers such as Adam or K-FAC):

    u ← β u + g,   x ← x − α H^(−p) u,   g = (H + λI) x + noise   (λ: weight_decay)

``mode="expected"`` tracks the exact second moments per coordinate, so the curve is the
expected loss and does not depend on the seed. Without momentum s_i = E[x_i²] follows
s ← (1 − a h)² s + a² h/B (a = α h^(−p)); with momentum the moments (E[x²], E[xu], E[u²])
follow an exact 3×3 affine recursion. After warmup the step size is constant, so the
recursion is advanced from one evaluation to the next in closed form (plain SGD:
s_t = s* + (1 − ah)^(2t)(s_0 − s*)) or by binary powers of the 4×4 augmented transition
matrix (momentum): a 2^16 batch-size sweep costs seconds. ``mode="sampled"`` simulates x
with Gaussian noise drawn from a generator seeded by ``seed`` (one update per step).

x starts at 1 in every coordinate (s_i = 1), so the initial loss is ½ Σ h_i and the
sampled mode's E[x_i²] is exactly the expected mode's s_i. ``weight_distance`` is ‖x − 1‖
(sampled) or its root mean square √(Σ E[x_i²] − 2 E[x_i] + 1) (expected: the means follow
the same update without the noise, in closed form between evaluations as the moments do).

    >>> from trainables.contract import Target, TrialConfig
    >>> from trainables.nqm import train
    >>> rows = []
    >>> cfg = TrialConfig(batch_size=64, micro_batch_size=64, lr=0.5, seed=0, optimizer="sgd",
    ...     momentum=0.0, weight_decay=0.0, warmup_examples=0, max_steps=1000, max_examples=None,
    ...     cpus=1, target=Target(metric="val_loss", mode="min", value=0.0), stop_at_target=False,
    ...     settings={"dim": 1000})
    >>> train(cfg, lambda metrics, checkpoint=None: rows.append(metrics))
    >>> rows[0]["step"], rows[-1]["step"], rows[-1]["val_loss"] < 0.2 * rows[0]["val_loss"]
    (1, 1000, True)
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from trainables import Report
from trainables.contract import TrialConfig
from trainables.noise_scale import NoiseScaleEstimator
from trainables.schedule import Plan

# A trial whose loss exceeds this multiple of its initial loss has diverged: with a
# step size past the stability limit the loss grows geometrically, so any large factor
# flags it within a few evaluations, and no converging run ever gets near it.
DIVERGENCE_FACTOR = 1e3
CHECKPOINT_VERSION = 2  # 2: the expected mode's state holds the means
BRANCHES = True  # starts from another trial's checkpoint (config.init_state; orchestrator.branching)
SCHEDULES = True  # follows config.schedule: per update its batch (noise H/B), LR and momentum
# The loss itself, as train_loss and val_loss; there is no accuracy.
METRICS = ("train_loss", "train_eval_loss", "val_loss")


class TrainableConfig(BaseModel):
    """The keys a study's ``[trainable_config]`` may set for ``trainable = "nqm"``."""

    model_config = ConfigDict(extra="forbid")

    dim: int = Field(10_000, ge=1, description="Number of coordinates; curvatures h_i = 1/i, i = 1..dim.")
    mode: Literal["expected", "sampled"] = Field(
        "expected",
        description="expected: exact expected-loss dynamics (seed-independent, fast); "
        "sampled: simulate x with Gaussian gradient noise seeded by `seed`.",
    )
    precondition: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Exponent p of the preconditioner H^(-p) (0: plain SGD; 1: Newton-like).",
    )
    eval_ratio: float = Field(1.05, gt=1.0, description="Evaluation steps are log-spaced by this ratio.")
    noise_scale_every: int = Field(
        10,
        ge=0,
        description="Estimate the gradient noise scale every this many steps (sampled mode; "
        "expected mode reports the exact value at each evaluation); 0 disables it.",
    )


def curvatures(dim: int) -> np.ndarray:
    """The Hessian's diagonal h_i = 1/i, i = 1..dim."""
    return 1.0 / np.arange(1, dim + 1, dtype=np.float64)


def loss(h: np.ndarray, s: np.ndarray) -> float:
    """½ Σ h_i s_i: the expected loss for second moments s (or ½ xᵀHx for s = x²)."""
    return 0.5 * float(h @ s)


def expected_step(s: np.ndarray, a: np.ndarray, hu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """One plain-SGD step of the second moments: s ← (1 − a·hu)² s + a² var.

    ``a`` is the per-coordinate step size (α h^(−p)), ``hu`` the curvature the update sees
    (h + weight decay) and ``var`` the batch noise variance h/B.
    """
    return (1.0 - a * hu) ** 2 * s + a * a * var


def expected_jump(s: np.ndarray, a: np.ndarray, hu: np.ndarray, var: np.ndarray, k: int) -> np.ndarray:
    """``k`` plain-SGD steps at a constant step size in closed form.

    s_k = q^k s_0 + a² var (1 − q^k)/(1 − q), q = (1 − a·hu)²; this equals
    s* + q^k (s_0 − s*) with s* = a² var/(1 − q) where that exists, and stays exact for
    tiny a·hu (1 − q = a·hu(2 − a·hu), and expm1 keeps 1 − q^k accurate) and for unstable
    coordinates (q > 1 grows, as it should).
    """
    r = 1.0 - a * hu
    one_minus_q = a * hu * (2.0 - a * hu)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        klogq = k * 2.0 * np.log(np.abs(r))
        qk = np.exp(klogq)
        geom = np.where(one_minus_q != 0.0, -np.expm1(klogq) / one_minus_q, float(k))
        return qk * s + a * a * var * geom


def momentum_transition(a: np.ndarray, hu: np.ndarray, var: np.ndarray, beta: float) -> np.ndarray:
    """Per-coordinate 4×4 augmented map of m = (E[x²], E[xu], E[u²], 1) for one step.

    With z = (x, u): z' = A z + b n, A = [[1 − a·hu, −aβ], [hu, β]], b = (−a, 1),
    n ~ N(0, var). Then E[z'z'ᵀ] = A E[zzᵀ] Aᵀ + var b bᵀ, written out entrywise below;
    the fourth row/column carries the constant noise term. Shape (4, 4, dim): the
    coordinate axis last keeps the batched products vectorised (einsum), ~6× faster
    than numpy's batched matmul on tiny matrices.
    """
    p, q, r, s = 1.0 - a * hu, -a * beta, hu, np.full_like(a, beta)
    t = np.zeros((4, 4, a.size))
    t[0, 0], t[0, 1], t[0, 2], t[0, 3] = p * p, 2 * p * q, q * q, a * a * var
    t[1, 0], t[1, 1], t[1, 2], t[1, 3] = p * r, p * s + q * r, q * s, -a * var
    t[2, 0], t[2, 1], t[2, 2], t[2, 3] = r * r, 2 * r * s, s * s, var
    t[3, 3] = 1.0
    return t


def expected_momentum_step(m: np.ndarray, a: np.ndarray, hu: np.ndarray, var: np.ndarray, beta: float) -> np.ndarray:
    """One heavy-ball step of the moments m = (E[x²], E[xu], E[u²]), shape (3, dim)."""
    xx, xu, uu = m
    p, q = 1.0 - a * hu, -a * beta
    return np.stack(
        [
            p * p * xx + 2 * p * q * xu + q * q * uu + a * a * var,
            p * hu * xx + (p * beta + q * hu) * xu + q * beta * uu - a * var,
            hu * hu * xx + 2 * hu * beta * xu + beta * beta * uu + var,
        ]
    )


def mean_transition(a: np.ndarray, hu: np.ndarray, beta: float) -> np.ndarray:
    """Per-coordinate 2×2 map of the means (E[x], E[u]) for one heavy-ball step: the noise
    has mean zero, so z̄' = A z̄ with ``momentum_transition``'s A. Shape (2, 2, dim)."""
    t = np.zeros((2, 2, a.size))
    t[0, 0], t[0, 1], t[1, 0], t[1, 1] = 1.0 - a * hu, -a * beta, hu, beta
    return t


class _Jumper:
    """Advances a per-coordinate linear map ``transition`` (shape (n, n, dim)) k steps with
    O(log k) matrix products.

    Powers T^(2^j) are computed once per step size and reused for every jump, so each
    evaluation costs popcount(k) batched n×n mat-vecs.
    """

    def __init__(self, transition: np.ndarray) -> None:
        self.powers = [transition]

    def __call__(self, v: np.ndarray, k: int) -> np.ndarray:
        j = 0
        with np.errstate(over="ignore", invalid="ignore"):
            while k:
                if j == len(self.powers):
                    last = self.powers[-1]
                    self.powers.append(np.einsum("ikd,kjd->ijd", last, last))
                if k & 1:
                    v = np.einsum("ijd,jd->id", self.powers[j], v)
                k >>= 1
                j += 1
        return v


def noise_scale_norms(grad: np.ndarray, noise: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(|G_small|², |G_big|²) for the noise-scale estimator from two independent batches of
    B: ``noise`` is the update's, ``other`` drawn for the measurement only (so measuring never
    changes the curve); each is a small batch (B_small = B), their mean the big one (2B)."""
    small_a, small_b = grad + noise, grad + other
    big = grad + 0.5 * (noise + other)
    return 0.5 * (float(small_a @ small_a) + float(small_b @ small_b)), float(big @ big)


def adopt_state(init: dict[str, Any], key: dict[str, Any], heavy: bool) -> dict[str, np.ndarray]:
    """The state of another trial's checkpoint for a branch with its own B and LR: the same
    model (dim, mode, preconditioner) and kind of update (momentum: ``heavy``)."""
    other = init.get("key", {})
    same = ("dim", "mode", "precondition")
    if init.get("version") != CHECKPOINT_VERSION or any(other.get(k) != key[k] for k in same):
        raise ValueError("nqm: init_state is not a checkpoint of the same model (dim, mode, precondition)")
    state = {k: np.array(v, dtype=np.float64) for k, v in init["state"].items()}
    # sampled: x and the velocity; expected: the moments, (E[x²], E[xu], E[u²]) with momentum
    want = {"x", "u"} if key["mode"] == "sampled" else ({"m", "mean"} if heavy else {"s", "mean"})
    if set(state) != want:
        raise ValueError(f"nqm: init_state holds {sorted(state)}; this trial (momentum: {heavy}) needs {sorted(want)}")
    return state


def train(config: TrialConfig, report: Report) -> None:
    """Run one NQM trial, calling ``report(metrics, checkpoint)`` at each evaluation step.

    Honours batch_size, lr, seed (sampled mode), optimizer (only "sgd"), momentum,
    weight_decay (L2, added to the update's curvature), warmup_examples, the schedule (per
    update its B, LR and momentum), the step cap, the checkpoint and the initial state (a
    branch); micro_batch_size has no effect (accumulation leaves the noise H/B unchanged)."""
    cfg = TrainableConfig.model_validate(config.settings)
    if config.optimizer != "sgd":
        raise ValueError(
            f"nqm supports optimizer 'sgd' only (got {config.optimizer!r}); "
            "use trainable_config.precondition to model adaptive optimizers"
        )
    B, lr, seed, plan = config.batch_size, config.lr, config.seed, Plan.of(config)
    beta, wd, warmup = config.momentum, config.weight_decay, config.warmup_examples
    # heavy-ball moments wherever some update has momentum (beta = 0 is a special case)
    heavy = any(p.momentum for p in plan.phases)
    smooth = plan.ramp.lr in ("constant", "step")  # the LR is constant within a phase after warmup

    h = curvatures(cfg.dim)
    hu = h + wd  # curvature seen by the update (L2 weight decay)
    hp = h ** (-cfg.precondition)  # diagonal of the preconditioner H^(-p)
    trace_cov = float(h.sum())  # tr(Σ) of one example's gradient noise
    loss0 = loss(h, np.ones(cfg.dim))
    key = {
        "dim": cfg.dim,
        "mode": cfg.mode,
        "precondition": cfg.precondition,
        "batch_size": B,
        "lr": lr,
        "momentum": beta,
        "weight_decay": wd,
        "warmup_examples": warmup,
        "seed": seed if cfg.mode == "sampled" else None,
        "schedule": None if config.schedule is None else config.schedule.to_dict(),
    }

    # ---- state: fresh or from a checkpoint ------------------------------------------
    ckpt = config.checkpoint
    estimator = NoiseScaleEstimator()
    rng = meas_rng = None
    if ckpt is not None:
        if ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("key") != key:
            raise ValueError("nqm: checkpoint does not belong to this config")
        step, elapsed0 = int(ckpt["step"]), float(ckpt["elapsed"])
        state = {k: np.array(v, dtype=np.float64) for k, v in ckpt["state"].items()}
        estimator.load_state_dict(ckpt["noise_scale"])
    elif config.init_state is not None:  # a branch: another trial's state, this trial's B and LR
        step, elapsed0 = 0, 0.0
        state = adopt_state(config.init_state, key, heavy)
    else:
        step, elapsed0 = 0, 0.0
        # "mean": E[x] (and E[u] with momentum), for the expected distance from x0 = 1
        if cfg.mode == "expected" and not heavy:
            state = {"s": np.ones(cfg.dim), "mean": np.ones(cfg.dim)}
        elif cfg.mode == "expected":
            state = {
                "m": np.stack([np.ones(cfg.dim), np.zeros(cfg.dim), np.zeros(cfg.dim)]),
                "mean": np.stack([np.ones(cfg.dim), np.zeros(cfg.dim)]),
            }
        else:
            state = {"x": np.ones(cfg.dim), "u": np.zeros(cfg.dim)}
    if cfg.mode == "sampled":
        # Training noise and noise-scale measurements use separate streams, so measuring
        # (or how often) never changes the training curve.
        rng, meas_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
        if ckpt is not None:
            rng.bit_generator.state = ckpt["rng"]
            meas_rng.bit_generator.state = ckpt["meas_rng"]

    jumpers: dict[tuple[float, int, float], tuple[_Jumper, _Jumper]] = {}  # per (LR, B, momentum)

    def advance(target: int) -> None:
        with np.errstate(over="ignore", invalid="ignore"):
            for _, end in plan.segments(step, target):  # one batch size, LR scale and momentum each
                advance_phase(end)

    def advance_phase(target: int) -> None:
        nonlocal step
        phase = plan.phase(step)
        b, beta = phase.batch_size, phase.momentum
        var = h / b  # batch noise variance per coordinate
        if cfg.mode == "expected":
            # the step size changes every update in warmup and under a smooth shape
            while step < target and (not smooth or plan.examples(step + 1) < warmup):
                a = plan.lr_at_step(step) * hp
                if not heavy:
                    state["s"] = expected_step(state["s"], a, hu, var)
                    state["mean"] = (1.0 - a * hu) * state["mean"]
                else:
                    state["m"] = expected_momentum_step(state["m"], a, hu, var, beta)
                    state["mean"] = np.einsum("ijd,jd->id", mean_transition(a, hu, beta), state["mean"])
                step += 1
            if step < target:  # constant step size from here: jump
                rate, k = plan.lr_at_step(step), target - step
                a = rate * hp
                if not heavy:
                    state["s"] = expected_jump(state["s"], a, hu, var, k)
                    state["mean"] = (1.0 - a * hu) ** k * state["mean"]
                else:
                    pair = jumpers.setdefault(
                        (rate, b, beta),
                        (_Jumper(momentum_transition(a, hu, var, beta)), _Jumper(mean_transition(a, hu, beta))),
                    )
                    moments = np.concatenate([state["m"], np.ones((1, cfg.dim))])  # (4, dim)
                    state["m"] = pair[0](moments, k)[:3].copy()
                    state["mean"] = pair[1](state["mean"], k)
                step = target
            return
        assert rng is not None and meas_rng is not None  # sampled mode made both
        x, u, sd = state["x"], state["u"], np.sqrt(var)
        while step < target:
            a = plan.lr_at_step(step) * hp
            grad = hu * x
            noise = rng.standard_normal(cfg.dim) * sd
            if cfg.noise_scale_every and step % cfg.noise_scale_every == 0:
                other = meas_rng.standard_normal(cfg.dim) * sd
                estimator.update(*noise_scale_norms(grad, noise, other), b, 2 * b)
            g = grad + noise
            if beta:
                u = beta * u + g
                x = x - a * u
            else:
                x = x - a * g
            step += 1
        state["x"], state["u"] = x, u

    def current_loss() -> float:
        if "s" in state:
            return loss(h, state["s"])
        if "m" in state:
            return loss(h, state["m"][0])
        return loss(h, state["x"] ** 2)

    def distance() -> float:
        """‖x − x0‖ (sampled); expected mode: its root mean square, √Σ(E[x²] − 2E[x] + 1)."""
        if "x" in state:
            return float(np.linalg.norm(state["x"] - 1.0))
        xx = state["s"] if "s" in state else state["m"][0]
        mean = state["mean"] if state["mean"].ndim == 1 else state["mean"][0]
        return math.sqrt(max(float(np.sum(xx - 2.0 * mean + 1.0)), 0.0))

    def noise_scale() -> float | None:
        if not cfg.noise_scale_every:
            return None
        if cfg.mode == "sampled":
            return estimator.b_simple
        # Expected mode: the exact tr(Σ)/E|G|², G = (H + λ) x.
        xx = state["s"] if "s" in state else state["m"][0]
        g2 = float((hu * hu) @ xx)
        return trace_cov / g2 if g2 > 0 and math.isfinite(g2) else None

    start = time.perf_counter()
    for target in plan.eval_steps(cfg.eval_ratio):
        if target <= step:
            continue
        advance(target)
        value = current_loss()
        elapsed = elapsed0 + time.perf_counter() - start
        metrics: dict[str, Any] = {
            "step": step,
            "examples_seen": plan.examples(step),
            "epoch": None,
            "wall_time_s": elapsed,
            "train_loss": value,
            "train_eval_loss": value,
            "val_loss": value,
            "val_accuracy": None,
            "lr_current": plan.lr_at_step(step - 1),
            **plan.current(step),
            "grad_noise_scale": noise_scale(),
            "weight_distance": distance(),
        }
        if not math.isfinite(value) or value > DIVERGENCE_FACTOR * loss0:
            metrics["diverged"] = True
            report(metrics, None)
            return
        checkpoint = {
            "version": CHECKPOINT_VERSION,
            "key": key,
            "step": step,
            "elapsed": elapsed,
            "state": {k: v.copy() for k, v in state.items()},
            "noise_scale": estimator.state_dict(),
        }
        if rng is not None and meas_rng is not None:
            checkpoint["rng"] = rng.bit_generator.state
            checkpoint["meas_rng"] = meas_rng.bit_generator.state
        report(metrics, checkpoint)
