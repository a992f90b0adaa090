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

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

class RunError(ValueError):
    """A run directory that cannot be analysed; the message is one line naming the problem."""


@dataclass(frozen=True)
class Target:
    """The goal for steps-to-target: ``metric`` first reaches ``value`` (``mode`` max/min)."""

    metric: str
    mode: str
    value: float

    def reached(self, x: np.ndarray) -> np.ndarray:
        """Elementwise: does ``x`` meet the goal? NaN never does."""
        with np.errstate(invalid="ignore"):
            return x >= self.value if self.mode == "max" else x <= self.value


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


def study_target(study: dict[str, Any]) -> Target:
    """The ``[target]`` table of a study, checked; raises RunError naming the bad key."""
    t = study.get("target")
    if not isinstance(t, dict):
        raise RunError("study.toml has no [target] table")
    metric, mode, value = t.get("metric"), t.get("mode", "max"), t.get("value")
    if not isinstance(metric, str) or not metric:
        raise RunError("study.toml: target.metric must be a column name")
    if mode not in ("max", "min"):
        raise RunError(f"study.toml: target.mode must be 'max' or 'min', not {mode!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunError("study.toml: target.value must be a number")
    return Target(metric=metric, mode=mode, value=float(value))


def read_study(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "study.toml"
    if not path.is_file():
        raise RunError(f"{path} is missing")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise RunError(f"{path}: {e}") from None


def read_curves(curves_dir: Path) -> pd.DataFrame:
    """The curves dataset as one DataFrame, ``batch_size`` as int64.

    ``batch_size`` is the hive partition key; the sink leaves it out of the files, other writers may not.
    Declaring the key int64 lets the two merge, and unifying the files' own schemas keeps
    columns that only some files have (or that one file wrote as all-null).
    """
    if not curves_dir.is_dir():
        raise RunError(f"{curves_dir} is missing")
    key = pa.schema([("batch_size", pa.int64())])
    partitioning = pads.partitioning(key, flavor="hive")
    try:
        dataset = pads.dataset(curves_dir, format="parquet", partitioning=partitioning)
        fragments = list(dataset.get_fragments())
        if not fragments:
            raise RunError(f"{curves_dir} holds no Parquet files")
        schema = pa.unify_schemas(
            [f.physical_schema for f in fragments] + [key], promote_options="permissive"
        )
        # An all-null column in every file stays type null; make it float like the contract.
        schema = pa.schema(
            [pa.field(f.name, pa.float64()) if pa.types.is_null(f.type) else f for f in schema]
        )
        table = pads.dataset(
            curves_dir, format="parquet", partitioning=partitioning, schema=schema
        ).to_table()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise RunError(f"{curves_dir}: {str(e).splitlines()[0]}") from None
    curves = table.to_pandas()
    if curves.empty:
        raise RunError(f"{curves_dir} holds no rows")
    for col in ("trial_id", "batch_size", "lr", "step"):
        if col not in curves.columns:
            raise RunError(f"{curves_dir}: column {col!r} is missing")
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

    return pd.DataFrame({
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
    })


def read_trials(path: Path) -> pd.DataFrame:
    try:
        trials = pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as e:
        raise RunError(f"{path}: {str(e).splitlines()[0]}") from None
    for col in ("trial_id", "batch_size", "lr", "status"):
        if col not in trials.columns:
            raise RunError(f"{path}: column {col!r} is missing")
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
