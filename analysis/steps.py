"""Per-trial steps, examples and wall time to target, vectorised over all curve rows.

The crossing is the first evaluation whose target metric meets the goal. Between that
evaluation and the one before it the metric is interpolated linearly in log(step), which
undoes most of the eval-grid quantisation (Shallue et al. read S off the grid instead).
A diverged trial never counts as reaching the target, whatever its curve shows.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    from analysis.steps import trial_table
    run = load_run("/tmp/demo")
    t = trial_table(run)   # one row per trial: reached, steps_to_target, best_metric, ...
    t.groupby("batch_size").steps_to_target.min()
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.contract import FINAL_COLUMNS

from .load import Run, Target, fractions_of


def _last_finite(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per code, the value in the last row (rows sorted by code, then step) that is finite."""
    out = np.full(n, np.nan)
    ok = np.isfinite(values)
    c, v = codes[ok], values[ok]
    if c.size:
        is_last = np.r_[c[1:] != c[:-1], True]
        out[c[is_last]] = v[is_last]
    return out


def _first_finite(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per code, the value in the first row (rows sorted by code, then step) that is finite."""
    out = np.full(n, np.nan)
    ok = np.isfinite(values)
    c, v = codes[ok], values[ok]
    if c.size:
        is_first = np.r_[True, c[1:] != c[:-1]]
        out[c[is_first]] = v[is_first]
    return out


def crossing_steps(
    codes: np.ndarray,
    step: np.ndarray,
    metric: np.ndarray,
    wall: np.ndarray,
    target: Target,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated (steps, wall seconds) to target per code; NaN where never reached.

    Rows must be sorted by (code, step) and hold only finite metric values, so that the
    row before a crossing is the previous evaluation of the same trial.
    """
    steps_out = np.full(n, np.nan)
    wall_out = np.full(n, np.nan)
    hit = np.flatnonzero(target.reached(metric))
    if hit.size == 0:
        return steps_out, wall_out
    # np.unique keeps the first index of each code: the first crossing of each trial.
    trial, first = np.unique(codes[hit], return_index=True)
    i = hit[first]
    s_hit = step[i].astype(float)
    w_hit = wall[i]
    has_prev = (i > 0) & (codes[np.maximum(i - 1, 0)] == codes[i])
    p = np.where(has_prev, i - 1, i)
    s_prev, m_prev, m_hit = step[p].astype(float), metric[p], metric[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip((target.value - m_prev) / (m_hit - m_prev), 0.0, 1.0)
        frac = np.where(np.isfinite(frac), frac, 1.0)
        # Linear in log(step); a step-0 evaluation has no log, so fall back to linear there.
        log_ok = s_prev > 0
        s_log = np.exp(
            np.log(np.where(log_ok, s_prev, 1.0))
            + frac * (np.log(np.maximum(s_hit, 1e-300)) - np.log(np.where(log_ok, s_prev, 1.0)))
        )
        s_lin = s_prev + frac * (s_hit - s_prev)
        s = np.where(has_prev, np.where(log_ok, s_log, s_lin), s_hit)
        # Wall time is close to linear in steps, so read it off at the interpolated step.
        w_prev = wall[p]
        w_frac = np.where(s_hit > s_prev, (s - s_prev) / (s_hit - s_prev), 1.0)
        w = np.where(has_prev, w_prev + w_frac * (w_hit - w_prev), w_hit)
    steps_out[trial] = s
    wall_out[trial] = w
    return steps_out, wall_out


def trial_table(run: Run) -> pd.DataFrame:
    """One row per trial (from curves and trials.parquet), indexed 0..n-1.

    Columns: trial_id, batch_size, lr, seed, train_fraction, status, reached, steps_to_target,
    examples_to_target, wall_time_to_target_s, best_metric, final_metric, first_train_loss,
    final_train_loss, final_train_eval_loss (NaN where the curves lack the column),
    final_val_loss, last_step, and ``FINAL_COLUMNS`` (sharpness, the forgetting probe; NaN
    where not measured). Trials listed in
    trials.parquet without any curve rows are kept (they count as tried, never reached).
    """
    target = run.target
    c = run.curves
    codes, ids = pd.factorize(c["trial_id"], sort=False)
    n = len(ids)
    step = c["step"].to_numpy(dtype=np.int64)
    order = np.lexsort((step, codes))
    codes, step = codes[order], step[order]

    def column(name: str) -> np.ndarray:
        if name not in c.columns:
            return np.full(len(order), np.nan)
        return c[name].to_numpy(dtype=float, na_value=np.nan)[order]

    metric = column(target.metric)
    wall = column("wall_time_s")
    ok = np.isfinite(metric)
    s_to, w_to = crossing_steps(codes[ok], step[ok], metric[ok], wall[ok], target, n)

    # Best value reached at any evaluation, oriented by the target's mode.
    best = pd.Series(metric).groupby(codes).agg("max" if target.mode == "max" else "min")
    best_metric = np.full(n, np.nan)
    best_metric[best.index.to_numpy()] = best.to_numpy()

    first_row = np.r_[True, codes[1:] != codes[:-1]]
    firsts = order[first_row]
    last_row = np.r_[codes[1:] != codes[:-1], True]
    last_step = np.zeros(n, dtype=np.int64)
    last_step[codes[last_row]] = step[last_row]
    batch = c["batch_size"].to_numpy(dtype=np.int64)[firsts]
    lr = c["lr"].to_numpy(dtype=float)[firsts]
    seed = c["seed"].to_numpy(dtype=float, na_value=np.nan)[firsts] if "seed" in c.columns else np.full(n, np.nan)
    fraction = fractions_of(c).to_numpy(dtype=float)[order][first_row]

    table = pd.DataFrame(
        {
            "trial_id": np.asarray(ids, dtype=object).astype(str),
            "batch_size": batch,
            "lr": lr,
            "seed": seed,
            "train_fraction": fraction,
            "steps_to_target": s_to,
            "wall_time_to_target_s": w_to,
            "best_metric": best_metric,
            "final_metric": _last_finite(codes, metric, n),
            "first_train_loss": _first_finite(codes, column("train_loss"), n),
            "final_train_loss": _last_finite(codes, column("train_loss"), n),
            "final_train_eval_loss": _last_finite(codes, column("train_eval_loss"), n),
            "final_val_loss": _last_finite(codes, column("val_loss"), n),
            "last_step": last_step,
        }
    )
    table = _attach_trials(table, run.trials)
    reached = np.isfinite(table["steps_to_target"].to_numpy()) & (table["status"] != "diverged").to_numpy()
    table["reached"] = reached
    table.loc[~reached, ["steps_to_target", "wall_time_to_target_s"]] = np.nan
    # examples at the crossing, from the curves' own count where they have it: a [schedule]
    # that grows the batch sees more than steps × the starting batch
    counted = np.full(len(table), np.nan)
    counted[:n] = _examples_at(codes, step, column("examples_seen"), s_to)
    by_steps = table["steps_to_target"] * table["batch_size"]
    table["examples_to_target"] = np.where(np.isfinite(counted) & reached, counted, by_steps)
    return table


def _examples_at(codes: np.ndarray, step: np.ndarray, examples: np.ndarray, steps_to: np.ndarray) -> np.ndarray:
    """Each trial's examples seen at its (interpolated) step to target: linear between its
    evaluations (exact within a stretch of one batch size); NaN where either is missing."""
    out = np.full(len(steps_to), np.nan)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.array([], dtype=int)
    for a, b in zip(starts, np.r_[starts[1:], len(codes)], strict=True):
        i, ok = codes[a], np.isfinite(examples[a:b])
        if np.isfinite(steps_to[i]) and ok.any():
            out[i] = np.interp(steps_to[i], step[a:b][ok], examples[a:b][ok])
    return out


def _attach_trials(table: pd.DataFrame, trials: pd.DataFrame | None) -> pd.DataFrame:
    """Add status and the last-row measurements (``FINAL_COLUMNS``: sharpness, the
    forgetting probe) from trials.parquet; keep trials that never wrote a curve."""
    if trials is None or trials.empty:
        table["status"] = "completed"
        for c in FINAL_COLUMNS:
            table[c] = np.nan
        return table
    finals = [c for c in FINAL_COLUMNS if c in trials.columns]
    cols = [
        c for c in ("trial_id", "status", *finals, "batch_size", "lr", "seed", "train_fraction") if c in trials.columns
    ]
    t = trials[cols].drop_duplicates("trial_id", keep="last")
    merged = table.merge(t[[c for c in ("trial_id", "status", *finals) if c in t.columns]], on="trial_id", how="left")
    # A trial with curves but no row yet (e.g. a report written mid-run) counts as completed.
    merged["status"] = merged["status"].fillna("completed").astype(str)
    for c in FINAL_COLUMNS:
        merged[c] = pd.to_numeric(merged[c], errors="coerce").astype(float) if c in merged.columns else np.nan
    missing = t[~t["trial_id"].isin(table["trial_id"])]
    if not missing.empty:
        extra = pd.DataFrame(
            {
                "trial_id": missing["trial_id"].astype(str).to_numpy(),
                "batch_size": missing["batch_size"].astype("int64").to_numpy(),
                "lr": missing["lr"].astype(float).to_numpy(),
                "seed": pd.to_numeric(missing["seed"], errors="coerce").to_numpy(dtype=float)
                if "seed" in missing.columns
                else np.nan,
                "train_fraction": fractions_of(missing).to_numpy(dtype=float),
                "status": missing["status"].astype(str).to_numpy(),
                **{
                    c: pd.to_numeric(missing[c], errors="coerce").to_numpy(dtype=float)
                    if c in missing.columns
                    else np.nan
                    for c in FINAL_COLUMNS
                },
                "last_step": 0,
            }
        )
        merged = pd.concat([merged, extra], ignore_index=True)
    return merged.reset_index(drop=True)
