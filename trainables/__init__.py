"""Ray-free training functions, looked up by registry name.

A trainable is ``train(config: TrialConfig, report: Report) -> None`` (``trainables.contract``:
the typed trial config, with the study's ``[trainable_config]`` as ``config.settings``). It
calls ``report(metrics, checkpoint)`` at each evaluation with the curves columns it knows
(see ``../shared/CONTRACTS.md``) and resumes from ``config.checkpoint`` when given.
Each trainable module also defines ``TrainableConfig``, a pydantic model of the keys a
study's ``[trainable_config]`` may hold, and ``METRICS``, the metrics it reports, so a study
is validated before anything runs.

    from trainables import get
    train = get("fashion_mnist")
    train(TrialConfig(batch_size=128, lr=0.1, ...), lambda metrics, checkpoint=None: print(metrics))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

import pydantic

from trainables.contract import TrialConfig


class Report(Protocol):
    def __call__(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> None: ...


TrainFn = Callable[[TrialConfig, Report], None]

# Modules are imported on first use: torch is slow to import and the CLI validates
# studies of every trainable without needing all of them.
_MODULES: dict[str, str] = {
    "fashion_mnist": "trainables.fashion_mnist",
    "nqm": "trainables.nqm",
}


def names() -> list[str]:
    """Registry names of the trainables this installation has."""
    return sorted(_MODULES)


def _module(name: str) -> ModuleType:
    if name not in _MODULES:
        raise KeyError(f"unknown trainable {name!r}; known: {', '.join(names())}")
    return importlib.import_module(_MODULES[name])


def get(name: str) -> TrainFn:
    """The ``train`` function registered under ``name``."""
    return _module(name).train


def preflight(name: str, settings: pydantic.BaseModel) -> None:
    """Check, before anything starts, what a trainable needs (its data on disk).

    Raises ``FileNotFoundError`` or ``ValueError`` with a one-line message.
    """
    check = getattr(_module(name), "preflight", None)
    if check is not None:
        check(settings)


def metrics(name: str) -> tuple[str, ...]:
    """The curves metrics a trainable reports (what a study may target or rank by)."""
    return tuple(_module(name).METRICS)


def config_model(name: str) -> type[pydantic.BaseModel]:
    """The pydantic model that validates a study's ``[trainable_config]`` for ``name``."""
    return _module(name).TrainableConfig
