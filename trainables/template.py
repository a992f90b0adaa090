"""A trainable of your own: copy this file, replace the model and the data, keep the contract.

    python -m orchestrator.launch --new-trainable mylab/train.py    # writes this file there
    # in a study file:  trainable = "mylab/train.py:train"
    python -m orchestrator.launch --study mystudy.toml --budget smoke

As it is, it trains a logistic regression on a small synthetic task (two Gaussian blobs
per class), so a study runs end to end before you change anything. The contract (README
"Your model"): ``train(config, report)``; ``config`` is the typed trial config (batch size,
micro-batch size, LR, seed, optimizer settings, caps, target, this study's
``[trainable_config]`` as ``config.settings``, the checkpoint to resume from); ``report``
takes each evaluation's metrics (at least step, examples_seen, train_loss and the study's
target and early-stopping metrics) and a checkpoint dict. Import no Ray; from this project
only the public helpers ``trainables.schedule`` (``Plan``: per update the batch size, LR and
momentum of the study's ``[schedule]``, and when to evaluate), ``trainables.weights``
(``DistanceFromInit``) and ``trainables.subsets`` (``train_subset``, for a study's
``search.train_fraction``)."""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainables.schedule import Plan
from trainables.subsets import train_subset
from trainables.weights import DistanceFromInit

# What report() carries: a study's target and early-stopping metrics must be among these.
METRICS = ("train_loss", "val_loss", "val_accuracy")
# This trainable trains on config.train_fraction of its data, so a study may sweep that axis,
# and follows config.schedule update by update, so a study may give it a [schedule].
SUBSETS = True
SCHEDULES = True


class TrainableConfig(BaseModel):
    """This trainable's ``[trainable_config]`` table (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    features: int = Field(default=20, gt=0)
    """Input dimensions of the synthetic task."""
    examples: int = Field(default=4096, gt=0)
    """Training examples of the synthetic task."""
    val_examples: int = Field(default=1024, gt=0)
    """Validation examples."""
    eval_ratio: float = Field(default=1.1, gt=1.0)
    """Consecutive evaluation steps differ by at most this factor."""


def make_data(settings: TrainableConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed synthetic task (the same for every trial): replace with your data."""
    gen = torch.Generator().manual_seed(0)
    n = settings.examples + settings.val_examples
    y = torch.randint(0, 2, (n,), generator=gen)
    centres = torch.randn(2, settings.features, generator=gen)
    x = centres[y] + 1.5 * torch.randn(n, settings.features, generator=gen)
    k = settings.examples
    return x[:k], y[:k], x[k:], y[k:]


def train(config: Any, report: Any) -> None:
    """Train one trial as ``config`` says; call ``report`` at each evaluation."""
    settings = TrainableConfig.model_validate(config.settings)
    torch.set_num_threads(max(1, math.ceil(config.cpus)))
    x_train, y_train, x_val, y_val = make_data(settings)
    keep = train_subset(len(x_train), config.train_fraction)  # nested, the same for every trial
    x_train, y_train = x_train[keep], y_train[keep]
    torch.manual_seed(config.seed)
    model = nn.Linear(settings.features, 2)  # replace with your model
    distance = DistanceFromInit(model)  # ‖θ − θ₀‖, the curves' weight_distance (before a resume)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    step, wall_before = 0, 0.0
    if config.checkpoint is not None:  # resume: everything that makes the next step the same
        model.load_state_dict(config.checkpoint["model"])
        opt.load_state_dict(config.checkpoint["optimizer"])
        gen.set_state(config.checkpoint["data_order"])
        step, wall_before = config.checkpoint["step"], config.checkpoint["wall_time_s"]
    plan = Plan.of(config)  # batch size, LR (warmup, schedule) and momentum of every update
    start = time.perf_counter()
    losses: list[float] = []
    for next_eval in (s for s in plan.eval_steps(settings.eval_ratio) if s > step):
        while step < next_eval:
            batch, micro = plan.batch(step), plan.micro(step)
            k = batch // micro  # micro-batches per update
            idx = torch.randint(0, len(x_train), (batch,), generator=gen)
            for g in opt.param_groups:
                g["lr"], g["momentum"] = plan.lr_at_step(step), plan.momentum_at(step)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for j in range(k):  # accumulate the MEAN over micro-batches: a sum would scale the LR by k
                part = idx[j * micro : (j + 1) * micro]
                loss = F.cross_entropy(model(x_train[part]), y_train[part]) / k
                loss.backward()
                total += loss.item()
            opt.step()
            step += 1
            losses.append(total)
        with torch.no_grad():
            logits = model(x_val)
            val_loss = F.cross_entropy(logits, y_val).item()
            val_acc = (logits.argmax(1) == y_val).float().mean().item()
        metrics = {
            "step": step,
            "examples_seen": plan.examples(step),
            "epoch": plan.examples(step) / len(x_train),
            "wall_time_s": wall_before + time.perf_counter() - start,
            "train_loss": sum(losses) / len(losses),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr_current": opt.param_groups[0]["lr"],
            **plan.current(step),  # batch_size_current, momentum_current
            "weight_distance": distance(model),
        }
        losses = []
        checkpoint = {
            "model": copy.deepcopy(model.state_dict()),
            "optimizer": copy.deepcopy(opt.state_dict()),
            "data_order": gen.get_state(),
            "step": step,
            "wall_time_s": metrics["wall_time_s"],
        }
        report(metrics, checkpoint)
