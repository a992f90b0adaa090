"""The contract every package shares: the typed trial config, the target, the cap, the
trial statuses, and the Parquet tables of a run directory with their one writer and reader.

It imports nothing of orchestrator, cluster or analysis, and of trainables only the leaf
``schedule``, so all of them can import it. Layout and columns: ``../shared/CONTRACTS.md``.

    from trainables.contract import Target, TrialConfig, read_curves
    t = Target(metric="val_accuracy", mode="max", value=0.85)   # t.reached(0.9): True
    cfg = TrialConfig(batch_size=256, micro_batch_size=64, lr=0.1, seed=0, optimizer="sgd",
                      momentum=0.9, weight_decay=0.0, warmup_examples=0, max_steps=None,
                      max_examples=60_000, cpus=1.0, target=t, stop_at_target=True)
    cfg.step_cap, cfg.accumulation_steps             # (234, 4)
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from trainables.schedule import Plan, Ramp


class UsageError(ValueError):
    """Bad input (study file, flag, path, data): the CLI's exit code 2; a one-line message
    naming the offending key, flag or path."""


class RunError(UsageError):
    """A run directory that cannot be read; the message names the file and the problem."""


# --------------------------------------------------------------------------- target


class Target(BaseModel):
    """The goal for steps-to-target (the study's ``[target]`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = "val_accuracy"
    """A curves column, e.g. val_accuracy or val_loss."""
    mode: Literal["max", "min"] = "max"
    """max: reached when metric >= value; min: when metric <= value."""
    value: float
    """The threshold."""

    @overload
    def reached(self, value: float | None) -> bool: ...
    @overload
    def reached(self, value: np.ndarray) -> np.ndarray: ...
    def reached(self, value: float | np.ndarray | None) -> bool | np.ndarray:
        """Whether a measured value (or each of an array) meets the target; None, NaN and
        infinities never do (a diverged trial's blown-up metric is not a result)."""
        if value is None:
            return False
        x = np.asarray(value, dtype=float)
        with np.errstate(invalid="ignore"):
            hit = (x >= self.value) if self.mode == "max" else (x <= self.value)
        hit = hit & np.isfinite(x)
        return bool(hit) if hit.ndim == 0 else hit

    def better(self, a: float, b: float | None) -> bool:
        """Whether ``a`` is a better value of the metric than ``b`` (None: nothing yet)."""
        return b is None or (a > b if self.mode == "max" else a < b)


# --------------------------------------------------------------------------- cap


def step_cap(batch_size: int, max_steps: int | None, max_examples: int | None) -> int:
    """Optimizer updates a trial may take: the tighter of ``max_steps`` and
    ``max_examples // batch_size``, at least one. The examples cap is ``step_cap * B``."""
    caps = [c for c in (max_steps, max_examples and max(1, max_examples // batch_size)) if c]
    if not caps:
        raise UsageError("budget: set max_examples or max_steps")
    return min(caps)


# --------------------------------------------------------------------------- LR rules

LR_RULE_EXPONENTS: dict[str, float] = {"constant": 0.0, "sqrt": 0.5, "linear": 1.0}
"""The fixed-exponent LR scaling rules, eta(B) = base_lr * (B / base_batch) ** k: constant,
square root (Krizhevsky 2014, Malladi et al. 2022) and linear (Goyal et al. 2017)."""


def rule_lr(rule: str, base_lr: float, base_batch: int, batch_size: int) -> float:
    """The learning rate a fixed-exponent rule gives ``batch_size``, rounded as a trial's
    LR is (``round_lr``), so the sweep and the analysis name the same trial.

    >>> rule_lr("linear", 0.01, 32, 256), rule_lr("sqrt", 0.01, 32, 128), rule_lr("constant", 0.01, 32, 4096)
    (0.08, 0.02, 0.01)
    """
    return round_lr(base_lr * (batch_size / base_batch) ** LR_RULE_EXPONENTS[rule])


def round_lr(lr: float) -> float:
    """A trial's learning rate to 6 significant digits: readable in tables and file names,
    far below any LR effect, and equal wherever two rules or grids give the same LR."""
    return float(f"{lr:.6g}")


# --------------------------------------------------------------------------- status

TrialStatus = Literal["completed", "early_stopped", "diverged", "failed"]
TRIAL_STATUSES: tuple[TrialStatus, ...] = ("completed", "early_stopped", "diverged", "failed")


def decide_status(*, diverged: bool, errored: bool, early_stopped: bool) -> TrialStatus:
    """The one rule for a trial's status; divergence wins over a later error (NaN weights)."""
    if diverged:
        return "diverged"
    if errored:
        return "failed"
    if early_stopped:
        return "early_stopped"
    return "completed"


# --------------------------------------------------------------------------- trial config


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs, typed and validated; what a trainable receives."""

    batch_size: int
    """Global batch size of one optimizer update."""
    micro_batch_size: int
    """Examples per forward/backward pass (on one worker); fewer than the worker's share of
    the batch means averaged accumulation."""
    lr: float
    """Base (peak) learning rate."""
    seed: int
    """Seed of the initialisation and the data order."""
    optimizer: Literal["sgd", "adamw", "lars"]
    """Optimizer of the trial."""
    momentum: float
    """Heavy-ball momentum (sgd, lars) or beta1 (adamw)."""
    weight_decay: float
    """Weight decay (decoupled for adamw)."""
    warmup_examples: int
    """Linear learning-rate warmup length, in examples."""
    max_steps: int | None
    """Cap on optimizer updates (the tighter of the two caps applies)."""
    max_examples: int | None
    """Cap on examples seen."""
    cpus: float
    """CPU cores of the trial (its torch thread count, rounded up)."""
    target: Target
    """The study's target."""
    stop_at_target: bool
    """Whether the trial ends at the first evaluation that reaches ``target``."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The study's ``[trainable_config]`` table, validated, with the trainable's defaults."""
    checkpoint: dict[str, Any] | None = None
    """The trainable's own checkpoint to resume from (None: start fresh)."""
    init_state: dict[str, Any] | None = None
    """Another trial's checkpoint to start from (a branch, ``orchestrator.branching``): its
    weights and optimizer state, then this config's batch size, LR and data order (``seed``),
    steps and examples counted from 0. Only a trainable that declares ``BRANCHES = True``
    honours it; a resumed branch gets it beside its own ``checkpoint``, which wins."""
    train_fraction: float = 1.0
    """Fraction of the training set the trial trains on: a fixed, seeded subset, nested
    across fractions and the same at every batch size, LR and seed
    (``trainables.subsets.train_subset``); 1.0 is all of it."""
    world_size: int = 1
    """Workers (``torch.distributed`` ranks) the trial runs as; each trains on an equal,
    contiguous share of every global batch, so ``batch_size = world_size × micro_batch_size
    × accumulation_steps`` (``trainables.distributed``)."""
    rank: int = 0
    """This worker's rank, ``0 .. world_size - 1``; rank 0 reports the curve and checkpoints."""
    device: str | None = None
    """This worker's torch device (``"cpu"``, ``"cuda:0"``); None: CUDA when the process
    sees a GPU (Ray hides the ones a trial did not ask for), else the CPU."""
    schedule: Ramp | None = None
    """The study's ``[schedule]`` (None: constant after warmup); a trainable that declares
    ``SCHEDULES = True`` follows it update by update through ``Plan.of(config)``."""

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} of world_size {self.world_size}: need 0 <= rank < world_size")
        share = self.world_size * self.micro_batch_size
        if self.batch_size < 1 or self.micro_batch_size < 1 or self.batch_size % share:
            raise ValueError(
                f"batch_size {self.batch_size} is not a positive multiple of "
                f"micro_batch_size {self.micro_batch_size}"
                + (f" × world_size {self.world_size}" if self.world_size > 1 else "")
            )
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if not (self.lr >= 0 and math.isfinite(self.lr)):  # 0: a measurement that never moves
            raise ValueError(f"lr must be non-negative and finite, got {self.lr}")
        step_cap(self.batch_size, self.max_steps, self.max_examples)  # raises without a cap

    @property
    def step_cap(self) -> int:
        """Optimizer updates this trial may take (``step_cap``; with a schedule ``Plan.cap``)."""
        if self.schedule is not None:
            return Plan.of(self).cap
        return step_cap(self.batch_size, self.max_steps, self.max_examples)

    @property
    def accumulation_steps(self) -> int:
        """Micro-batches per optimizer update on one worker."""
        return self.batch_size // (self.world_size * self.micro_batch_size)

    @property
    def local_batch_size(self) -> int:
        """Examples of each global batch this worker trains on (``batch_size / world_size``)."""
        return self.batch_size // self.world_size

    @property
    def threads(self) -> int:
        """Intra-op threads: the trial's CPU share, so packed trials don't oversubscribe."""
        return max(1, math.ceil(self.cpus))

    def ends_at(self, metrics: dict[str, Any]) -> bool:
        """Whether this evaluation ends the trial at the target."""
        return self.stop_at_target and self.target.reached(metrics.get(self.target.metric))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types without the checkpoint and initial state (Tune's config)."""
        skip = ("checkpoint", "init_state")
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        d["target"] = self.target.model_dump()
        d["settings"] = dict(self.settings)
        d["schedule"] = None if self.schedule is None else self.schedule.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> TrialConfig:
        """The inverse of ``to_dict``."""
        ramp = d.get("schedule") and Ramp.from_dict(d["schedule"])
        return cls(**{**d, "target": Target.model_validate(d["target"]), "checkpoint": checkpoint, "schedule": ramp})

    def with_checkpoint(self, checkpoint: dict[str, Any] | None) -> TrialConfig:
        """The same trial, resuming from ``checkpoint``."""
        return dataclasses.replace(self, checkpoint=checkpoint)


# --------------------------------------------------------------------------- Parquet tables

CURVES_SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("trial_id", pa.string()),
        ("batch_size", pa.int64()),
        ("micro_batch_size", pa.int64()),
        ("lr", pa.float64()),
        ("seed", pa.int64()),
        ("train_fraction", pa.float64()),
        ("step", pa.int64()),
        ("examples_seen", pa.int64()),
        ("epoch", pa.float64()),
        ("wall_time_s", pa.float64()),
        ("train_loss", pa.float64()),
        ("train_eval_loss", pa.float64()),
        ("train_eval_accuracy", pa.float64()),
        ("val_loss", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("lr_current", pa.float64()),
        ("batch_size_current", pa.float64()),
        ("momentum_current", pa.float64()),
        ("grad_noise_scale", pa.float64()),
        ("weight_distance", pa.float64()),
    ]
)
"""Columns of ``curves/`` (contract "curves/ columns", plus: ``train_eval_*``, the current
weights on a fixed training subset as large as the validation split; ``weight_distance``,
‖θ − θ₀‖₂ (``trainables.weights``); ``train_fraction``; ``batch_size_current`` and
``momentum_current``, those of the last update (a ``[schedule]`` changes them while
``batch_size`` stays the trial's first); null where a trainable does not measure them)."""
# batch_size is the hive partition key: files inside a partition do not repeat it, since
# pyarrow infers the key's type from the path and refuses to merge it with a file column.
CURVES_FILE_SCHEMA = pa.schema([f for f in CURVES_SCHEMA if f.name != "batch_size"])
CURVES_PARTITIONING = pads.partitioning(pa.schema([("batch_size", pa.int64())]), flavor="hive")
METRIC_COLUMNS = tuple(
    f.name for f in CURVES_FILE_SCHEMA if pa.types.is_floating(f.type) and f.name not in ("lr", "train_fraction")
)
"""The float columns a trainable reports (epoch, wall time, losses, accuracy, ...)."""

TRIALS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("study", pa.string()),
        ("batch_size", pa.int64()),
        ("micro_batch_size", pa.int64()),
        ("lr", pa.float64()),
        ("seed", pa.int64()),
        ("train_fraction", pa.float64()),
        ("optimizer", pa.string()),
        ("status", pa.string()),
        ("steps", pa.int64()),
        ("examples_seen", pa.int64()),
        ("wall_time_s", pa.float64()),
        ("final_val_loss", pa.float64()),
        ("best_val_accuracy", pa.float64()),
        ("sharpness", pa.float64()),
        ("probe_recent_loss", pa.float64()),
        ("probe_early_loss", pa.float64()),
        ("probe_early_age_epochs", pa.float64()),
        ("probe_heldout_loss", pa.float64()),
        ("node", pa.string()),
        ("config_json", pa.string()),
        ("error", pa.string()),
    ]
)
"""Columns of ``trials.parquet`` (``error``: a failed trial's reason, the last line of its
exception; ``FINAL_COLUMNS``: what the trial's last row measured)."""
FINAL_COLUMNS = ("sharpness", "probe_recent_loss", "probe_early_loss", "probe_early_age_epochs", "probe_heldout_loss")
"""Measurements a trainable puts in its last row only (the sharpness and the forgetting
probe, ``trainables.forgetting``); the sink keeps them per trial for ``trials.parquet``."""


BRANCHING_DIR = "branching"  # under RUN_DIR: a [branching] study's legs (orchestrator, analysis)


def curves_file(curves_dir: Path, batch_size: int, trial_id: str) -> Path:
    """Where one trial's curve lives: ``curves/batch_size=<B>/<trial_id>.parquet``."""
    return Path(curves_dir) / f"batch_size={int(batch_size)}" / f"{trial_id}.parquet"


def write_atomic(path: Path, data: pa.Table | str | bytes) -> None:
    """Write a Parquet table, a text or bytes to ``path`` through a temporary file and a
    rename, so a reader always sees a whole file and a crash never leaves half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, pa.Table):
            pq.write_table(data, tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_curves(curves_dir: Path | str) -> pa.Table:
    """The whole curves dataset, ``batch_size`` as int64 from the hive path.

    Unifying the files' own schemas keeps columns only some files have (extra columns are
    allowed) and other writers' files that repeat ``batch_size``; an all-null column
    becomes float64, the type of every contract metric. Raises ``RunError``.
    """
    curves_dir = Path(curves_dir)
    if not curves_dir.is_dir():
        raise RunError(f"{curves_dir} is missing")
    key = pa.schema([("batch_size", pa.int64())])
    try:
        fragments = list(pads.dataset(curves_dir, format="parquet", partitioning=CURVES_PARTITIONING).get_fragments())
        if not fragments:
            raise RunError(f"{curves_dir} holds no Parquet files")
        schema = pa.unify_schemas([f.physical_schema for f in fragments] + [key], promote_options="permissive")
        schema = pa.schema([pa.field(f.name, pa.float64()) if pa.types.is_null(f.type) else f for f in schema])
        table = pads.dataset(curves_dir, format="parquet", partitioning=CURVES_PARTITIONING, schema=schema).to_table()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise RunError(f"{curves_dir}: {str(e).splitlines()[0]}") from None
    for col in ("trial_id", "batch_size", "lr", "step"):
        if col not in table.column_names:
            raise RunError(f"{curves_dir}: column {col!r} is missing")
    # the contract's columns first, in order, then any extras
    names = [c for c in CURVES_SCHEMA.names if c in table.column_names]
    return table.select(names + [c for c in table.column_names if c not in names])


def read_trials(path: Path | str) -> pa.Table:
    """``trials.parquet``; raises ``RunError`` naming a missing key column."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise RunError(f"{path}: {str(e).splitlines()[0]}") from None
    for col in ("trial_id", "batch_size", "lr", "status"):
        if col not in table.column_names:
            raise RunError(f"{path}: column {col!r} is missing")
    return table


def read_toml(path: Path | str) -> dict[str, Any]:
    """A TOML file (study.toml, a study); a syntax error is a UsageError naming file and line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: invalid TOML: {e}") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from None
