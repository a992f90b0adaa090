"""The training loop of the torch classification trainables (data held in memory).

One optimizer update = one batch of ``batch_size`` examples (of a ``[schedule]`` that grows
it, ``Plan.batch(step)``; ``trainables.schedule``), run as ``batch_size / micro_batch_size``
forward/backward passes whose gradients are *averaged* (each micro-batch
loss is divided by the number of micro-batches): a sum would multiply the effective
learning rate by that number.

Evaluations fall on log-spaced steps (``trainables.schedule``); each measures the validation
split and a fixed training subset of the same size (``train_eval_*``: the generalization gap
compares the same weights on both, where ``train_loss`` is the running mean since the last
evaluation, taken while the weights moved). A trial whose training loss
becomes non-finite or exceeds ``divergence_factor`` times its first loss reports one last
row with ``diverged: True`` and stops.

Every ``noise_scale_every`` steps the loop measures the gradient noise scale (McCandlish et
al. 2018, App. A) from the squared gradient norm of the first micro-batch (B_small) and of
the whole batch (B_big); without accumulation that step runs as two half batches, which is
the same update. On its last evaluation (step cap or target) it measures the sharpness:
the top Hessian eigenvalue of the training loss on a fixed subset (Keskar et al. 2016).
Every evaluation also records ``weight_distance``, ‖θ − θ₀‖₂ (``trainables.weights``); the
last one runs the forgetting probe (``trainables.forgetting``) on the batches ``_BatchStream``
drew.

Data-parallel (``config.world_size`` N > 1, ``trainables.distributed``): every rank draws
the same global batch and trains on its contiguous share of it, ``batch_size / N``
examples in micro-batches of ``micro_batch_size``; gradients stay local (``no_sync``)
until the share's last micro-batch, whose backward averages them over ranks, so each
update is the single-process one. Training losses are averaged over ranks, evaluations
are sharded and their sums all-reduced: every rank sees the same numbers and stops at the
same step. The noise scale's small batch is each rank's first micro-batch (its squared
norm averaged over ranks); the sharpness and the checkpoints are rank 0's, whose weights
every rank shares.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables import Report
from trainables.contract import TrialConfig
from trainables.distributed import DataParallel, process_group
from trainables.forgetting import probe_windows
from trainables.noise_scale import NoiseScaleEstimator, grad_sq_norm
from trainables.optim import make_optimizer, set_hyper
from trainables.schedule import Plan
from trainables.sharpness import fixed_subset, top_hessian_eigenvalue
from trainables.subsets import train_subset
from trainables.weights import DistanceFromInit

EVAL_CHUNK = 4096


@dataclass
class ClassificationData:
    """Training and validation tensors: float inputs, int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    def to(self, device: torch.device) -> ClassificationData:
        return ClassificationData(*(t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val)))


@dataclass
class LoopSettings:
    """The loop's knobs that come from a trainable's ``TrainableConfig``."""

    eval_ratio: float = 1.05
    divergence_factor: float = 10.0
    noise_scale_every: int = 10
    sharpness_examples: int = 1024
    sharpness_iters: int = 20
    probe_examples: int = 2048


class _BatchStream:
    """Indices of successive batches: epochs of a seeded permutation, resumable."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.gen = torch.Generator().manual_seed(seed)
        self.buffer = torch.empty(0, dtype=torch.long)

    def next(self, size: int) -> torch.Tensor:
        while len(self.buffer) < size:
            self.buffer = torch.cat([self.buffer, torch.randperm(self.n, generator=self.gen)])
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    @classmethod
    def replay(cls, n: int, seed: int, size: int, updates: range) -> torch.Tensor:
        """The indices a fresh stream gives ``updates`` (0-based) of batches of ``size``."""
        stream = cls(n, seed)
        for _ in range(updates.start):
            stream.next(size)
        return torch.cat([stream.next(size) for _ in updates])

    def state(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "buffer": self.buffer.clone()}

    def load(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.buffer = state["buffer"].clone()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dp: DataParallel | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split (with ``dp``: each rank
    measures its share, the sums are all-reduced)."""
    n = len(x)
    if dp is not None:
        x, y = dp.share(x), dp.share(y)
    model.eval()
    loss_sum, correct = 0.0, 0.0
    for i in range(0, len(x), EVAL_CHUNK):
        logits = model(x[i : i + EVAL_CHUNK])
        loss_sum += F.cross_entropy(logits, y[i : i + EVAL_CHUNK], reduction="sum").item()
        correct += (logits.argmax(1) == y[i : i + EVAL_CHUNK]).sum().item()
    model.train()
    if dp is not None:
        loss_sum, correct = dp.sum(loss_sum, correct)
    return loss_sum / n, correct / n


def accumulate_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    micro_batch_size: int,
    noise: NoiseScaleEstimator | None = None,
    dp: DataParallel | None = None,
) -> float:
    """Backward of the mean loss over ``x`` in micro-batches; returns that mean loss.

    With ``noise``, also feeds the estimator one (|G_small|², |G_big|²) pair. With ``dp``
    (N > 1), ``x`` is this rank's share and ``model`` its ``dp.wrap``: the gradient left
    in ``.grad`` and the loss returned are those of the whole global batch.
    """
    if noise is not None and micro_batch_size == len(x):
        if len(x) < 2 or len(x) % 2:
            noise = None  # no two equal halves: skip this measurement
        else:
            micro_batch_size = len(x) // 2
    k = len(x) // micro_batch_size
    total = 0.0
    g_small_sq = 0.0
    for j in range(k):
        sl = slice(j * micro_batch_size, (j + 1) * micro_batch_size)
        # gradients of all but the last micro-batch stay on this rank (no_sync)
        with contextlib.nullcontext() if dp is None else dp.no_sync(model, last=j == k - 1):
            loss = F.cross_entropy(model(x[sl]), y[sl])
            (loss / k).backward()
        total += loss.item() / k
        if noise is not None and j == 0:
            # .grad holds g_small / k after the first of k averaged micro-batches
            g_small_sq = grad_sq_norm(p.grad for p in model.parameters()) * k * k
    world = 1
    if dp is not None and dp.distributed:
        # one all-reduce: the global batch's mean loss (and |G_small|² averaged over ranks)
        world = dp.world_size
        if noise is not None:
            total, g_small_sq = dp.mean(total, g_small_sq)
        else:
            (total,) = dp.mean(total)
    if noise is not None:
        g_big_sq = grad_sq_norm(p.grad for p in model.parameters())
        noise.update(g_small_sq, g_big_sq, micro_batch_size, len(x) * world)
    return total


def sharpness(model: nn.Module, data: ClassificationData, settings: LoopSettings) -> float | None:
    """Top Hessian eigenvalue of the training loss on a fixed subset (None when disabled)."""
    if settings.sharpness_examples <= 0:
        return None
    idx = fixed_subset(len(data.x_train), min(settings.sharpness_examples, len(data.x_train)))
    x, y = data.x_train[idx], data.y_train[idx]
    return top_hessian_eigenvalue(
        lambda: F.cross_entropy(model(x), y), list(model.parameters()), max_iter=settings.sharpness_iters
    )


def forgetting_probe(
    model: nn.Module, data: ClassificationData, config: TrialConfig, steps: int, settings: LoopSettings, heldout: float
) -> dict[str, float | None]:
    """The probe's columns (``trainables.forgetting``) for the final weights after ``steps``
    updates; nothing when ``probe_examples`` is 0 or the batch size changed on the way
    (the probe's windows assume one)."""
    if settings.probe_examples <= 0 or Plan.of(config).grows:
        return {}
    n = len(data.x_train)
    windows = probe_windows(steps, config.batch_size, n, settings.probe_examples)

    def loss_on(updates: range) -> float:
        idx = _BatchStream.replay(n, config.seed, config.batch_size, updates).to(data.x_train.device)
        return evaluate(model, data.x_train[idx], data.y_train[idx])[0]

    return {
        "probe_recent_loss": loss_on(windows.recent),
        "probe_early_loss": None if windows.early is None else loss_on(windows.early),
        "probe_early_age_epochs": windows.early_age_epochs,
        "probe_heldout_loss": heldout,
    }


def train_classifier(
    config: TrialConfig,
    report: Report,
    data: ClassificationData,
    build_model: Callable[[], nn.Module],
    settings: LoopSettings,
) -> None:
    """Train ``build_model()`` on ``data`` as the trial ``config`` says (as one rank of
    ``config.world_size``: see the module docstring), on its ``train_fraction`` subset
    of the training set (``trainables.subsets``)."""
    if config.train_fraction < 1:
        idx = train_subset(len(data.x_train), config.train_fraction)
        data = ClassificationData(data.x_train[idx], data.y_train[idx], data.x_val, data.y_val)
    with process_group(config) as dp:
        _train(config, report, data, build_model, settings, dp)


def _train(
    config: TrialConfig,
    report: Report,
    data: ClassificationData,
    build_model: Callable[[], nn.Module],
    settings: LoopSettings,
    dp: DataParallel,
) -> None:
    torch.set_num_threads(config.threads)
    seed, plan = config.seed, Plan.of(config)
    cap = plan.cap
    n_train = len(data.x_train)

    # Ray hides GPUs a trial did not ask for (CUDA_VISIBLE_DEVICES), so "available" means
    # "assigned to this trial" (trainables.distributed.device_of).
    device = dp.device
    data = data.to(device)
    torch.manual_seed(seed)
    model = build_model().to(device)
    opt = make_optimizer(config.optimizer, model.parameters(), config.lr, config.momentum, config.weight_decay)
    if (init := config.init_state) is not None:  # a branch: the weights and momentum it starts from
        model.load_state_dict(init["model"])
        opt.load_state_dict(init["optimizer"])
    # θ₀: the seeded model (a branch: its branch point), rebuilt the same on resume
    distance = DistanceFromInit(model)
    stream = _BatchStream(n_train, seed)
    # the generalization gap compares train and validation loss of the same weights (Keskar
    # et al.): a fixed training subset, as large as the validation split, at every evaluation
    train_eval = fixed_subset(n_train, len(data.x_val), seed=1).to(device)
    noise = NoiseScaleEstimator()
    step, wall_before, first_loss = 0, 0.0, None
    if (ckpt := config.checkpoint) is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        stream.load(ckpt["stream"])
        noise.load_state_dict(ckpt["noise"])
        step, wall_before, first_loss = ckpt["step"], ckpt["wall_time_s"], ckpt["first_loss"]
    every = settings.noise_scale_every
    # every rank restored the same weights; DDP (N > 1) averages gradients in backward
    net = dp.wrap(model)
    distributed = dp if dp.distributed else None

    start = time.perf_counter()
    loss_sum, loss_n = 0.0, 0
    model.train()
    for next_eval in (s for s in plan.eval_steps(settings.eval_ratio) if s > step):
        while step < next_eval:
            micro = plan.micro(step)
            idx = dp.share(stream.next(plan.batch(step)))  # the same global batch on every rank
            lr_now = plan.lr_at_step(step)
            set_hyper(opt, lr_now, plan.momentum_at(step))
            opt.zero_grad(set_to_none=True)
            measure = noise if every > 0 and step % every == 0 else None
            loss = accumulate_gradients(net, data.x_train[idx], data.y_train[idx], micro, measure, distributed)
            first_loss = loss if first_loss is None else first_loss
            opt.step()
            step += 1
            if not math.isfinite(loss) or loss > settings.divergence_factor * first_loss:
                # a row of its own (the step after the last evaluation), not evaluated
                report(
                    {
                        **_row(plan, step, n_train, wall_before + time.perf_counter() - start, lr_now),
                        "train_loss": loss,
                        "diverged": True,
                    }
                )
                return
            loss_sum, loss_n = loss_sum + loss, loss_n + 1
        val_loss, val_acc = evaluate(model, data.x_val, data.y_val, distributed)
        train_eval_loss, train_eval_acc = evaluate(
            model, data.x_train[train_eval], data.y_train[train_eval], distributed
        )
        row = {
            **_row(plan, step, n_train, wall_before + time.perf_counter() - start, lr_now),
            "train_loss": loss_sum / max(loss_n, 1),
            "train_eval_loss": train_eval_loss,
            "train_eval_accuracy": train_eval_acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "grad_noise_scale": noise.b_simple,
            "weight_distance": distance(model),
        }
        loss_sum, loss_n = 0.0, 0
        final = step >= cap or config.ends_at(row)
        if final and dp.is_main:  # the same weights on every rank: rank 0 measures them
            row["sharpness"] = sharpness(model, data, settings)
            row.update(forgetting_probe(model, data, config, step, settings, val_loss))
        if not dp.is_main:  # only rank 0's report counts; the others just keep in step
            report(row)
            if final:
                return
            continue
        checkpoint = {
            "model": copy.deepcopy(model.state_dict()),
            "optimizer": copy.deepcopy(opt.state_dict()),
            "stream": stream.state(),
            "step": step,
            "wall_time_s": row["wall_time_s"],
            "first_loss": first_loss,
            "noise": noise.state_dict(),
        }
        report(row, checkpoint)
        if final:
            return


def _row(plan: Plan, step: int, n_train: int, wall: float, lr_now: float) -> dict[str, Any]:
    return {
        "step": step,
        "examples_seen": plan.examples(step),
        "epoch": plan.examples(step) / n_train,
        "wall_time_s": wall,
        "lr_current": lr_now,
        **plan.current(step),
    }
