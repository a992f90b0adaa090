"""The training loop of the accelerator trainables (cifar10, imagenet, gpt): schedules,
bf16 autocast, averaged accumulation, evaluations, checkpoints and resume.

A trainable hands ``run`` its model, optimizer and three functions: ``batches(step)``, the
micro-batches of one optimizer update (already on the device); ``loss(model, micro)``,
the mean loss of one micro-batch; and ``evaluate()``, the evaluation metrics. Each update
is ``batch_size / micro_batch_size`` forward/backward passes whose losses are divided by
that number, so the gradient is the batch *mean* (a sum would scale the LR).

The learning rate rises linearly over ``warmup_examples`` (``trainables.schedule.lr_at``)
and then decays over the horizon (``decay_examples``, by default the trial's step cap):
``constant``, ``linear`` (to ``end_factor``), ``cosine`` (to ``end_factor``), ``step``
(×``step_gamma`` at each of ``milestones``, fractions of the horizon; Goyal et al.'s
30/60/80 of 90 epochs is the default) or ``wsd`` (warmup-stable-decay: constant, then
linear to ``end_factor`` over the last ``decay_fraction``).

Every evaluation records ``weight_distance``, ‖θ − θ₀‖₂ from the model as the trainable built
it (``trainables.weights``); the last one runs the forgetting probe (``trainables.forgetting``)
on the micro-batches ``batches(step)`` gives the probed updates.

Divergence (a non-finite training loss, or one above ``divergence_factor`` times the first)
is checked every ``CHECK_EVERY`` updates, not every one, so the GPU queue never waits for
a loss on the host; the trial then reports a last row with ``diverged: True`` and stops.

Data-parallel (``config.world_size`` N > 1, ``trainables.distributed``): every rank draws
the same global batch and keeps ``local_part`` of it; the model runs as DDP, gradients
averaged once per update (``no_sync`` on all but the last micro-batch); losses and the
divergence check are averaged over ranks, evaluations sharded and summed
(``evaluate(dp)``), so every rank sees the same row; rank 0 reports with a checkpoint,
the others report the row alone and keep in step.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainables import Report
from trainables.contract import TrialConfig
from trainables.distributed import DataParallel, device_of, process_group
from trainables.forgetting import probe_windows
from trainables.schedule import decay_factor, eval_steps, lr_at
from trainables.weights import DistanceFromInit

CHECK_EVERY = 8
Schedule = Literal["constant", "linear", "cosine", "step", "wsd"]


class LoopConfig(BaseModel):
    """Keys of ``[trainable_config]`` every accelerator trainable shares."""

    model_config = ConfigDict(extra="forbid")

    schedule: Schedule = "cosine"
    """LR decay after warmup: constant, linear, cosine, step or wsd (module docstring)."""
    end_factor: float = Field(default=0.0, ge=0.0, le=1.0)
    """LR at the end of a linear, cosine or wsd decay, as a fraction of the peak."""
    milestones: list[float] = Field(default=[1 / 3, 2 / 3, 8 / 9])
    """step schedule: fractions of the horizon at which the LR is multiplied by step_gamma."""
    step_gamma: float = Field(default=0.1, gt=0.0, le=1.0)
    """step schedule: factor at each milestone."""
    decay_fraction: float = Field(default=0.2, gt=0.0, le=1.0)
    """wsd schedule: the last fraction of the horizon over which the LR decays."""
    decay_examples: int | None = Field(default=None, gt=0)
    """Horizon of the decay in examples (None: the trial's step cap times its batch size)."""
    eval_ratio: float = Field(default=1.05, gt=1.0, le=2.0)
    """Consecutive evaluation steps differ by at most this factor."""
    divergence_factor: float = Field(default=10.0, gt=1.0)
    """A trial diverges when its training loss exceeds this multiple of its first loss."""
    bf16: bool = True
    """bf16 autocast on a GPU (CPU runs stay float32)."""
    compile: bool = False
    """torch.compile the model (GPU; slow to start, so off for short trials)."""
    probe_examples: int = Field(default=2048, ge=0)
    """Examples in each window of the end-of-training forgetting probe (0: skip it;
    ``trainables.forgetting``)."""


def lr_factor(s: LoopConfig, progress: float) -> float:
    """The decay multiplier at ``progress`` in [0, 1] of the horizon after warmup."""
    p = min(max(progress, 0.0), 1.0)
    if s.schedule in ("linear", "cosine"):
        return decay_factor(s.schedule, p, s.end_factor)
    if s.schedule == "step":
        return s.step_gamma ** sum(p >= m for m in s.milestones)
    if s.schedule == "wsd":
        start = 1.0 - s.decay_fraction
        return 1.0 if p <= start else s.end_factor + (1.0 - s.end_factor) * (1.0 - p) / s.decay_fraction
    return 1.0


def scheduled_lr(config: TrialConfig, s: LoopConfig, step: int) -> float:
    """The learning rate of update ``step + 1`` (warmup in examples, then the decay)."""
    seen = (step + 1) * config.batch_size
    warm = config.warmup_examples
    horizon = s.decay_examples or config.step_cap * config.batch_size
    progress = (seen - warm) / max(horizon - warm, 1)
    return lr_at(config.lr, seen, warm) * (lr_factor(s, progress) if seen > warm else 1.0)


def device(config: TrialConfig) -> torch.device:
    """The trial's device: ``config.device``, else CUDA when the process sees a GPU (Ray's
    CUDA_VISIBLE_DEVICES shows a trial only its own)."""
    return device_of(config)


def autocast(dev: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; nothing on CPU (float32 keeps CPU tests exact)."""
    if dev.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def local_part(n: int, config: TrialConfig) -> slice:
    """This rank's contiguous share of a global batch of ``n`` examples (all of it at N = 1)."""
    share = n // config.world_size
    return slice(config.rank * share, (config.rank + 1) * share)


def micro_slices(n: int, micro: int) -> list[slice]:
    """``n`` examples in micro-batches of ``micro`` (a divisor of n)."""
    return [slice(i, i + micro) for i in range(0, n, micro)]


def to_cpu(obj: Any) -> Any:
    """A copy of a (nested) state dict with every tensor on the CPU: a checkpoint."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices and kernels only (not on biases and norm gains)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


@dataclass
class Parts:
    """What ``run`` needs of a trainable."""

    model: nn.Module
    """The module whose state is checkpointed (not a compiled wrapper)."""
    optimizer: torch.optim.Optimizer
    """Its optimizer; a group's ``lr_scale`` (default 1) multiplies the scheduled LR."""
    batches: Callable[[int], list[Any]]
    """Micro-batches of update ``step`` (0-based), on the device."""
    loss: Callable[[Any, Any], torch.Tensor]
    """Mean loss of one micro-batch under the model (called under autocast)."""
    evaluate: Callable[[DataParallel], dict[str, float]]
    """Evaluation metrics of the current weights (val_loss, ...), the same on every rank."""
    epoch_examples: int
    """Training examples per epoch (for the epoch column)."""
    extra: Callable[[int], dict[str, Any]] = lambda step: {}
    """Extra columns of a row at ``step`` (tokens_seen)."""
    data_state: Callable[[], Any] = lambda: None
    """The data order's state, checkpointed."""
    load_data_state: Callable[[Any], None] = lambda state: None
    """Restore it on resume."""
    before_update: Callable[[int], None] = lambda step: None
    """Called before update ``step`` (e.g. to freeze a layer after some examples)."""
    grad_clip: float = 0.0
    """Clip the global gradient norm (0: no clipping)."""
    compile: bool = False
    """Run the forward pass through ``torch.compile``."""
    timers: dict[str, float] = field(default_factory=dict)
    """Filled by ``run``: train_time_s (updates only) and updates (this run)."""


def run(config: TrialConfig, report: Report, parts: Parts, s: LoopConfig, dev: torch.device) -> None:
    """Train to the step cap (or the target), reporting at each evaluation step."""
    with process_group(config) as dp:
        _run(config, report, parts, s, dev, dp)


def _run(config: TrialConfig, report: Report, parts: Parts, s: LoopConfig, dev: torch.device, dp: DataParallel) -> None:
    model, opt = parts.model, parts.optimizer
    distance = DistanceFromInit(model)  # θ₀: the trainable built the model from the seed
    if config.checkpoint is not None:
        model.load_state_dict(config.checkpoint["model"])  # before DDP copies rank 0's weights
    ddp = dp.wrap(model)
    net = torch.compile(ddp) if parts.compile else ddp
    step, wall_before, train_before, first = 0, 0.0, 0.0, None
    if (ckpt := config.checkpoint) is not None:
        opt.load_state_dict(ckpt["optimizer"])
        parts.load_data_state(ckpt["data"])
        step, wall_before, first = ckpt["step"], ckpt["wall_time_s"], ckpt["first_loss"]
        train_before = ckpt["train_time_s"]
    start, first_step = time.perf_counter(), step
    train_time, lr_now = train_before, scheduled_lr(config, s, max(step - 1, 0))
    losses: list[torch.Tensor] = []  # per update, on the device, since the last evaluation
    checked = 0
    model.train()
    for next_eval in (e for e in eval_steps(config.step_cap, s.eval_ratio) if e > step):
        t0 = time.perf_counter()
        while step < next_eval:
            parts.before_update(step)
            lr_now = scheduled_lr(config, s, step)
            for g in opt.param_groups:
                g["lr"] = lr_now * g.get("lr_scale", 1.0)
            opt.zero_grad(set_to_none=True)
            micro = parts.batches(step)
            total = torch.zeros((), device=dev)
            for j, mb in enumerate(micro):
                with dp.no_sync(ddp, last=j == len(micro) - 1):
                    with autocast(dev, s.bf16):
                        loss = parts.loss(net, mb)
                    (loss / len(micro)).backward()
                total += loss.detach().float() / len(micro)
            if parts.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), parts.grad_clip)
            opt.step()
            step += 1
            losses.append(total)
            if len(losses) - checked >= CHECK_EVERY or step == next_eval:
                bad, first = _diverged(dp.mean(*torch.stack(losses[checked:]).tolist()), first, s.divergence_factor)
                checked = len(losses)
                if bad is not None:
                    report(
                        {
                            **_row(config, parts, step, wall_before + time.perf_counter() - start, lr_now),
                            "train_loss": bad,
                            "diverged": True,
                        }
                    )
                    return
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        train_time += time.perf_counter() - t0
        metrics = parts.evaluate(dp)
        model.train()
        (train_loss,) = dp.mean(torch.stack(losses).mean().item())
        row: dict[str, Any] = {
            **_row(config, parts, step, wall_before + time.perf_counter() - start, lr_now),
            "train_loss": train_loss,
            "train_time_s": train_time,
            "weight_distance": distance(model),
            **metrics,
        }
        losses, checked = [], 0
        final = step >= config.step_cap or config.ends_at(row)
        if final:  # every rank: the probe's losses are averaged over them
            row.update(forgetting_probe(config, parts, s, dev, dp, step, row.get("val_loss")))
        if not dp.is_main:  # only rank 0's report counts; the others keep in step
            report(row)
        else:
            report(
                row,
                {
                    "model": to_cpu(model.state_dict()),
                    "optimizer": to_cpu(opt.state_dict()),
                    "data": parts.data_state(),
                    "step": step,
                    "wall_time_s": row["wall_time_s"],
                    "train_time_s": train_time,
                    "first_loss": first,
                },
            )
        if final:
            break
    parts.timers.update(train_time_s=train_time - train_before, updates=step - first_step)


def forgetting_probe(
    config: TrialConfig, parts: Parts, s: LoopConfig, dev: torch.device, dp: DataParallel, steps: int, heldout: Any
) -> dict[str, float | None]:
    """The probe's columns (``trainables.forgetting``) for the final weights after ``steps``
    updates, on the micro-batches ``parts.batches`` gave those updates (in eval mode, as
    the held-out loss); nothing when ``probe_examples`` is 0."""
    if s.probe_examples <= 0:
        return {}
    windows = probe_windows(steps, config.batch_size, parts.epoch_examples, s.probe_examples)
    model = parts.model

    @torch.no_grad()
    def loss_on(updates: range) -> float:
        model.eval()
        losses = []
        for j in updates:
            for mb in parts.batches(j):
                with autocast(dev, s.bf16):
                    losses.append(parts.loss(model, mb).float())
        model.train()
        (mean,) = dp.mean(torch.stack(losses).mean().item())  # equal micro-batches and shares
        return mean

    return {
        "probe_recent_loss": loss_on(windows.recent),
        "probe_early_loss": None if windows.early is None else loss_on(windows.early),
        "probe_early_age_epochs": windows.early_age_epochs,
        "probe_heldout_loss": None if heldout is None else float(heldout),
    }


def _diverged(values: list[float], first: float | None, factor: float) -> tuple[float | None, float | None]:
    """(the first bad loss or None, the first loss of the trial)."""
    first = values[0] if first is None else first
    for v in values:
        if not math.isfinite(v) or v > factor * first:
            return v, first
    return None, first


def _row(config: TrialConfig, parts: Parts, step: int, wall: float, lr_now: float) -> dict[str, Any]:
    return {
        "step": step,
        "examples_seen": step * config.batch_size,
        "epoch": step * config.batch_size / parts.epoch_examples,
        "wall_time_s": wall,
        "lr_current": lr_now,
        **parts.extra(step),
    }


class EpochOrder:
    """The example indices of each update's global batch: epochs of a permutation seeded by
    (seed, epoch), batch after batch; a function of the step alone, so resuming needs
    nothing but the step."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._cache: tuple[int, torch.Tensor] | None = None

    def perm(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, torch.randperm(self.n, generator=generator(self.seed, epoch)))
        return self._cache[1]

    def batch(self, step: int, size: int) -> torch.Tensor:
        pos = torch.arange(step * size, (step + 1) * size)
        epochs = pos // self.n
        return torch.cat([self.perm(int(e))[pos[epochs == e] % self.n] for e in torch.unique(epochs)])


def generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded by (seed, keys...): the randomness of one epoch or one update."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
