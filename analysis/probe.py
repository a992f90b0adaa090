"""The forgetting probe's table (``trainables.forgetting``): per batch size, over the trials
that measured it (those that ran to their end), the mean loss of the final weights on the
batches they trained on last, on batches from the start of that epoch (seen ``age`` epochs
before the end), and on held-out data. A model that forgets within an epoch has the recent
loss below the early one, and the early one back at the held-out level.

    from analysis import load_run
    from analysis.fits import analyse
    from analysis.probe import probe_table
    got = probe_table(analyse(load_run("runs/fashion-mnist-..."), n_boot=50))  # None: not measured
"""

from __future__ import annotations

import pandas as pd

from .numbers import MISSING_CELL, format_number
from .results import Analysis

COLUMNS = {
    "probe_recent_loss": "recent",
    "probe_early_loss": "early",
    "probe_early_age_epochs": "early age (epochs)",
    "probe_heldout_loss": "held-out",
}


def probe_table(a: Analysis) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """One row per batch size with a probed trial; None when no trial measured it."""
    t = a.trials
    if "probe_recent_loss" not in t or t["probe_recent_loss"].isna().all():
        return None
    probed = t[t["probe_recent_loss"].notna()]
    data = probed.groupby("batch_size", sort=True)[list(COLUMNS)].mean().reset_index()
    data.insert(1, "trials", probed.groupby("batch_size", sort=True).size().to_numpy())
    data["recent_minus_heldout"] = data["probe_recent_loss"] - data["probe_heldout_loss"]
    data["early_minus_heldout"] = data["probe_early_loss"] - data["probe_heldout_loss"]

    def g(x: float) -> str:
        return format_number(x, missing=MISSING_CELL)

    text = pd.DataFrame({"B": data["batch_size"].map(g), "trials": data["trials"].map(g)})
    for col, head in COLUMNS.items():
        text[head] = data[col].map(g)
    text["recent − held-out"] = data["recent_minus_heldout"].map(g)
    text["early − held-out"] = data["early_minus_heldout"].map(g)
    return data, text
