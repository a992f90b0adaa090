"""Fashion-MNIST classifiers (an MLP by default, or a small CNN) for batch-size studies.

Data come from Debian's ``dataset-fashion-mnist`` package (IDX files under
``/usr/share/datasets/fashion-mnist``) or any directory holding the same four files; they
are held as tensors in memory. The last ``val_size`` examples of a fixed permutation of
the training set are the validation split (the test set stays untouched).

    python -c "
    from trainables import get
    from trainables.contract import Target, TrialConfig
    get('fashion_mnist')(TrialConfig(batch_size=128, micro_batch_size=128, lr=0.1, seed=0,
        optimizer='sgd', momentum=0.9, weight_decay=0.0, warmup_examples=0, max_steps=None,
        max_examples=60000, cpus=1, target=Target(value=0.85), stop_at_target=True),
        lambda m, checkpoint=None: print(m))"
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainables import Report
from trainables.classifier import ClassificationData, LoopSettings, train_classifier
from trainables.contract import TrialConfig
from trainables.idx import read_idx

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
SUBSETS = True  # trains on config.train_fraction of the training set (trainables.subsets)
SCHEDULES = True  # follows config.schedule (trainables.schedule.Plan)
BRANCHES = True  # starts from another trial's weights and optimizer state (config.init_state)
METRICS = ("train_loss", "train_eval_loss", "train_eval_accuracy", "val_loss", "val_accuracy")
# Per-pixel statistics of the Fashion-MNIST training set, so inputs are roughly unit scale.
MEAN, STD = 0.2860, 0.3530


class TrainableConfig(BaseModel):
    """``[trainable_config]`` of a fashion_mnist study."""

    model_config = ConfigDict(extra="forbid")

    model: Literal["mlp", "cnn"] = "mlp"
    """mlp: 784-hidden-hidden-10 with ReLU; cnn: two 3x3 conv layers and a linear head."""
    hidden: int = Field(default=256, gt=0)
    """Width of the MLP's hidden layers (channels of the CNN's second conv are hidden/8)."""
    data_dir: str = DEFAULT_DATA_DIR
    """Directory with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]."""
    val_size: int = Field(default=5000, gt=0)
    """Examples held out of the training set for validation."""
    eval_ratio: float = Field(default=1.05, gt=1.0, le=2.0)
    """Consecutive evaluation steps differ by at most this factor (1.05: crossings known to 5%)."""
    divergence_factor: float = Field(default=10.0, gt=1.0)
    """A trial diverges when its training loss exceeds this multiple of its first loss."""
    noise_scale_every: int = Field(default=10, ge=0)
    """Measure the gradient noise scale every this many steps (0: never)."""
    sharpness_examples: int = Field(default=1024, ge=0)
    """Training examples (a fixed subset) for the end-of-training sharpness (0: skip it)."""
    sharpness_iters: int = Field(default=20, ge=1, le=100)
    """Power-iteration steps (Hessian-vector products) for the sharpness."""
    probe_examples: int = Field(default=2048, ge=0)
    """Examples in each window of the end-of-training forgetting probe (0: skip it;
    ``trainables.forgetting``)."""


def data_files(data_dir: str | Path) -> list[Path]:
    """The IDX files of the training set in ``data_dir`` (plain or .gz); missing ones raise."""
    out = []
    for name in FILES:
        found = [p for p in (Path(data_dir) / name, Path(data_dir) / f"{name}.gz") if p.is_file()]
        if not found:
            raise FileNotFoundError(
                f"trainable_config.data_dir: no {name}[.gz] in {data_dir}; install Debian's "
                "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass "
                "--set trainable_config.data_dir=DIR with the IDX files"
            )
        out.append(found[0])
    return out


def train_size(settings: TrainableConfig) -> int:
    """Training examples per epoch (the labels file's count less ``val_size``), for a
    study's ``budget.max_epochs``."""
    return len(read_idx(data_files(settings.data_dir)[1])) - settings.val_size


def preflight(settings: TrainableConfig) -> None:
    """Raise ``FileNotFoundError`` (one line) when the data are not where the study says."""
    data_files(settings.data_dir)


@functools.lru_cache(maxsize=2)
def load_data(data_dir: str, val_size: int) -> ClassificationData:
    """Normalised tensors, cached per process (Ray reuses worker processes across trials)."""
    images_path, labels_path = data_files(data_dir)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if len(images) != len(labels) or val_size >= len(images):
        raise ValueError(f"{data_dir}: {len(images)} images, {len(labels)} labels, val_size {val_size}")
    # The split is fixed (seed 0), independent of the trial seed: every trial validates on
    # the same examples.
    order = np.random.default_rng(0).permutation(len(images))
    x = torch.from_numpy(images[order].astype(np.float32) / 255.0).sub_(MEAN).div_(STD).unsqueeze(1)
    y = torch.from_numpy(labels[order].astype(np.int64))
    n = len(x) - val_size
    return ClassificationData(x[:n], y[:n], x[n:], y[n:])


def build_model(settings: TrainableConfig) -> nn.Module:
    if settings.model == "mlp":
        h = settings.hidden
        return nn.Sequential(nn.Flatten(), nn.Linear(784, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10))
    c = max(8, settings.hidden // 8)
    return nn.Sequential(
        nn.Conv2d(1, c // 2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c // 2, c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c * 7 * 7, 10),
    )


def train(config: TrialConfig, report: Report) -> None:
    """Train one trial; see the module docstring and ``trainables.classifier``."""
    settings = TrainableConfig.model_validate(config.settings)
    data = load_data(settings.data_dir, settings.val_size)
    train_classifier(
        config,
        report,
        data,
        lambda: build_model(settings),
        LoopSettings(**settings.model_dump(include=set(LoopSettings.__dataclass_fields__))),
    )
