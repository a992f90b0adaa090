"""Shared helpers of the tests (plain functions; pytest fixtures live in conftest.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from trainables.contract import Target, TrialConfig
from trainables.idx import write_idx

REPO = Path(__file__).resolve().parent.parent


def write_tiny_fashion_mnist(directory: Path, n: int = 1200, seed: int = 0) -> Path:
    """A learnable stand-in for Fashion-MNIST in the same IDX format: class k is a bright
    horizontal band at rows 2k..2k+8 plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 90, (n, 28, 28)).astype(np.uint8)
    for k in range(10):
        images[labels == k, 2 * k : 2 * k + 8, :] += 150
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte.gz", images)
    write_idx(directory / "train-labels-idx1-ubyte.gz", labels)
    return directory


def launch(
    *args: str, cwd: Path = REPO, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m orchestrator.launch ARGS`` in a subprocess (``env`` added to os.environ)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.launch", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Test-only defaults for calling a trainable directly with a few keys (a study supplies every
# field; these never reach a real trial).
_TEST_DEFAULTS: dict[str, Any] = dict(
    seed=0,
    optimizer="sgd",
    momentum=0.0,
    weight_decay=0.0,
    warmup_examples=0,
    max_steps=None,
    max_examples=None,
    cpus=1,
)


def trial(config: dict[str, Any]) -> TrialConfig:
    """A ``TrialConfig`` from a flat test dict: its fields by name, ``_checkpoint`` as the
    checkpoint, ``target_metric``/``target_mode``/``target_value`` as a stop-at target, and
    every other key as the trainable's settings (``schedule``: a ``Ramp`` is the field, a
    string the accelerator loop's own setting)."""
    flat = dict(config)
    checkpoint = flat.pop("_checkpoint", None)
    names = {f.name for f in dataclasses.fields(TrialConfig)}
    if isinstance(flat.get("schedule"), str):  # the accelerator loop's own setting, not a Ramp
        names.discard("schedule")
    kw = {**_TEST_DEFAULTS, **{k: v for k, v in flat.items() if k in names}}
    kw.setdefault("micro_batch_size", kw["batch_size"])
    value = flat.pop("target_value", None)
    target = Target(
        metric=flat.pop("target_metric", "val_loss"),
        mode=flat.pop("target_mode", "min"),
        value=0.0 if value is None else value,
    )
    settings = {k: v for k, v in flat.items() if k not in names}
    return TrialConfig(**kw, target=target, stop_at_target=value is not None, settings=settings, checkpoint=checkpoint)


def run_trainable(name: str, config: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the built-in trainable ``name`` in this process on ``trial(config)``: every row it
    reported, and beside each row the checkpoint that came with it ({} when none)."""
    from trainables import get

    rows: list[dict[str, Any]] = []
    ckpts: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> None:
        rows.append(dict(metrics))
        ckpts.append(checkpoint or {})

    get(name)(trial(config), report)
    return rows, ckpts
