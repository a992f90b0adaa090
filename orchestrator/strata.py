"""The groups early stopping compares trials within: a ``Stratum`` is (batch size, training
fraction), and their JSON form in a scheduler's saved state (JSON has no tuple keys).

    from orchestrator.strata import dump_groups, load_groups, stratum_name
    stratum_name((512, 0.25)), stratum_name((512, 1.0))     # ('B=512@0.25', 'B=512')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from trainables.contract import TrialConfig

Stratum = tuple[int, float]
"""(batch size, training fraction): the trials one set of rungs compares."""
SHARED: Stratum = (0, 1.0)
"""The one group of a shared (not per-batch-size) scheduler."""


class _Saved(Protocol):
    def state(self) -> dict[str, Any]: ...


def stratum_of(config: TrialConfig) -> Stratum:
    """The stratum of a trial's config."""
    return (config.batch_size, config.train_fraction)


def stratum_name(g: Stratum) -> str:
    """``B=<batch size>``, with ``@<fraction>`` unless it is all of the data."""
    return f"B={g[0]}" + (f"@{g[1]:g}" if g[1] != 1 else "")


def dump_groups(groups: Mapping[Stratum, _Saved]) -> list[list[Any]]:
    """``[batch size, fraction, state]`` per group."""
    return [[b, f, r.state()] for (b, f), r in groups.items()]


def load_groups(saved: list[list[Any]] | dict[str, Any]) -> list[tuple[Stratum, Any]]:
    """The inverse of ``dump_groups``; also reads a run from before training fractions
    (``{batch size: state}``, all of the data)."""
    if isinstance(saved, dict):
        return [((int(b), 1.0), r) for b, r in saved.items()]
    return [((int(b), float(f)), r) for b, f, r in saved]
