"""The LR range test (Leslie Smith 2015, 2018): one short run per batch size whose LR rises
exponentially from ``min`` to ``max``; the loss falls where learning starts and blows up
where it diverges. The rule this project picks with, and the one it shows beside it:

- **picked: "minimum / 10"** (fastai's ``SuggestionMethod.Minimum``; Smith's "an order of
  magnitude below where the loss is lowest"): the LR at the minimum of the smoothed training
  loss, divided by ``MARGIN`` = 10. The minimum sits close to the divergence bound (for SGD
  on a quadratic, 2(1 + m)/h_max), so the pick keeps a documented margin of 10 below it.
- **shown: "steepest"** (PyTorch Lightning's ``suggestion()``): the LR where the smoothed loss
  falls fastest against log LR, skipping the first 10 and the last point.

The smoothing is the debiased exponential moving average both libraries use (β = 0.98).

    from analysis.range_test import suggest, range_test_comparison
    s = suggest(lrs, losses)          # the range test's lr_current and train_loss, by step
    s.pick, s.minimum_lr, s.steepest_lr, s.note
    range_test_comparison(analyse(load_run("runs/..."), n_boot=50))   # the report's section
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trainables.contract import RunError, read_curves, read_trials

from .numbers import format_number

if TYPE_CHECKING:
    from .results import Analysis

RANGE_TEST_DIR = "range_test"
"""Under RUN_DIR: the range tests (``curves/``, ``trials.parquet``, ``tune/``) and ``picks.json``."""
PICKS_FILE = "picks.json"
SMOOTHING = 0.98
MARGIN = 10.0
SKIP_BEGIN, SKIP_END = 10, 1


@dataclass(frozen=True)
class Suggestion:
    """What one range test suggests."""

    pick: float | None
    """The LR the grid is centred on: ``minimum_lr / MARGIN`` (None: no finite loss)."""
    minimum_lr: float | None
    """The LR at the smoothed loss's minimum."""
    steepest_lr: float | None
    """Lightning's rule, for comparison (None: too few points)."""
    note: str
    """Why the pick is null, or a caution ("" when there is none)."""


def smoothed(losses: np.ndarray) -> np.ndarray:
    """The debiased exponential moving average of ``losses`` (β = ``SMOOTHING``)."""
    out, avg = np.empty(len(losses)), 0.0
    for i, x in enumerate(losses):
        avg = SMOOTHING * avg + (1 - SMOOTHING) * x
        out[i] = avg / (1 - SMOOTHING ** (i + 1))
    return out


def suggest(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """The range test's suggestion from its LR and training loss per update (in order); a
    non-finite loss (the divergence) ends the curve."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    bad = np.flatnonzero(~np.isfinite(losses))
    end = int(bad[0]) if len(bad) else len(losses)
    lrs, losses = lrs[:end], losses[:end]
    if len(losses) < 2:
        return Suggestion(None, None, None, f"only {len(losses)} finite losses: nothing to pick from")
    s = smoothed(losses)
    i = int(np.argmin(s))
    note = ""
    if i == len(s) - 1:
        note = "the loss was still falling at the last LR: range_test.max may be too low"
    steep = None
    if len(s) > SKIP_BEGIN + SKIP_END + 1:
        part = slice(SKIP_BEGIN, len(s) - SKIP_END)
        grad = np.gradient(s[part], np.log(lrs[part]))
        steep = float(lrs[part][int(np.argmin(grad))])
    return Suggestion(float(lrs[i]) / MARGIN, float(lrs[i]), steep, note)


def range_curves(run_dir: Path) -> pd.DataFrame | None:
    """Every range test's rows (batch_size, step, lr_current, train_loss), by step; None
    when the run has none."""
    d = Path(run_dir) / RANGE_TEST_DIR / "curves"
    if not d.is_dir():
        return None
    try:
        curves = read_curves(d).to_pandas()
    except RunError:
        return None
    return curves.sort_values(["batch_size", "step"]).reset_index(drop=True)


def suggestions(curves: pd.DataFrame) -> dict[int, Suggestion]:
    """Per batch size, the suggestion of its range test."""
    return {
        int(b): suggest(d["lr_current"].to_numpy(dtype=float), d["train_loss"].to_numpy(dtype=float))
        for b, d in curves.groupby("batch_size", sort=True)
    }


def write_picks(run_dir: Path, found: dict[int, Suggestion]) -> Path:
    """``RUN_DIR/range_test/picks.json``: batch size -> the suggestion (what the sweep used)."""
    from trainables.contract import write_atomic

    path = Path(run_dir) / RANGE_TEST_DIR / PICKS_FILE
    body = {str(b): s.__dict__ for b, s in sorted(found.items())}
    write_atomic(path, json.dumps(body, indent=2) + "\n")
    return path


def read_picks(run_dir: Path) -> dict[int, Suggestion] | None:
    """What ``write_picks`` wrote; None when the run has no range test."""
    path = Path(run_dir) / RANGE_TEST_DIR / PICKS_FILE
    if not path.is_file():
        return None
    return {int(b): Suggestion(**s) for b, s in json.loads(path.read_text()).items()}


@dataclass(frozen=True)
class RangeTestComparison:
    """The range tests against the sweep, ready for the report."""

    table: pd.DataFrame
    """Per batch size: the picked, minimum and steepest LRs, the grid's ends, the sweep's best
    LR, their ratio and whether the best LR was inside the grid (not on its edge)."""
    text: pd.DataFrame
    """The same, rounded."""
    curves: pd.DataFrame
    """The range tests' rows, with the smoothed loss (the figure)."""
    findings: tuple[str, ...]


def range_test_comparison(a: Analysis) -> RangeTestComparison | None:
    """The section's data for a run with range tests; None for one without."""
    run_dir = a.run.run_dir
    curves, picks = range_curves(run_dir), read_picks(run_dir)
    if curves is None or picks is None:
        return None
    curves = curves.copy()
    curves["smoothed_loss"] = np.nan
    for _, d in curves.groupby("batch_size"):
        curves.loc[d.index, "smoothed_loss"] = smoothed(d["train_loss"].to_numpy(dtype=float))
    best = a.per_batch.set_index("batch_size")
    grids = a.trials.groupby("batch_size")["lr"].agg(["min", "max"])
    rows = []
    for b, s in sorted(picks.items()):
        best_lr = float(best.loc[b, "best_lr"]) if b in best.index else np.nan
        edge = bool(best.loc[b, "lr_on_edge"]) if b in best.index else True
        rows.append(
            {
                "batch_size": b,
                "picked_lr": s.pick,
                "minimum_lr": s.minimum_lr,
                "steepest_lr": s.steepest_lr,
                "grid_min": float(grids.loc[b, "min"]) if b in grids.index else np.nan,
                "grid_max": float(grids.loc[b, "max"]) if b in grids.index else np.nan,
                "best_lr": best_lr,
                "best_over_picked": best_lr / s.pick if s.pick else np.nan,
                "best_inside_grid": np.isfinite(best_lr) and not edge,
            }
        )
    table = pd.DataFrame(rows)
    text = table.copy()
    for col in text.columns:
        text[col] = [format_number(x) for x in table[col]]
    return RangeTestComparison(table, text, curves, _findings(run_dir, table))


def _findings(run_dir: Path, table: pd.DataFrame) -> tuple[str, ...]:
    cost = _examples(run_dir / RANGE_TEST_DIR / "trials.parquet")
    sweep = _examples(run_dir / "trials.parquet")
    inside = int(table["best_inside_grid"].sum())
    out = [
        f"The best LR landed inside its centred grid (not on an edge) at {inside} of {len(table)} batch sizes.",
    ]
    ratios = table["best_over_picked"].to_numpy(dtype=float)
    ratios = ratios[np.isfinite(ratios)]
    if len(ratios):
        out.append(
            f"The sweep's best LR over the picked one: {format_number(float(np.min(ratios)))} to "
            f"{format_number(float(np.max(ratios)))} (median {format_number(float(np.median(ratios)))})."
        )
    if cost is not None and sweep:
        out.append(
            f"The range tests trained {cost:,} examples, {format_number(100 * cost / sweep)}% of the sweep's {sweep:,}."
        )
    return tuple(out)


def _examples(path: Path) -> int | None:
    if not path.is_file():
        return None
    return int(read_trials(path).column("examples_seen").to_numpy().sum())
