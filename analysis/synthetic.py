"""Synthetic runs in the contract's format, from a known S(B) and a known LR law.

For tests, benchmarks and trying the report without training anything. Each trial's steps
to target is S(B) * exp(kappa * (log lr - log eta*(B))^2) times log-normal noise, with
S(B) = s_min (1 + b_crit / B); its target metric is linear in log(step) around the crossing,
so interpolation in log-step recovers the drawn value exactly. Trials that do not reach the
target within the budget are early-stopped or (far above eta*) diverged.

    from analysis.synthetic import write_synthetic_run
    truth = write_synthetic_run("/tmp/run", batch_sizes=[32, 64, 128, 256, 512],
                                lr_law=lambda b: 0.01 * b / 32, b_crit=256.0)
    # then: python -m analysis.report /tmp/run
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

# the run format is the sink's: the contract's columns, batch_size only in the path
from trainables.contract import CURVES_SCHEMA, TRIALS_SCHEMA, write_atomic

DATASET_SIZE = 60_000
TRAIN_EVAL_COLUMNS = ("train_eval_loss", "train_eval_accuracy")


@dataclass(frozen=True)
class Truth:
    """What a synthetic run was drawn from, to compare the analysis with."""

    batch_sizes: np.ndarray
    """The batch sizes, as given."""

    steps: np.ndarray
    """S(B) without noise."""

    best_lr: np.ndarray
    """eta*(B), the LR law at each batch size."""

    s_min: float
    """S_min of S(B) = S_min (1 + B_crit / B)."""

    b_crit: float
    """B_crit of the same."""

    n_trials: int
    """Trials written."""

    n_rows: int
    """Curve rows written."""


def _study_toml(
    name: str, batch_sizes: Sequence[int], lrs: np.ndarray, seeds: int, metric: str, mode: str, value: float
) -> str:
    lr_list = ", ".join(f"{x:.6g}" for x in lrs)
    return (
        f'name = "{name}"\ntrainable = "synthetic"\n\n[search]\n'
        f"batch_sizes = [{', '.join(str(int(b)) for b in batch_sizes)}]\n"
        f'lr = [{lr_list}]\nseeds = {seeds}\noptimizer = "sgd"\nmomentum = 0.9\n\n'
        f"[budget]\nstop_at_target = false\n\n"
        f'[target]\nmetric = "{metric}"\nmode = "{mode}"\nvalue = {value}\n'
    )


def write_synthetic_run(
    run_dir: str | Path,
    batch_sizes: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
    lr_law: Callable[[np.ndarray], np.ndarray] = lambda b: 0.01 * np.asarray(b) / 32,
    lr_grid: Sequence[float] | Callable[[int], Sequence[float]] | None = None,
    s_min: float = 1000.0,
    b_crit: float = 256.0,
    kappa: float = 1.0,
    noise: float = 0.05,
    seeds: int = 1,
    budget: float | Sequence[float] = 3.0,
    evals_per_trial: int = 40,
    spacing: str = "log",
    metric: str = "val_accuracy",
    mode: str = "max",
    value: float = 0.85,
    noise_scale: float | None = None,
    write_trials: bool = True,
    batch_size_column: bool = True,
    file_per_trial: bool = False,
    val_every: int = 1,
    truncate_unfinished: bool = True,
    name: str = "synthetic",
    rng_seed: int = 0,
    train_eval: bool = False,
    running_lag: float = 0.0,
) -> Truth:
    """Write ``study.toml``, ``curves/`` and (optionally) ``trials.parquet`` under ``run_dir``.

    ``lr_grid`` is one grid for all batch sizes or a function of the batch size (e.g. a grid
    centred on a scaling rule). ``budget`` is the step cap as a multiple of S(B), one value or one per batch size (a
    value below 1 censors that batch size). ``noise_scale``, when given, is B_simple at the
    target; the written value grows with the step as it does while the loss falls.
    ``truncate_unfinished`` ends early-stopped and diverged curves early, as a scheduler would;
    without it every trial has the same number of rows (for benchmarks).

    The final weights' training loss is the validation loss less a gap that grows with B
    (0.02 + 0.01 log2(B / B_min)). ``train_eval`` writes it as ``train_eval_loss`` (with
    ``train_eval_accuracy``); ``train_loss``, a running mean over the steps since the last
    report, lies ``running_lag`` above it.
    """
    run_dir = Path(run_dir)
    rng = np.random.default_rng(rng_seed)
    b_arr = np.asarray(batch_sizes, dtype=np.int64)

    def grid_at(b: int) -> np.ndarray:
        if callable(lr_grid):
            return np.asarray(lr_grid(b), dtype=float)
        return np.geomspace(1e-3, 10.0, 17) if lr_grid is None else np.asarray(lr_grid, dtype=float)

    grid = grid_at(int(b_arr[0]))
    budgets = np.broadcast_to(np.asarray(budget, dtype=float), b_arr.shape)
    s_true = s_min * (1 + b_crit / b_arr)
    eta = np.asarray(lr_law(b_arr.astype(float)), dtype=float)
    (run_dir / "curves").mkdir(parents=True, exist_ok=True)
    (run_dir / "study.toml").write_text(_study_toml(name, [int(b) for b in b_arr], grid, seeds, metric, mode, value))

    schema = CURVES_SCHEMA
    if train_eval:  # extra columns where the contract's schema does not list them yet
        schema = pa.schema(
            list(schema) + [pa.field(c, pa.float64()) for c in TRAIN_EVAL_COLUMNS if c not in schema.names]
        )
    trial_rows: list[dict] = []
    n_rows = 0
    for j, b in enumerate(b_arr):
        max_steps = max(int(np.ceil(budgets[j] * s_true[j])), 2)
        if spacing == "log":
            steps = np.unique(np.round(np.geomspace(1, max_steps, evals_per_trial)).astype(np.int64))
        else:
            steps = np.unique(np.linspace(max_steps / evals_per_trial, max_steps, evals_per_trial).astype(np.int64))
        tables = []
        for lr in grid_at(int(b)):
            for seed in range(seeds):
                tid = f"b{b}_lr{lr:.4g}_s{seed}"
                dev = np.log(lr) - np.log(eta[j])
                s_trial = s_true[j] * np.exp(kappa * dev**2 + noise * rng.standard_normal())
                diverged = dev > np.log(30.0)
                reached = (s_trial <= max_steps) and not diverged
                status = "completed" if reached else ("diverged" if diverged else "early_stopped")
                st = steps
                if truncate_unfinished and status == "early_stopped":
                    st = steps[: max(len(steps) // 2, 2)]
                if truncate_unfinished and diverged:
                    st = steps[: max(len(steps) // 4, 2)]
                x = np.log(st) - np.log(s_trial)
                if mode == "max":
                    target_metric = np.clip(value + 0.05 * x, 0.0, 0.999)
                else:
                    target_metric = np.maximum(value - 0.2 * x, 1e-3)
                val_loss = np.maximum(0.6 - 0.2 * x, 1e-3) if metric != "val_loss" else target_metric
                gap = 0.01 * np.log2(b / b_arr.min()) + 0.02
                train_now = val_loss - gap
                train_loss = train_now + running_lag
                if diverged:
                    # A diverged run's last report has non-finite losses.
                    train_loss = train_loss.copy()
                    val_loss = val_loss.copy()
                    train_now = train_now.copy()
                    train_loss[-1] = np.nan
                    val_loss[-1] = np.nan
                    train_now[-1] = np.nan
                acc = target_metric if metric == "val_accuracy" else np.clip(0.9 - 0.05 * x, 0, 1)
                vl = target_metric if metric == "val_loss" else val_loss
                if val_every > 1:
                    keep = (np.arange(len(st)) % val_every == val_every - 1) | (np.arange(len(st)) == len(st) - 1)
                    acc = np.where(keep, acc, np.nan)
                    vl = np.where(keep, vl, np.nan)
                    train_now = np.where(keep, train_now, np.nan)  # measured at each evaluation
                gns = np.full(len(st), np.nan) if noise_scale is None else noise_scale * (st / s_trial) ** 0.3
                n = len(st)
                cols = {
                    "study": pa.array([name] * n, pa.string()),
                    "trial_id": pa.array([tid] * n, pa.string()),
                    "batch_size": pa.array(np.full(n, b), pa.int64()),
                    "micro_batch_size": pa.array(np.full(n, min(b, 256)), pa.int64()),
                    "lr": pa.array(np.full(n, lr), pa.float64()),
                    "seed": pa.array(np.full(n, seed), pa.int64()),
                    "step": pa.array(st, pa.int64()),
                    "examples_seen": pa.array(st * b, pa.int64()),
                    "epoch": pa.array(st * b / DATASET_SIZE, pa.float64()),
                    "wall_time_s": pa.array(st * 0.01 * (1 + b / 512), pa.float64()),
                    "train_loss": pa.array(train_loss, pa.float64(), from_pandas=True),
                    "val_loss": pa.array(vl, pa.float64(), from_pandas=True),
                    "val_accuracy": pa.array(acc, pa.float64(), from_pandas=True),
                    "lr_current": pa.array(np.full(n, lr), pa.float64()),
                    "grad_noise_scale": pa.array(gns, pa.float64(), from_pandas=True),
                }
                if train_eval:
                    cols["train_eval_loss"] = pa.array(train_now, pa.float64(), from_pandas=True)
                    cols["train_eval_accuracy"] = pa.array(np.clip(acc + 0.02, 0, 1), pa.float64(), from_pandas=True)
                # Columns the contract has and this writer does not model are null, as a
                # trainable that does not measure them would leave them.
                for f in schema:
                    cols.setdefault(f.name, pa.nulls(n, f.type))
                table = pa.table(cols, schema=schema)
                if not batch_size_column:
                    table = table.drop_columns(["batch_size"])
                tables.append(table)
                n_rows += n
                trial_rows.append(
                    {
                        "trial_id": tid,
                        "study": name,
                        "batch_size": int(b),
                        "micro_batch_size": int(min(b, 256)),
                        "lr": float(lr),
                        "seed": seed,
                        "optimizer": "sgd",
                        "status": status,
                        "steps": int(st[-1]),
                        "examples_seen": int(st[-1] * b),
                        "wall_time_s": float(st[-1] * 0.01 * (1 + b / 512)),
                        "final_val_loss": float(val_loss[-1]) if np.isfinite(val_loss[-1]) else None,
                        "best_val_accuracy": float(np.nanmax(acc)),
                        "sharpness": None,
                        "node": "node0",
                        "config_json": "{}",
                    }
                )
        part = run_dir / "curves" / f"batch_size={int(b)}"
        part.mkdir(parents=True, exist_ok=True)
        if file_per_trial:
            for i, t in enumerate(tables):
                write_atomic(part / f"part-{i:05d}.parquet", t)
        else:
            write_atomic(part / "part-0.parquet", pa.concat_tables(tables))
    if write_trials:
        write_atomic(run_dir / "trials.parquet", pa.Table.from_pylist(trial_rows, schema=TRIALS_SCHEMA))
    return Truth(b_arr.astype(float), s_true, eta, s_min, b_crit, len(trial_rows), n_rows)
