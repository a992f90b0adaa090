"""How a trial's typed config travels through Ray Tune: as plain JSON under one key.

Tune keeps, copies and pickles each trial's ``config`` dict; the sweep puts
``TrialConfig.to_dict()`` under ``CONFIG_KEY`` and every Tune-side reader (adapter,
scheduler, sink, progress) gets the typed config back with ``config_of``.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial

from trainables.contract import TrialConfig

CONFIG_KEY = "trial"
STATE_FILES_KEY = "state_files"
"""Optional beside CONFIG_KEY: ``{"load": path | None, "save": path | None}``, the trainable
state a trial starts from (``TrialConfig.init_state``) and the file it leaves its last
state in when it ends (``orchestrator.branching``; read and written by the adapter)."""


def config_of(trial: Trial | dict[str, Any]) -> TrialConfig:
    """The typed config of a Tune trial (or of the config dict Tune hands a trainable)."""
    config = trial.config if isinstance(trial, Trial) else trial
    return TrialConfig.from_dict(config[CONFIG_KEY])
