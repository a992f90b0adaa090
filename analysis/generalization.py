"""Generalization gap per batch size at the best LR (Keskar et al. 2016).

The gap is final validation loss minus final training loss (each the last finite value in
the curves), averaged over the trials that share the batch size's best trial's LR (its
seeds) and did not diverge; sharpness from trials.parquet is averaged alongside when
measured.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run, per_batch_summary
    from analysis.steps import trial_table
    from analysis.generalization import generalization_gap
    run = load_run("/tmp/demo")
    generalization_gap(trial_table(run), per_batch_summary(run))
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def generalization_gap(table: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """batch_size, final_train_loss, final_val_loss, generalization_gap, sharpness, gap_trials."""
    rows = []
    for _, s in summary.iterrows():
        b, lr = int(s["batch_size"]), s["best_trial_lr"]
        same = table[(table["batch_size"] == b) & np.isclose(table["lr"], lr, rtol=1e-9)
                     & (table["status"] != "diverged")] if np.isfinite(lr) else table.iloc[:0]
        gap = same["final_val_loss"] - same["final_train_loss"]
        rows.append({
            "batch_size": b,
            "final_train_loss": float(same["final_train_loss"].mean()) if len(same) else np.nan,
            "final_val_loss": float(same["final_val_loss"].mean()) if len(same) else np.nan,
            "generalization_gap": float(gap.mean()) if gap.notna().any() else np.nan,
            "sharpness": float(same["sharpness"].mean()) if same["sharpness"].notna().any() else np.nan,
            "gap_trials": int(gap.notna().sum()),
        })
    return pd.DataFrame(rows, columns=["batch_size", "final_train_loss", "final_val_loss",
                                       "generalization_gap", "sharpness", "gap_trials"])
