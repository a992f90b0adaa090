"""Generalization gap per batch size at the best LR (Keskar et al. 2016).

The gap is final validation loss minus final training loss, each the last finite value in
the curves, averaged over the trials that share the batch size's best trial's LR (its
seeds) and did not diverge; sharpness from trials.parquet is averaged alongside when
measured.

Keskar et al. compare both losses at the final weights. ``train_eval_loss`` is that: the
current weights evaluated on a fixed training subset as large as the validation split,
at each evaluation. ``train_loss`` is not: it is the mean over the steps since the last
report, taken while the weights were still improving, so it sits above the final weights'
training loss and val - train comes out too low (negative at most batch sizes on real
runs). The gap uses ``train_eval_loss`` wherever the curves have it and falls back to
``train_loss`` only for a run that has none, and says which (``TRAIN_EVAL`` / ``RUNNING``).

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo", train_eval=True)   # a synthetic RUN_DIR; any real one works
    from analysis import load_run, per_batch_summary
    from analysis.steps import trial_table
    from analysis.generalization import generalization_gap
    run = load_run("/tmp/demo")
    gap, column = generalization_gap(trial_table(run), per_batch_summary(run))   # column: 'train_eval_loss'
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TRAIN_EVAL = "train_eval_loss"
RUNNING = "train_loss"
COLUMNS = ["batch_size", "final_train_loss", "final_val_loss", "generalization_gap", "sharpness", "gap_trials"]


def gap_column(table: pd.DataFrame) -> str:
    """``TRAIN_EVAL`` when any trial has a finite final ``train_eval_loss``, else ``RUNNING``."""
    if "final_train_eval_loss" in table and np.isfinite(table["final_train_eval_loss"].to_numpy(dtype=float)).any():
        return TRAIN_EVAL
    return RUNNING


def generalization_gap(table: pd.DataFrame, summary: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """(per batch size: batch_size, final_train_loss, final_val_loss, generalization_gap,
    sharpness, gap_trials; the training column the gap used, None where no gap is finite).

    ``final_train_loss`` is the training loss the gap subtracts, from that column.
    """
    column = gap_column(table)
    train = table["final_train_eval_loss"] if column == TRAIN_EVAL else table["final_train_loss"]
    rows = []
    for _, s in summary.iterrows():
        b, lr = int(s["batch_size"]), s["best_trial_lr"]
        same = (
            ((table["batch_size"] == b) & np.isclose(table["lr"], lr, rtol=1e-9) & (table["status"] != "diverged"))
            if np.isfinite(lr)
            else pd.Series(False, index=table.index)
        )
        t, v = train[same], table.loc[same, "final_val_loss"]
        gap = v - t
        sharp = table.loc[same, "sharpness"]
        rows.append(
            {
                "batch_size": b,
                "final_train_loss": float(t.mean()) if t.notna().any() else np.nan,
                "final_val_loss": float(v.mean()) if v.notna().any() else np.nan,
                "generalization_gap": float(gap.mean()) if gap.notna().any() else np.nan,
                "sharpness": float(sharp.mean()) if sharp.notna().any() else np.nan,
                "gap_trials": int(gap.notna().sum()),
            }
        )
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out, (column if np.isfinite(out["generalization_gap"].to_numpy(dtype=float)).any() else None)
