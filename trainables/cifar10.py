"""CIFAR-10 with an airbench-class network and recipe (Jordan 2024, "94% on CIFAR-10 in
3.29 seconds"; after Page 2018, the Myrtle ResNet-9).

The net: a frozen 2×2 patch-whitening conv (its 24 filters are ± the eigenvectors of the
training images' patch covariance, its bias trained for the first ``whiten_bias_examples``),
GELU, then one group per entry of ``widths`` (conv3×3 → maxpool2 → BN → GELU → conv3×3 →
BN → GELU; convs Dirac-initialised, BN gains frozen at 1), a global max-pool and a linear
head scaled by ``logit_scale``. Nesterov SGD, label smoothing, test-time flips and shifts.

The whole dataset lives on the device as uint8; each update's batch is gathered, flipped
and translated there (no DataLoader), its randomness a function of (seed, step), so a
resumed trial and a batch split into micro-batches see the same images. bf16 autocast and
channels_last on a GPU.

Per 1024 examples, so that a study can move the batch size: the LR is the trial's (the
study centres its grid on the linear rule at ``base_batch = 1024``, airbench's 11.5 per
1024 summed examples being lr = 1.5 on the mean gradient), and ``weight_decay_per_1024`` is
the weight decay one update of 1024 examples applies at the schedule's peak, whatever the
LR (airbench's 0.0153 is 0.002 here); an update of B examples applies B/1024 times that.

Data: the CIFAR-10 python batches (``data_batch_1`` … ``data_batch_5``, ``test_batch``:
pickled dicts of b"data", uint8 N×3072, and b"labels") in ``data_dir``; the test batch is
the validation split (the 94% target is test accuracy).

    python -m trainables.cifar10_bench --data ~/cifar-10-batches-py --bench    # time to 94%
    python -m trainables.cifar10_bench --synthetic --bench --steps 20 --batch-size 256
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trainables import Report
from trainables.contract import TrialConfig
from trainables.distributed import DataParallel
from trainables.loop import (
    EpochOrder,
    LoopConfig,
    Parts,
    Schedule,
    autocast,
    device,
    generator,
    local_part,
    micro_slices,
    run,
)
from trainables.resnet import GhostBatchNorm2d
from trainables.subsets import train_subset

FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
SUBSETS = True  # trains on config.train_fraction of the training images (trainables.subsets)
METRICS = ("train_loss", "train_eval_loss", "train_eval_accuracy", "val_loss", "val_accuracy")
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]) * 255
STD = torch.tensor([0.2470, 0.2435, 0.2616]) * 255
EVAL_CHUNK = 2000


class TrainableConfig(LoopConfig):
    """``[trainable_config]`` of a cifar10 study (and the LoopConfig keys)."""

    data_dir: str = "data/cifar-10-batches-py"
    """Directory with the CIFAR-10 python batches data_batch_1..5 and test_batch."""
    widths: list[int] = Field(default=[64, 256, 256], min_length=1)
    """Channels of each conv group (airbench94: 64, 256, 256)."""
    ghost_batch: int = Field(default=0, ge=0)
    """Ghost batch norm over this many examples (0: statistics of the whole micro-batch)."""
    bn_momentum: float = Field(default=0.6, gt=0.0, lt=1.0)
    """Weight of the old running BN statistics at each update (torch momentum = 1 - this)."""
    label_smoothing: float = Field(default=0.2, ge=0.0, lt=1.0)
    """Label smoothing of the training loss."""
    weight_decay_per_1024: float = Field(default=0.002, ge=0.0)
    """Weight decay per 1024 examples at the schedule's peak, independent of the LR."""
    bias_lr_scale: float = Field(default=64.0, gt=0.0)
    """The BN and whitening biases train at this multiple of the LR (their decay unchanged)."""
    whiten_bias_examples: int = Field(default=150_000, ge=0)
    """The whitening conv's bias trains for this many examples, then freezes."""
    nesterov: bool = True
    """Nesterov momentum (the study's momentum; airbench: 0.85)."""
    flip: bool = True
    """Random horizontal flips."""
    translate: int = Field(default=2, ge=0, le=8)
    """Random translations of up to this many pixels (reflection padded)."""
    tta: Literal[0, 1, 2] = 2
    """Test-time augmentation: 0 none, 1 flips, 2 flips and one-pixel shifts."""
    logit_scale: float = Field(default=1 / 9, gt=0.0)
    """The head's output is multiplied by this."""
    channels_last: bool = True
    """channels_last memory format on a GPU."""
    train_eval: bool = True
    """Also evaluate a fixed training subset as large as the test split (train_eval_*)."""
    schedule: Schedule = "linear"
    """LR decay after warmup (airbench: linear to 0)."""


class Arrays(NamedTuple):
    """uint8 images N×3×32×32 and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ValueError(
            f"trainable_config.data_dir: {path} is not a CIFAR-10 python batch "
            f"(a pickled dict with b'data' and b'labels'): {type(e).__name__}"
        ) from None
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y) or (len(y) and not 0 <= y.min() <= y.max() <= 9):
        raise ValueError(
            f"trainable_config.data_dir: {path}: b'data' must be N×3072 uint8 with N labels "
            f"in 0..9, got {x.shape} and {len(y)} labels"
        )
    return x.reshape(-1, 3, 32, 32), y


def preflight(settings: TrainableConfig) -> None:
    """Raise FileNotFoundError / ValueError (one line) unless data_dir holds the six batches."""
    missing = [n for n in FILES if not (Path(settings.data_dir) / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"trainable_config.data_dir: {settings.data_dir} has no {', '.join(missing)} "
            "(the CIFAR-10 python batches, cifar-10-python.tar.gz unpacked)"
        )
    load_data(settings.data_dir)


@functools.lru_cache(maxsize=1)
def load_data(data_dir: str) -> Arrays:
    """The six batches as arrays (cached per process)."""
    parts = [_read_batch(Path(data_dir) / n) for n in FILES]
    return Arrays(np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]), *parts[5])


def synthetic(n_train: int = 50_000, n_val: int = 10_000, seed: int = 0) -> Arrays:
    """Learnable stand-in data of CIFAR's shapes: class k brightens channel k % 3 in a band."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n_train + n_val)
    x = rng.integers(0, 120, (n_train + n_val, 3, 32, 32), dtype=np.uint8)
    for k in range(10):
        x[y == k, k % 3, 3 * k : 3 * k + 6, :] += 120
    return Arrays(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


class ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, s: TrainableConfig) -> None:
        super().__init__(
            _conv(c_in, c_out), nn.MaxPool2d(2), _bn(c_out, s), nn.GELU(), _conv(c_out, c_out), _bn(c_out, s), nn.GELU()
        )


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(c_in, c_out)])
    return conv


def _bn(c: int, s: TrainableConfig) -> nn.Module:
    bn = GhostBatchNorm2d(c, s.ghost_batch, eps=1e-12, momentum=1 - s.bn_momentum)
    bn.weight.requires_grad_(False)
    return bn


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def build_model(s: TrainableConfig, whiten_from: torch.Tensor | None = None) -> nn.Sequential:
    """The network; ``whiten_from`` (normalised training images) sets the whitening filters."""
    whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
    layers: list[nn.Module] = [whiten, nn.GELU()]
    c = 24
    for width in s.widths:
        layers.append(ConvGroup(c, width, s))
        c = width
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, 10, bias=False), Scale(s.logit_scale)]
    if whiten_from is not None:
        patches = whiten_from.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 12).double()
        eigval, eigvec = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigvec.T / torch.sqrt(eigval + 5e-4)[:, None]).flip(0).reshape(12, 3, 2, 2)
        with torch.no_grad():
            whiten.weight.copy_(torch.cat([filters, -filters]).float())
    whiten.weight.requires_grad_(False)
    return nn.Sequential(*layers)


def normalise(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 images to normalised float32 (channels_last if asked)."""
    mean, std = MEAN.to(x.device)[None, :, None, None], STD.to(x.device)[None, :, None, None]
    out = (x.float() - mean) / std
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def train(config: TrialConfig, report: Report) -> None:
    """Train one trial on the CIFAR-10 batches in ``data_dir``."""
    settings = TrainableConfig.model_validate(config.settings)
    train_on(config, report, load_data(settings.data_dir))


def train_on(config: TrialConfig, report: Report, data: Arrays, timers: dict[str, float] | None = None) -> None:
    """Train one trial on ``data`` (the CIFAR-10 arrays, or synthetic ones for a bench), on
    its ``train_fraction`` subset of the training images (``trainables.subsets``)."""
    if config.train_fraction < 1:
        keep = train_subset(len(data.y_train), config.train_fraction).numpy()
        data = Arrays(data.x_train[keep], data.y_train[keep], data.x_val, data.y_val)
    s = TrainableConfig.model_validate(config.settings)
    torch.set_num_threads(config.threads)
    dev = device(config)
    cl = s.channels_last and dev.type == "cuda"
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    t = s.translate
    x_pad = torch.from_numpy(np.pad(data.x_train, ((0, 0), (0, 0), (t, t), (t, t)), mode="reflect")).to(dev)
    y_train = torch.from_numpy(data.y_train).to(dev)
    x_val, y_val = torch.from_numpy(data.x_val).to(dev), torch.from_numpy(data.y_val).to(dev)
    n = len(y_train)
    whiten_from = normalise(x_pad[:5000, :, t : t + 32, t : t + 32].cpu(), False)
    torch.manual_seed(config.seed)
    model = build_model(s, whiten_from).to(dev)
    if cl:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = _optimizer(model, config, s)
    order = EpochOrder(n, config.seed)
    fixed = torch.from_numpy(np.random.default_rng(1).permutation(n)[: len(y_val)]).to(dev)
    rows = torch.arange(32, device=dev)

    def batches(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        part = local_part(config.batch_size, config)  # this rank's share (all of it today)
        gen = generator(config.seed, 1 << 20, step)
        shift = torch.randint(0, 2 * t + 1, (2, config.batch_size), generator=gen)[:, part].to(dev)
        flip = (torch.rand(config.batch_size, generator=gen) < (0.5 if s.flip else 0.0))[part].to(dev)
        idx = order.batch(step, config.batch_size)[part].to(dev)
        r, c = (shift[0][:, None] + rows)[:, :, None], (shift[1][:, None] + rows)[:, None, :]
        x = x_pad[idx[:, None, None], :, r, c].permute(0, 3, 1, 2)  # B×32×32×3 gathered: channels_last
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        x = normalise(x, cl)
        y = y_train[idx]
        return [(x[sl], y[sl]) for sl in micro_slices(len(idx), config.micro_batch_size)]

    def loss(net: nn.Module, mb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(net(mb[0]).float(), mb[1], label_smoothing=s.label_smoothing)

    def evaluate(dp: DataParallel) -> dict[str, float]:
        val = dp.share(torch.arange(len(y_val), device=dev))  # each rank a share, summed
        loss_sum, correct = dp.sum(*_evaluate(model, x_val[val], y_val[val], s, cl))
        out = {"val_loss": loss_sum / len(y_val), "val_accuracy": correct / len(y_val)}
        if s.train_eval:
            sub = dp.share(fixed)
            loss_sum, correct = dp.sum(*_evaluate(model, x_pad[sub, :, t : t + 32, t : t + 32], y_train[sub], s, cl))
            out.update(train_eval_loss=loss_sum / len(fixed), train_eval_accuracy=correct / len(fixed))
        return out

    def before_update(step: int) -> None:
        if (step + 1) * config.batch_size > s.whiten_bias_examples:
            opt.param_groups[0]["lr_scale"] = 0.0

    parts = Parts(model, opt, batches, loss, evaluate, n, before_update=before_update, compile=s.compile)
    run(config, report, parts, s, dev)
    if timers is not None:
        timers.update(parts.timers)


def _optimizer(model: nn.Sequential, config: TrialConfig, s: TrainableConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov) in three groups: the whitening bias, the BN biases (both at
    bias_lr_scale × LR) and the weights; each group's coupled decay is set so that one
    update removes weight_decay_per_1024 × B/1024 of a weight at the peak LR."""
    whiten_bias = model[0].bias
    biases = [p for p in model.parameters() if p.requires_grad and p.ndim == 1 and p is not whiten_bias]
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    decay = s.weight_decay_per_1024 * config.batch_size / 1024
    groups: list[dict[str, Any]] = [
        {"params": [whiten_bias], "lr_scale": s.bias_lr_scale},
        {"params": biases, "lr_scale": s.bias_lr_scale},
        {"params": weights, "lr_scale": 1.0},
    ]
    for g in groups:
        g["weight_decay"] = decay / (config.lr * g["lr_scale"]) + config.weight_decay
        g["lr"] = config.lr * g["lr_scale"]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=s.nesterov and config.momentum > 0)


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: TrainableConfig, cl: bool) -> tuple[float, float]:
    """Summed cross-entropy and correct predictions of the test-time-augmented logits."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), EVAL_CHUNK):
        xb = normalise(x[i : i + EVAL_CHUNK], cl)
        with autocast(xb.device, s.bf16):
            logits = _tta(model, xb, s.tta).float()
        loss_sum += F.cross_entropy(logits, y[i : i + EVAL_CHUNK], reduction="sum").item()
        correct += int((logits.argmax(1) == y[i : i + EVAL_CHUNK]).sum().item())
    return loss_sum, correct


def _tta(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    def mirrored(z: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(z) + model(z.flip(3))) if level >= 1 else model(z)

    out = mirrored(x)
    if level >= 2:
        pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
        h, w = x.shape[2:]
        out = 0.5 * out + 0.25 * (mirrored(pad[:, :, :h, :w]) + mirrored(pad[:, :, 2:, 2:]))
    return out
