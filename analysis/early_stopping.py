"""What early stopping did in a run: per batch size, the trials stopped at each rung and
the examples that saved against running every trial to its end.

Reads what the sweep records: ``RUN_DIR/tune/early_stopping.json`` (the scheduler's
record, written by ``orchestrator.sweep.SchedulerState``: its settings, each batch size's
rungs, and ``stopped_at``, trial id -> the rung in examples it was stopped at), the trials
table (status and examples seen of each trial) and the study's ``[budget]`` (each batch
size's cap). A stopped trial would have run on to its cap at most -- it might have reached
the target or diverged before -- so the examples saved are an upper bound; the benchmark
``bench/bench_early_stopping.py`` measures the real saving against a full-grid run.

    from analysis import load_run
    from analysis.early_stopping import early_stopping_section
    run = load_run("/path/to/RUN_DIR")
    section = early_stopping_section(run.run_dir, run.trials, run.study)
    section.table if section else None
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.contract import UsageError, step_cap

RECORD = Path("tune") / "early_stopping.json"


@dataclass(frozen=True)
class EarlyStoppingSection:
    """The report's early-stopping section."""

    text: str
    """One paragraph: the scheduler, its settings and the totals."""
    items: tuple[str, ...]
    """One line per batch size."""
    table: pd.DataFrame
    """Per batch size: ``batch_size``, ``trials``, ``early_stopped``, ``stopped_at`` (rung in
    examples -> trials stopped there), ``examples_trained``, ``examples_to_caps`` (had every
    trial run to its cap), ``saved_at_most`` (the stopped trials' examples to their caps)."""


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN_DIR/tune/early_stopping.json``, or None when the sweep wrote none."""
    try:
        record: dict[str, Any] = json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record


def _short(n: float) -> str:
    if not math.isfinite(n):
        return "?"
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _cap(study: dict[str, Any], batch_size: int) -> float:
    """The trial cap in examples, NaN for a run whose study states none (an imported sweep)."""
    budget = study.get("budget", {})
    try:
        return float(step_cap(batch_size, budget.get("max_steps"), budget.get("max_examples")) * batch_size)
    except UsageError:
        return math.nan


def per_batch_table(trials: pd.DataFrame, study: dict[str, Any], record: dict[str, Any] | None) -> pd.DataFrame:
    """What early stopping did at each batch size (see ``EarlyStoppingSection.table``)."""
    stopped_at = {str(k): float(v) for k, v in (record or {}).get("stopped_at", {}).items()}
    rows = []
    for b, g in trials.groupby("batch_size", sort=True):
        b = int(b)
        cap = _cap(study, b)
        seen = g["examples_seen"].to_numpy(dtype=float)
        seen = np.where(np.isfinite(seen), seen, 0.0)
        stopped = g["status"].to_numpy() == "early_stopped"
        rungs: dict[float, int] = {}
        for tid in g.loc[stopped, "trial_id"].astype(str):
            rung = stopped_at.get(tid, math.nan)
            rungs[rung] = rungs.get(rung, 0) + 1
        rows.append(
            {
                "batch_size": b,
                "trials": len(g),
                "early_stopped": int(stopped.sum()),
                "stopped_at": dict(sorted(rungs.items(), key=lambda x: (math.isnan(x[0]), x[0]))),
                "examples_trained": float(seen.sum()),
                "examples_to_caps": float(cap * len(g)),
                "saved_at_most": float(np.maximum(cap - seen[stopped], 0.0).sum()),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "batch_size",
            "trials",
            "early_stopped",
            "stopped_at",
            "examples_trained",
            "examples_to_caps",
            "saved_at_most",
        ],
    )


def _rungs_text(stopped_at: dict[float, int]) -> str:
    """`` (4 at 60k, 1 at 180k)``, or nothing when none stopped."""
    if not stopped_at:
        return ""
    return (
        " ("
        + ", ".join(f"{n} at {'an unrecorded rung' if math.isnan(r) else _short(r)}" for r, n in stopped_at.items())
        + ")"
    )


def early_stopping_section(
    run_dir: str | Path, trials: pd.DataFrame | None, study: dict[str, Any]
) -> EarlyStoppingSection | None:
    """The section, or None without a trials table to count from."""
    if trials is None or trials.empty or "examples_seen" not in trials:
        return None
    es = study.get("early_stopping", {})
    scheduler = str(es.get("scheduler", "asha"))
    record = read_record(run_dir)
    table = per_batch_table(trials, study, record)
    trained, to_caps = table["examples_trained"].sum(), table["examples_to_caps"].sum()
    if scheduler == "none":
        text = (
            f'No early stopping (`scheduler = "none"`): every trial ran to its target, cap or '
            f"divergence; {_short(trained)} examples trained of {_short(to_caps)} had every trial run "
            "to its cap."
        )
        return EarlyStoppingSection(text, (), table)
    name = {"asha": "asynchronous", "sha": "synchronous"}.get(scheduler, scheduler)
    scope = "within each batch size" if es.get("per_batch_size", True) else "across all batch sizes (shared)"
    saved = table["saved_at_most"].sum()
    text = (
        f"{name.capitalize()} successive halving (`{scheduler}`) {scope} on `{es.get('metric', '?')}` "
        f"({es.get('mode', '?')}), first rung at {_short(float(es.get('grace_examples', math.nan)))} examples, "
        f"reduction factor {float(es.get('reduction_factor', math.nan)):g}: {int(table['early_stopped'].sum())} of "
        f"{int(table['trials'].sum())} trials stopped early. The run trained {_short(trained)} examples; "
        f"the stopped trials would have trained at most {_short(saved)} more had they run to their caps "
        f"({_short(to_caps)} for every trial at its cap)."
    )
    if record is None:
        text += " The scheduler's record (tune/early_stopping.json) is missing: the rungs are unknown."
    items = tuple(
        f"B = {r.batch_size}: {r.early_stopped} of {r.trials} stopped{_rungs_text(r.stopped_at)}; "
        f"{_short(r.examples_trained)} examples trained, at most {_short(r.saved_at_most)} saved"
        for r in table.itertuples(index=False)
    )
    return EarlyStoppingSection(text, items, table)
