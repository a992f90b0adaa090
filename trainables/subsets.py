"""The training subsets of ``search.train_fraction`` (Myrtle.ai, "How to train your ResNet
2": an LR sweep on 1/8, 1/4, 1/2 and all of the training set tells curvature from
forgetting).

A fraction's subset is the first ``ceil(fraction * n)`` examples of one permutation of the
training set seeded by ``SUBSET_SEED`` alone: the subsets are nested (1/8 inside 1/4
inside 1/2) and the same at every batch size, learning rate and trial seed, so a sweep
compares LRs on the same data. A trainable that supports the axis declares
``SUBSETS = True`` in its module (the study is refused otherwise, since the trial would
silently train on all of its data) and trains on ``x[train_subset(len(x), f)]``:

    from trainables.subsets import train_subset
    idx = train_subset(55_000, config.train_fraction)   # sorted int64 indices
    x_train, y_train = x_train[idx], y_train[idx]

Everything that counts epochs counts them over the subset: ``epoch`` is examples seen over
the subset's size.
"""

from __future__ import annotations

import math

import torch

SUBSET_SEED = 2
"""Seed of the one permutation every subset is a prefix of (not any trial's seed)."""


def train_subset(n: int, fraction: float) -> torch.Tensor:
    """Sorted indices of the ``fraction`` subset of ``n`` training examples (all of them at 1)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))
    return perm[: max(1, math.ceil(fraction * n))].sort().values
