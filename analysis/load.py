"""Read a run directory: the study file, the curves dataset and the trials table.

Only ``study.toml`` and ``curves/`` are required (see CONTRACTS.md); without
``trials.parquet`` every trial that has curves counts as ``completed``.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    run = load_run("/tmp/demo")
    run.curves.groupby("batch_size").trial_id.nunique()
    run.target            # Target(metric='val_accuracy', mode='max', value=0.85)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic

from trainables.contract import RunError, Target, read_toml
from trainables.contract import read_curves as contract_read_curves
from trainables.contract import read_trials as contract_read_trials


@dataclass
class Run:
    """A loaded run. ``trials`` is synthesised (all ``completed``) when the file is absent."""

    curves: pd.DataFrame
    trials: pd.DataFrame | None
    study: dict[str, Any]
    run_dir: Path
    trials_synthesised: bool = False

    @property
    def target(self) -> Target:
        return study_target(self.study)

    @property
    def name(self) -> str:
        return str(self.study.get("name", self.run_dir.name))

    @property
    def fractions(self) -> list[float]:
        """The training fractions the curves hold, ascending (``[1.0]`` without the axis)."""
        return sorted({float(f) for f in fractions_of(self.curves)})

    def at_fraction(self, fraction: float) -> Run:
        """The same run with only the trials that trained on ``fraction`` of the data."""
        curves = self.curves[fractions_of(self.curves) == fraction].reset_index(drop=True)
        trials = None if self.trials is None else self.trials[fractions_of(self.trials) == fraction]
        return Run(curves, trials, self.study, self.run_dir, self.trials_synthesised)

    def only(self, trial_ids: pd.Index) -> Run:
        """The same run with only the trials ``trial_ids``."""
        curves = self.curves[self.curves["trial_id"].isin(trial_ids)].reset_index(drop=True)
        trials = None if self.trials is None else self.trials[self.trials["trial_id"].isin(trial_ids)]
        return Run(curves, trials, self.study, self.run_dir, self.trials_synthesised)


def fractions_of(frame: pd.DataFrame) -> pd.Series:
    """The ``train_fraction`` of each row (curves or trials); 1.0 where it is missing or
    null: runs from before ``search.train_fraction`` (and other writers) trained on all the data."""
    if "train_fraction" not in frame.columns:
        return pd.Series(1.0, index=frame.index)
    return pd.to_numeric(frame["train_fraction"], errors="coerce").fillna(1.0)


def study_target(study: dict[str, Any]) -> Target:
    """The ``[target]`` table of a study, validated by the contract's ``Target``."""
    try:
        return Target.model_validate(study.get("target"))
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        key = ".".join(["target", *map(str, err["loc"])])
        raise RunError(f"study.toml: {key}: {err['msg']}") from None


def read_study(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "study.toml"
    if not path.is_file():
        raise RunError(f"{path} is missing")
    return read_toml(path)


def read_curves(curves_dir: Path) -> pd.DataFrame:
    """The curves dataset (``trainables.contract.read_curves``) as one DataFrame."""
    curves = contract_read_curves(curves_dir).to_pandas()
    if curves.empty:
        raise RunError(f"{curves_dir} holds no rows")
    if curves["batch_size"].isna().any():
        raise RunError(f"{curves_dir}: batch_size is null in some rows")
    curves["batch_size"] = curves["batch_size"].astype("int64")
    curves["trial_id"] = curves["trial_id"].astype(str)
    return curves


def synthesise_trials(curves: pd.DataFrame, study_name: str) -> pd.DataFrame:
    """One ``completed`` row per trial in ``curves``, with the contract's columns."""
    g = curves.sort_values(["trial_id", "step"]).groupby("trial_id", sort=True)
    last = g.last()  # last non-null value of each column
    first = g.first()
    n = len(first)

    def col(name: str, frame: pd.DataFrame = first) -> Any:
        return frame[name].to_numpy() if name in frame.columns else np.full(n, np.nan)

    return pd.DataFrame(
        {
            "trial_id": first.index.astype(str),
            "study": col("study") if "study" in first.columns else np.full(n, study_name),
            "batch_size": first["batch_size"].astype("int64").to_numpy(),
            "micro_batch_size": col("micro_batch_size"),
            "lr": first["lr"].astype(float).to_numpy(),
            "seed": col("seed"),
            "optimizer": np.full(n, None, dtype=object),
            "status": np.full(n, "completed"),
            "steps": g["step"].max().to_numpy(),
            "examples_seen": g["examples_seen"].max().to_numpy() if "examples_seen" in curves else np.full(n, np.nan),
            "wall_time_s": g["wall_time_s"].max().to_numpy() if "wall_time_s" in curves else np.full(n, np.nan),
            "final_val_loss": col("val_loss", last),
            "best_val_accuracy": g["val_accuracy"].max().to_numpy() if "val_accuracy" in curves else np.full(n, np.nan),
            "sharpness": np.full(n, np.nan),
            "node": np.full(n, None, dtype=object),
            "config_json": np.full(n, None, dtype=object),
            "error": np.full(n, None, dtype=object),
        }
    )


def read_trials(path: Path) -> pd.DataFrame:
    trials = contract_read_trials(path).to_pandas()
    trials["trial_id"] = trials["trial_id"].astype(str)
    trials["batch_size"] = trials["batch_size"].astype("int64")
    trials["status"] = trials["status"].astype(str)
    return trials


def load_run(run_dir: str | Path) -> Run:
    """Load ``RUN_DIR``: ``study.toml`` (tomllib), ``curves/`` and ``trials.parquet`` if present."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory")
    study = read_study(run_dir)
    target = study_target(study)
    curves = read_curves(run_dir / "curves")
    if target.metric not in curves.columns:
        raise RunError(f"target.metric {target.metric!r} is not a column of curves/")
    trials_path = run_dir / "trials.parquet"
    if trials_path.is_file():
        return Run(curves, read_trials(trials_path), study, run_dir, trials_synthesised=False)
    name = str(study.get("name", run_dir.name))
    return Run(curves, synthesise_trials(curves, name), study, run_dir, trials_synthesised=True)
