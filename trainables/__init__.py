"""Ray-free training functions: the built-ins by registry name, a user's by file or module
(``trainables.registry``).

A trainable is ``train(config: TrialConfig, report: Report) -> None`` (``trainables.contract``:
the typed trial config, with the study's ``[trainable_config]`` as ``config.settings``). It
calls ``report(metrics, checkpoint)`` at each evaluation with the curves columns it knows
(see ``../shared/CONTRACTS.md``) and resumes from ``config.checkpoint`` when given.
Each built-in module also defines ``TrainableConfig``, a pydantic model of the keys a
study's ``[trainable_config]`` may hold, and ``METRICS``, the metrics it reports, so a study
is validated before anything runs (both optional in a user's module).

    from trainables import get
    train = get("fashion_mnist")
    train(TrialConfig(batch_size=128, lr=0.1, ...), lambda metrics, checkpoint=None: print(metrics))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pydantic

from trainables import registry
from trainables.contract import TrialConfig
from trainables.registry import BUILTIN, TrainableRef, load_function, resolve


class Report(Protocol):
    def __call__(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> None: ...


TrainFn = Callable[[TrialConfig, Report], None]


def names() -> list[str]:
    """Registry names of the built-in trainables."""
    return sorted(BUILTIN)


def get(spec: str | TrainableRef) -> TrainFn:
    """The train function of a built-in name, ``FILE.py:FUNCTION`` or ``MODULE:FUNCTION``."""
    return load_function(spec if isinstance(spec, TrainableRef) else resolve(spec))


def preflight(spec: str, settings: pydantic.BaseModel) -> None:
    """Check, before anything starts, what a trainable needs (its data on disk).

    Raises ``FileNotFoundError``, ``ValueError`` or ``UsageError`` with a one-line message.
    """
    registry.preflight(resolve(spec), settings)


def metrics(spec: str) -> tuple[str, ...] | None:
    """The curves metrics a trainable reports (what a study may target or rank by); None
    for a user's trainable that does not declare ``METRICS``."""
    return registry.metrics(resolve(spec))


def train_size(spec: str, settings: pydantic.BaseModel) -> int | None:
    """Training examples per epoch, for ``budget.max_epochs`` (None: the trainable does not say)."""
    return registry.train_size(resolve(spec), settings)


def declares(spec: str, capability: str) -> bool:
    """Whether a trainable's module says ``SUBSETS = True`` (it trains on
    ``config.train_fraction`` of its data), ``BRANCHES = True`` (it starts from
    ``config.init_state``) or ``SCHEDULES = True`` (it follows ``config.schedule``);
    ``registry.CAPABILITIES``."""
    return registry.declares(resolve(spec), capability)


def config_model(spec: str) -> type[pydantic.BaseModel]:
    """The pydantic model that validates a study's ``[trainable_config]`` for ``spec``."""
    return registry.config_model(resolve(spec))
