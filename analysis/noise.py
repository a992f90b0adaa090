"""Gradient noise scale B_simple (McCandlish et al. 2018) from the curves, when measured.

B_simple grows as the loss falls, so it is compared with B_crit at the target: for each
batch size's best trial, the last finite ``grad_noise_scale`` at or before the step it
reached the target (the first measurement when none came earlier). The run's ``b_simple``
is the median of these over batch sizes. Batch sizes that never reached the target do not
contribute, since their noise scale was never measured at the target loss.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo", noise_scale=300.0)   # a synthetic RUN_DIR; any real one works
    from analysis import load_run, per_batch_summary
    from analysis.noise import noise_scale
    run = load_run("/tmp/demo")
    noise_scale(run, per_batch_summary(run)).b_simple    # about 300
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .load import Run
from .results import NoiseScale

COLUMN = "grad_noise_scale"


def has_noise_scale(run: Run) -> bool:
    c = run.curves
    return COLUMN in c.columns and bool(np.isfinite(c[COLUMN].to_numpy(dtype=float, na_value=np.nan)).any())


def noise_curves(run: Run, summary: pd.DataFrame) -> pd.DataFrame:
    """The best trial's noise-scale measurements per batch size (batch_size, step, examples_seen, value)."""
    if not has_noise_scale(run):
        return pd.DataFrame(columns=["batch_size", "trial_id", "step", "examples_seen", COLUMN])
    ids = summary["best_trial_id"].dropna().astype(str)
    c = run.curves
    cols = ["batch_size", "trial_id", "step", COLUMN] + (["examples_seen"] if "examples_seen" in c.columns else [])
    rows = c.loc[c["trial_id"].isin(set(ids)), cols].copy()
    rows[COLUMN] = rows[COLUMN].astype(float)
    rows = rows[np.isfinite(rows[COLUMN].to_numpy())]
    by_steps = rows["step"].astype(float) * rows["batch_size"]
    rows["examples_seen"] = pd.to_numeric(rows.get("examples_seen", by_steps), errors="coerce").fillna(by_steps)
    return rows.sort_values(["batch_size", "step"]).reset_index(drop=True)


def _at_target(curves: pd.DataFrame, summary: pd.DataFrame) -> dict[int, float]:
    values: dict[int, float] = {}
    for _, row in summary.iterrows():
        s = row["steps_to_target"]
        if not np.isfinite(s) or row["best_trial_id"] is None:
            continue
        t = curves[curves["trial_id"] == row["best_trial_id"]]
        if t.empty:
            continue
        before = t[t["step"] <= s]
        values[int(row["batch_size"])] = float((before if not before.empty else t.iloc[:1])[COLUMN].iloc[-1])
    return values


def noise_scale(run: Run, summary: pd.DataFrame) -> NoiseScale:
    """B_simple of each batch size's best trial at the target, their median, and the curves."""
    curves = noise_curves(run, summary)
    per_batch = _at_target(curves, summary)
    b_simple = float(pd.Series(per_batch, dtype=float).median()) if per_batch else None
    return NoiseScale(measured=has_noise_scale(run), b_simple=b_simple, per_batch=per_batch, curves=curves)
