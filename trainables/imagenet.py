"""ImageNet classification with ResNet-50 (``trainables.resnet``: torchvision's
architecture, random init), as Goyal et al. 2017 train it at large batch sizes.

SGD with momentum under the linear rule (the study centres its LR grid on 0.1 × B/256),
gradual warmup over ``warmup_examples`` (5 epochs: 6,405,835 examples), a step (30/60/80 of
90 epochs) or cosine decay, label smoothing, zero-initialised last BN gain of each block;
from ``lars_from_batch`` (8192) on, LARS (You et al. 2017) replaces SGD. bf16 autocast and
channels_last on a GPU. The image size is a key (224; tests use 32-64 px).

Data (``trainables.images``): ``data_dir/train`` and ``data_dir/val`` as class folders of
JPEGs or tar shards, optionally staged to node-local disk at trial start; DataLoader
workers and pinned memory from the trial's CPUs; top-1 on the validation split. Each
update's global batch is drawn by ``loop.EpochOrder`` and this rank keeps its part
(``loop.local_part``: all of it until data-parallel workers exist).

    python -m trainables.imagenet --data /datasets/imagenet --bench --steps 100
    python -m trainables.imagenet --synthetic --bench --steps 5 --batch-size 8 --set image_size=64
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainables import Report, bench, images
from trainables.contract import Target, TrialConfig
from trainables.distributed import DataParallel
from trainables.loop import EpochOrder, LoopConfig, Parts, Schedule, autocast, device, local_part, param_groups, run
from trainables.optim import make_optimizer
from trainables.resnet import resnet50

METRICS = ("train_loss", "val_loss", "val_accuracy")
MEAN = torch.tensor([0.485, 0.456, 0.406]) * 255
STD = torch.tensor([0.229, 0.224, 0.225]) * 255
TRAIN_IMAGES = 1_281_167


class TrainableConfig(LoopConfig):
    """``[trainable_config]`` of an imagenet study (and the LoopConfig keys)."""

    data_dir: str = "data/imagenet"
    """Directory with train/ and val/: class folders of JPEGs or NNNNNN.jpg + NNNNNN.cls tar shards."""
    image_size: int = Field(default=224, ge=16)
    """Side of the training crops and validation centre crops, in pixels."""
    num_classes: int = Field(default=1000, gt=1)
    """Classes of the head (at least the data's)."""
    width: int = Field(default=64, gt=0)
    """Channels of the stem (64 in ResNet-50)."""
    layers: list[int] = Field(default=[3, 4, 6, 3], min_length=1, max_length=4)
    """Bottleneck blocks per stage (ResNet-50: 3, 4, 6, 3)."""
    ghost_batch: int = Field(default=0, ge=0)
    """Ghost batch norm over this many examples (0: statistics of the whole micro-batch)."""
    zero_init_residual: bool = True
    """Start each block's last BN gain at 0 (Goyal et al.)."""
    label_smoothing: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Label smoothing of the training loss."""
    lars_from_batch: int = Field(default=8192, ge=0)
    """Batches of this size and more train with LARS instead of SGD (0: never)."""
    decay_norm_and_bias: bool = False
    """Apply weight decay to BN gains and biases too (Goyal et al. do; off by default)."""
    workers: int | None = Field(default=None, ge=0)
    """DataLoader worker processes (None: the trial's CPUs minus one)."""
    stage: bool = False
    """Copy the tar shards to node-local disk ($SLURM_TMPDIR, else /tmp) at trial start."""
    stage_dir: str | None = None
    """Where to stage instead of $SLURM_TMPDIR or /tmp."""
    val_examples: int | None = Field(default=None, gt=0)
    """Evaluate on this many validation images (a fixed subset; None: all)."""
    eval_batch_size: int = Field(default=256, gt=0)
    """Images per validation forward pass."""
    channels_last: bool = True
    """channels_last memory format on a GPU."""
    schedule: Schedule = "step"
    """LR decay after warmup (Goyal et al.: step, x0.1 at 1/3, 2/3 and 8/9 of the horizon)."""


def preflight(settings: TrainableConfig) -> None:
    """Raise FileNotFoundError / ValueError (one line) unless the data are readable."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise ValueError("trainable_config.data_dir: reading JPEGs needs Pillow (pip install pillow)") from None
    images.check(settings.data_dir, settings.num_classes)
    if settings.stage and images.layout(settings.data_dir, "train") != "shards":
        raise ValueError(
            f"trainable_config.stage: only tar shards are staged; {settings.data_dir}/train holds class folders"
        )


def build_model(s: TrainableConfig) -> nn.Module:
    return resnet50(s.num_classes, s.width, s.layers, s.ghost_batch, s.zero_init_residual)


def to_input(x: torch.Tensor, dev: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 B×H×W×3 from the loader to normalised float B×3×H×W on the device."""
    x = x.to(dev, non_blocking=True).permute(0, 3, 1, 2).float()
    x = (x - MEAN.to(dev)[None, :, None, None]) / STD.to(dev)[None, :, None, None]
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def train(config: TrialConfig, report: Report) -> None:
    """Train one trial on ``data_dir`` (staged first if asked)."""
    s = TrainableConfig.model_validate(config.settings)
    root = images.stage(s.data_dir, s.stage_dir) if s.stage else s.data_dir
    train_set = images.Images(images.load_split(root, "train"), s.image_size, train=True)
    val_split = images.load_split(root, "val")
    val_set = images.Images(val_split, s.image_size, train=False)
    train_on(config, report, train_set, val_set)


def _optimizer(model: nn.Module, config: TrialConfig, s: TrainableConfig) -> torch.optim.Optimizer:
    name = "lars" if s.lars_from_batch and config.batch_size >= s.lars_from_batch else config.optimizer
    groups: Any = (
        [{"params": list(model.parameters()), "weight_decay": config.weight_decay}]
        if s.decay_norm_and_bias
        else param_groups(model, config.weight_decay)
    )
    return make_optimizer(name, groups, config.lr, config.momentum, config.weight_decay)


def train_on(
    config: TrialConfig, report: Report, train_set: Dataset, val_set: Dataset, timers: dict[str, float] | None = None
) -> None:
    """Train one trial on two datasets of (uint8 H×W×3, label) items keyed (index, seed)."""
    s = TrainableConfig.model_validate(config.settings)
    torch.set_num_threads(config.threads)
    dev = device(config)
    cl = s.channels_last and dev.type == "cuda"
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    workers = s.workers if s.workers is not None else max(0, config.threads - 1)
    pin = dev.type == "cuda"
    torch.manual_seed(config.seed)
    model = build_model(s).to(dev)
    if cl:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = _optimizer(model, config, s)
    n_train = len(cast(Any, train_set))
    order = EpochOrder(n_train, config.seed)
    n_val = len(cast(Any, val_set))
    val_idx = (
        torch.randperm(n_val, generator=torch.Generator().manual_seed(0))[: s.val_examples].sort().values
        if s.val_examples
        else torch.arange(n_val)
    ).tolist()
    stream: list[Any] = [None, 0]  # [iterator, next step it yields]

    def batches(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if stream[0] is None or stream[1] != step:
            sampler = images.StepBatches(
                order,
                step,
                config.batch_size,
                config.micro_batch_size,
                local_part(config.batch_size, config),
                config.seed,
            )
            stream[0] = iter(
                DataLoader(
                    train_set,
                    batch_sampler=sampler,
                    num_workers=workers,
                    pin_memory=pin,
                    prefetch_factor=4 if workers else None,
                    persistent_workers=False,
                )
            )
        part = local_part(config.batch_size, config)
        k = (part.stop - part.start) // config.micro_batch_size
        out = [next(cast(Iterator[Any], stream[0])) for _ in range(k)]
        stream[1] = step + 1
        return [(to_input(x, dev, cl), y.to(dev, non_blocking=True)) for x, y in out]

    def loss(net: nn.Module, mb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(net(mb[0]).float(), mb[1], label_smoothing=s.label_smoothing)

    @torch.no_grad()
    def evaluate(dp: DataParallel) -> dict[str, float]:
        model.eval()
        mine = dp.share(torch.tensor(val_idx)).tolist()  # each rank decodes a share, summed
        keys = [[(i, 0) for i in mine[j : j + s.eval_batch_size]] for j in range(0, len(mine), s.eval_batch_size)]
        loader = DataLoader(val_set, batch_sampler=keys, num_workers=workers, pin_memory=pin)
        loss_sum, correct = 0.0, 0
        for x, y in loader:
            y = y.to(dev, non_blocking=True)
            with autocast(dev, s.bf16):
                logits = model(to_input(x, dev, cl)).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum().item())
        total, right = dp.sum(loss_sum, correct)
        return {"val_loss": total / len(val_idx), "val_accuracy": right / len(val_idx)}

    parts = Parts(model, opt, batches, loss, evaluate, n_train, compile=s.compile)
    try:
        run(config, report, parts, s, dev)
    finally:
        stream[0] = None  # ends the loader's workers
    if timers is not None:
        timers.update(parts.timers)


def main(argv: list[str] | None = None) -> int:
    """``python -m trainables.imagenet --bench --steps N``: images/s and MFU; saved as JSON."""
    p = argparse.ArgumentParser(prog="python -m trainables.imagenet", description=main.__doc__)
    bench.add_arguments(p)
    p.add_argument("--lr", type=float, help="peak LR (default 0.1 × B/256, the linear rule)")
    args = p.parse_args(argv)
    if not args.bench:
        p.error("nothing to do: pass --bench")
    s = bench.settings(TrainableConfig, args)
    batch, steps = args.batch_size or 256, args.steps or 50
    if args.synthetic:
        train_set: Dataset = images.Synthetic(max(batch * steps, 1), s.image_size, s.num_classes)
        val_set: Dataset = images.Synthetic(min(batch, 1024), s.image_size, s.num_classes)
    else:
        try:
            preflight(s)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        train_set = images.Images(images.load_split(s.data_dir, "train"), s.image_size, train=True)
        val_set = images.Images(images.load_split(s.data_dir, "val"), s.image_size, train=False)
    settings = {**s.model_dump(), "eval_ratio": 2.0, "val_examples": s.val_examples or min(batch, 1024)}
    # evaluations at updates 1, 2, 4, ..., steps: throughput is timed from the end of update 1
    config = TrialConfig(
        batch_size=batch,
        micro_batch_size=args.micro_batch_size or batch,
        lr=args.lr or 0.1 * batch / 256,
        seed=0,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=5e-5,
        warmup_examples=0,
        max_steps=steps,
        max_examples=None,
        cpus=torch.get_num_threads(),
        target=Target(value=1.0),
        stop_at_target=False,
        settings=settings,
    )
    dev = device(config)
    rows: list[dict[str, Any]] = []
    timers: dict[str, float] = {}
    train_on(config, lambda m, checkpoint=None: rows.append(m), train_set, val_set, timers)
    first, last = rows[0], rows[-1]
    timed = max(last["train_time_s"] - first["train_time_s"], 1e-9)
    per_s = (last["step"] - first["step"]) * batch / timed if last["step"] > first["step"] else batch / timed
    flops = 3 * bench.forward_flops(build_model(s), torch.zeros(2, 3, s.image_size, s.image_size))
    peak, peak_source = bench.peak_flops(dev, args.peak_tflops)
    record = {
        "benchmark": "imagenet resnet50"
        if (s.width, s.layers) == (64, [3, 4, 6, 3])
        else f"imagenet resnet (width {s.width}, layers {s.layers})",
        "data": "synthetic" if args.synthetic else s.data_dir,
        "image_size": s.image_size,
        "batch_size": batch,
        "micro_batch_size": config.micro_batch_size,
        "steps": timers["updates"],
        "optimizer": "lars" if s.lars_from_batch and batch >= s.lars_from_batch else "sgd",
        "images_per_s": round(per_s, 2),
        "timed_updates": last["step"] - first["step"],
        "timed_s": round(timed, 3),
        "train_gflop_per_image": round(flops / 1e9, 4),
        "resnet50_224px_reference_gflop": 24.5,
        "achieved_tflops": round(flops * per_s / 1e12, 5),
        "mfu": None if peak is None else round(flops * per_s / peak, 5),
        "peak_source": peak_source,
        "workers": s.workers if s.workers is not None else max(0, math.ceil(config.cpus) - 1),
        "environment": bench.environment(dev),
    }
    bench.save("imagenet", record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
