"""Best trial and best learning rate per batch size, on the full data or on resamples.

The objective at each LR of a batch size's grid is log(steps-to-target) of the best trial
at that LR; LRs whose trials never reached the target are censored (worse than any that
did) and take no part in the interpolation. A batch size where no trial reached the target
falls back to the best value of the target metric each trial attained, so it still gets a
best LR. The optimum is the vertex of a least-squares parabola in log(LR) through the grid
minimum and its neighbours (3 points, up to 5 when a neighbour is censored), kept within
the neighbouring grid points that have a value (never toward a censored one); at the
grid's first or last LR it is the grid point itself, flagged ``lr_on_edge``.

The same code evaluates the full data (one "resample": every trial once) and the bootstrap
(rows of resampled trial indices), so the bootstrap redoes exactly this pipeline.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run, per_batch_summary
    per_batch_summary(load_run("/tmp/demo"))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .load import Run, Target
from .steps import trial_table


@dataclass(frozen=True)
class BatchTrials:
    """The trials of one batch size as arrays, ready to resample."""

    batch_size: int
    """The batch size."""

    log_lr_grid: np.ndarray
    """(L,) sorted unique log LRs tried at this batch size."""

    lr_index: np.ndarray
    """(n,) each trial's position in the grid."""

    steps: np.ndarray
    """(n,) steps to target; inf where not reached."""

    fallback: np.ndarray
    """(n,) target metric oriented so lower is better; inf if none."""

    rows: np.ndarray
    """(n,) row positions in the trial table."""

    seed: np.ndarray
    """(n,) each trial's seed (NaN where the curves carry none)."""


@dataclass(frozen=True)
class BatchEval:
    """Per resample (row): best steps, best LR, whether it is on the grid's edge."""

    steps: np.ndarray
    """(r,) NaN where no trial reached the target."""

    lr: np.ndarray
    """(r,) NaN where no trial has a finite objective."""

    on_edge: np.ndarray
    """(r,) bool."""

    used_steps: np.ndarray
    """(r,) bool: the objective was steps to target (else the metric)."""


def batch_trials(table: pd.DataFrame, target: Target) -> list[BatchTrials]:
    """Split the trial table by batch size, ascending."""
    out: list[BatchTrials] = []
    steps_all = table["steps_to_target"].to_numpy(dtype=float)
    best = table["best_metric"].to_numpy(dtype=float)
    fallback_all = -best if target.mode == "max" else best
    diverged = (table["status"] == "diverged").to_numpy()
    fallback_all = np.where(np.isfinite(fallback_all) & ~diverged, fallback_all, np.inf)
    steps_all = np.where(np.isfinite(steps_all), steps_all, np.inf)
    lr_all = table["lr"].to_numpy(dtype=float)
    seed_all = table["seed"].to_numpy(dtype=float)
    for b, rows in table.groupby("batch_size", sort=True).indices.items():
        rows = np.asarray(rows)
        # Rounding merges LRs that differ only by float noise from the grid generator.
        log_lr = np.round(np.log(lr_all[rows]), 9)
        grid, index = np.unique(log_lr, return_inverse=True)
        out.append(BatchTrials(int(b), grid, index.ravel(), steps_all[rows], fallback_all[rows], rows, seed_all[rows]))
    return out


def interpolated_argmin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertex of the local parabola of ``y`` (r, L; inf = censored/missing) over ``x`` (L,).

    Returns (x_star, on_edge, valid), each (r,). Rows without a finite value are invalid.
    """
    r, L = y.shape
    finite = np.isfinite(y)
    valid = finite.any(axis=1)
    k = np.argmin(np.where(finite, y, np.inf), axis=1)
    on_edge = valid & ((k == 0) | (k == L - 1))
    xk = x[k]
    j = k[:, None] + np.arange(-2, 3)[None, :]
    inside = (j >= 0) & (j < L)
    jc = np.clip(j, 0, L - 1)
    yw = np.take_along_axis(y, jc, axis=1)
    w = inside & np.isfinite(yw)
    # The outer neighbours only join when an inner one is missing: a wider window would
    # let the usually asymmetric LR landscape skew the vertex.
    w[:, [0, 4]] &= (w[:, 1:4].sum(axis=1) < 3)[:, None]
    wf = w.astype(float)
    dx = np.where(w, x[jc] - xk[:, None], 0.0)
    with np.errstate(invalid="ignore"):  # inf - inf in rows with no finite value at all
        dy = np.where(w, yw - np.take_along_axis(y, k[:, None], axis=1), 0.0)
    s = [np.sum(wf * dx**p, axis=1) for p in range(5)]
    t = [np.sum(wf * dx**p * dy, axis=1) for p in range(3)]
    m = np.stack(
        [np.stack([s[4], s[3], s[2]], -1), np.stack([s[3], s[2], s[1]], -1), np.stack([s[2], s[1], s[0]], -1)], -2
    )
    rhs = np.stack([t[2], t[1], t[0]], -1)
    fit = valid & ~on_edge & (s[0] >= 3)
    m[~fit] = np.eye(3)
    rhs[~fit] = 0.0
    coef = np.linalg.solve(m, rhs[..., None])[..., 0]
    a, b = coef[:, 0], coef[:, 1]
    convex = fit & (a > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(convex, -b / (2 * a), 0.0)
    # The vertex may move only toward a neighbour that has a value: past a censored LR the
    # parabola would be extrapolating, and the optimum is only known to lie short of it.
    left, right = np.clip(k - 1, 0, L - 1), np.clip(k + 1, 0, L - 1)
    rows = np.arange(r)
    lo = np.where((k > 0) & finite[rows, left], x[left] - xk, 0.0)
    hi = np.where((k < L - 1) & finite[rows, right], x[right] - xk, 0.0)
    vertex = np.clip(vertex, lo, hi)
    return np.where(valid, xk + vertex, np.nan), on_edge, valid


def _min_per_lr(values: np.ndarray, lr_index: np.ndarray, idx: np.ndarray, L: int) -> np.ndarray:
    """(r, L): per resample row, the minimum of ``values`` over the drawn trials at each LR."""
    r = idx.shape[0]
    flat = (np.arange(r)[:, None] * L + lr_index[idx]).ravel()
    out = np.full(r * L, np.inf)
    np.minimum.at(out, flat, values[idx].ravel())
    return out.reshape(r, L)


def evaluate(bt: BatchTrials, idx: np.ndarray) -> BatchEval:
    """Best steps and LR at one batch size for each row of trial indices ``idx`` (r, n)."""
    L = len(bt.log_lr_grid)
    s = _min_per_lr(bt.steps, bt.lr_index, idx, L)
    f = _min_per_lr(bt.fallback, bt.lr_index, idx, L)
    best_steps = s.min(axis=1)
    used_steps = np.isfinite(best_steps)
    with np.errstate(divide="ignore"):
        y = np.where(used_steps[:, None], np.log(s), f)
    x_star, on_edge, valid = interpolated_argmin(bt.log_lr_grid, y)
    return BatchEval(
        steps=np.where(used_steps, best_steps, np.nan),
        lr=np.where(valid, np.exp(x_star), np.nan),
        on_edge=on_edge,
        used_steps=used_steps,
    )


def summary_from_table(table: pd.DataFrame, target: Target) -> pd.DataFrame:
    """The per-batch-size summary from a trial table (see ``per_batch_summary``)."""
    rows = []
    for bt in batch_trials(table, target):
        ev = evaluate(bt, np.arange(len(bt.rows))[None, :])
        # Best trial: fewest steps; where none reached, the best metric (for curves/gap).
        objective = bt.steps if np.isfinite(bt.steps).any() else bt.fallback
        best_row = bt.rows[int(np.argmin(objective))] if np.isfinite(objective).any() else None
        best = table.loc[best_row] if best_row is not None else None
        steps = float(ev.steps[0])
        rows.append(
            {
                "batch_size": bt.batch_size,
                "best_lr": float(ev.lr[0]),
                "lr_on_edge": bool(ev.on_edge[0]),
                "steps_to_target": steps,
                "examples_to_target": steps * bt.batch_size,
                "wall_time_to_target_s": float(best["wall_time_to_target_s"])
                if best is not None and np.isfinite(steps)
                else np.nan,
                "trials": len(bt.rows),
                "reached": int(np.isfinite(bt.steps).sum()),
                "censored": not np.isfinite(steps),
                "best_trial_id": str(best["trial_id"]) if best is not None else None,
                "best_trial_lr": float(best["lr"]) if best is not None else np.nan,
                "lr_objective": "steps" if bool(ev.used_steps[0]) else "metric",
                "n_lrs": len(bt.log_lr_grid),
                "log_lr_spacing": float(np.median(np.diff(bt.log_lr_grid))) if len(bt.log_lr_grid) > 1 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def per_batch_summary(run: Run) -> pd.DataFrame:
    """Per batch size: best_lr, lr_on_edge, steps_to_target, examples_to_target, trials, reached.

    Also wall_time_to_target_s, censored (no trial reached the target), best_trial_id,
    best_trial_lr, lr_objective ("steps" or "metric"), n_lrs and log_lr_spacing (median
    step of the LR grid in log; NaN with one LR). One row per batch size,
    ascending; censored batch sizes stay, with NaN steps.
    """
    return summary_from_table(trial_table(run), run.target)
