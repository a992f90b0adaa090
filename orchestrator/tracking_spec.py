"""The study's ``[tracking]`` table: which experiment trackers the sweep logs every trial to
(``orchestrator.tracking`` does the logging). Validated at launch: a tracker whose package
is not installed is bad input, never an ImportError mid-sweep.

    [tracking]
    mlflow = true          # a file store under RUN_DIR/mlruns, or a tracking URI string
    tensorboard = true
    wandb = "offline"
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import Field

from orchestrator.lr_spec import Strict

# The pip extra that brings each tracker's package (pyproject.toml's optional dependencies).
TRACKER_PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboardX", "wandb": "wandb"}


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class Tracking(Strict):
    """Experiment trackers the sweep also logs to, one run per trial (``orchestrator.tracking``)."""

    mlflow: bool | str = False
    """true: an MLflow file store under RUN_DIR/mlruns; a string: a tracking URI (a path,
    ``sqlite:///...``, ``http://...``)."""
    tensorboard: bool = False
    """true: TensorBoard event files under RUN_DIR/tensorboard."""
    wandb: Literal[False, "offline", "online"] = False
    """"offline": W&B's offline files under RUN_DIR/wandb (``wandb sync`` uploads them);
    "online" logs to the W&B server (needs ``wandb login``); never online unless asked."""
    project: str | None = Field(default=None, min_length=1)
    """MLflow experiment and W&B project name (default: the study's name)."""

    @pydantic.field_validator("mlflow", "tensorboard", "wandb")
    @classmethod
    def _package_installed(cls, v: Any, info: pydantic.ValidationInfo) -> Any:
        # at launch, before anything is written: never an ImportError mid-sweep
        name = str(info.field_name)
        if v is not False and v != "" and not _installed(TRACKER_PACKAGES[name]):
            raise ValueError(f"{TRACKER_PACKAGES[name]} is not installed: pip install 'batchscale[{name}]'")
        if v == "":
            raise ValueError("an empty tracking URI (true: RUN_DIR/mlruns)")
        return v
