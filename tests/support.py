"""Shared helpers of the tests (plain functions; pytest fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

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


def launch(*args: str, cwd: Path = REPO, timeout: float = 600,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m orchestrator.launch ARGS`` in a subprocess (``env`` added to os.environ)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator.launch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
