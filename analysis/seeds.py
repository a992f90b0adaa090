"""Seed spread per (batch size, learning rate): how many seeds reach the target ("3 of 5
runs reach 94%", as Myrtle.ai reports it) and how far apart the seeds land, for any study
with ``search.seeds`` > 1. The spread is the sample standard deviation (ddof 1) and the
range over the seeds that reached the target (steps) or that have a finite final metric.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/seeds", seeds=3)
    from analysis import load_run
    from analysis.fits import analyse
    from analysis.seeds import seed_table
    data, text = seed_table(analyse(load_run("/tmp/seeds"), n_boot=50))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .numbers import MISSING_CELL as MISSING
from .numbers import format_number
from .results import Analysis


def spread(values: pd.Series) -> tuple[float, float, float, float]:
    """(mean, sample sd, min, max) of the finite values; NaN where there are too few."""
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return (np.nan,) * 4
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else np.nan, float(v.min()), float(v.max())


def plus_minus(mean: float, sd: float) -> str:
    """``mean ± sd`` as the tables print it (the mean alone with one seed, a dash with none)."""
    if not np.isfinite(mean):
        return MISSING
    g = format_number(mean, missing=MISSING)
    return g if not np.isfinite(sd) else f"{g} ± {format_number(sd, missing=MISSING)}"


def seed_table(a: Analysis) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """One row per (batch size, LR) over its seeds; None when no (B, LR) has two seeds."""
    t = a.trials
    groups = t.groupby(["batch_size", "lr"], sort=True)
    if groups.size().max() < 2:
        return None
    metric = a.target.metric
    rows = []
    for (b, lr), grp in groups:
        s_mean, s_sd, s_min, s_max = spread(grp["steps_to_target"])
        m_mean, m_sd, _, _ = spread(grp["final_metric"])
        rows.append(
            {
                "batch_size": int(b),
                "lr": float(lr),
                "seeds": len(grp),
                "reached": int(grp["reached"].sum()),
                "diverged": int((grp["status"] == "diverged").sum()),
                "steps_to_target_mean": s_mean,
                "steps_to_target_sd": s_sd,
                "steps_to_target_min": s_min,
                "steps_to_target_max": s_max,
                f"final_{metric}_mean": m_mean,
                f"final_{metric}_sd": m_sd,
            }
        )
    data = pd.DataFrame(rows)

    def g(x: float) -> str:
        return format_number(x, missing=MISSING)

    pm = plus_minus
    text = pd.DataFrame(
        {
            "B": data["batch_size"].map(g),
            "LR": data["lr"].map(g),
            "reached": [f"{r} of {n}" for r, n in zip(data["reached"], data["seeds"], strict=True)],
            "diverged": data["diverged"].map(g),
            "steps S (mean ± sd)": [
                pm(m, s) for m, s in zip(data["steps_to_target_mean"], data["steps_to_target_sd"], strict=True)
            ],
            "S range": [
                MISSING if not np.isfinite(lo) else f"{g(lo)}–{g(hi)}"
                for lo, hi in zip(data["steps_to_target_min"], data["steps_to_target_max"], strict=True)
            ],
            f"final {metric} (mean ± sd)": [
                pm(m, s) for m, s in zip(data[f"final_{metric}_mean"], data[f"final_{metric}_sd"], strict=True)
            ],
        }
    )
    return data, text
