"""Config keys every trainable shares: the step cap, warmup and the target check.

The flat trial config is fixed by the contract ("trainables"); the orchestrator adds the
study's target as ``target_metric``/``target_mode``/``target_value`` (value None when
``stop_at_target`` is off) so that a trainable can run its end-of-training measurements
on the evaluation that reaches the target.
"""

from __future__ import annotations

import math
from typing import Any


def max_steps(config: dict[str, Any]) -> int:
    """The tighter of ``max_steps`` and ``max_examples / batch_size`` (at least one step)."""
    caps = []
    if config.get("max_steps"):
        caps.append(int(config["max_steps"]))
    if config.get("max_examples"):
        caps.append(max(1, int(config["max_examples"]) // int(config["batch_size"])))
    if not caps:
        raise ValueError("config needs max_steps or max_examples")
    return min(caps)


def target_reached(metrics: dict[str, Any], config: dict[str, Any]) -> bool:
    """Whether this evaluation meets the study's target (False when stopping is off)."""
    value = config.get("target_value")
    metric = config.get("target_metric")
    got = metrics.get(metric) if metric else None
    if value is None or got is None or not math.isfinite(got):
        return False
    return got >= value if config.get("target_mode", "max") == "max" else got <= value


def torch_threads(config: dict[str, Any]) -> int:
    """Intra-op threads for one trial: its CPU share, so packed trials don't oversubscribe."""
    return max(1, math.ceil(float(config.get("cpus_per_trial", 1))))


def lr_at(base_lr: float, examples_seen: int, warmup_examples: int) -> float:
    """Linear warmup from 0 to ``base_lr`` over ``warmup_examples``, then constant.

    Warmup is measured in examples, not steps, so that it means the same amount of data
    at every batch size (Goyal et al. 2017 warm up over 5 epochs).
    """
    if warmup_examples <= 0 or examples_seen >= warmup_examples:
        return base_lr
    return base_lr * max(examples_seen, 1) / warmup_examples
