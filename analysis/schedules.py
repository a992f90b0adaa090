"""LR decay versus batch increase (Smith, Kindermans, Ying & Le 2017): a study whose
``[schedule]`` lists several modes runs each (decay_lr, increase_batch, hybrid) from the
same batch size and LR through the same epochs. Per (batch size, LR, mode), over its seeds: the final
validation accuracy (or the target's metric), the updates and the epochs it took, and the
updates, epochs and wall time to the target (interpolated between evaluations, as
``analysis.steps`` places every crossing).

Two modes' final values differ when their means are further apart than twice the standard
error of the difference, 2·√(sd₁²/n₁ + sd₂²/n₂) (the seeds' spread); with one seed per mode
nothing can be said, and the finding says so.

    from analysis import load_run
    from analysis.schedules import schedule_comparison
    sc = schedule_comparison(load_run("runs/increase-batch-..."))   # None: a single mode
    sc.table, sc.findings
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .load import Run
from .numbers import format_number
from .seeds import plus_minus, spread
from .steps import trial_table

MODE_ORDER = ("decay_lr", "increase_batch", "hybrid")


@dataclass(frozen=True)
class ScheduleComparison:
    """The comparison, ready for the report."""

    table: pd.DataFrame
    """One row per (batch size, LR, mode): the raw means and sds over seeds (the CSV)."""
    text: pd.DataFrame
    """The same, rounded, mean ± sd (report and LaTeX)."""
    curves: pd.DataFrame
    """Every evaluation of every trial with its ``mode`` (the figure)."""
    findings: tuple[str, ...]
    """One sentence per measured fact."""


def modes_of(run: Run) -> pd.Series:
    """Each trial's ``[schedule]`` mode (index: trial_id), from ``trials.parquet``'s
    config_json; empty when the run has no trials table or no schedule."""
    t = run.trials
    if t is None or run.trials_synthesised or "config_json" not in t.columns:
        return pd.Series(dtype=object)
    modes = {}
    for tid, cfg in zip(t["trial_id"], t["config_json"], strict=True):
        sched = json.loads(cfg).get("schedule") if isinstance(cfg, str) else None
        if sched:
            modes[str(tid)] = sched["mode"]
    return pd.Series(modes, dtype=object)


def schedule_comparison(run: Run) -> ScheduleComparison | None:
    """The comparison of a run with two or more schedule modes; None otherwise."""
    modes = modes_of(run)
    present = [m for m in MODE_ORDER if m in set(modes)]
    if len(present) < 2:
        return None
    target = run.target
    metric = target.metric
    curves = run.curves[run.curves["trial_id"].isin(modes.index)].copy()
    curves["mode"] = curves["trial_id"].map(modes)
    curves = curves.sort_values(["mode", "trial_id", "step"])
    # the crossing as the steps-to-target analysis places it (interpolated between evaluations)
    crossed = trial_table(run).set_index("trial_id")
    per_trial = []
    for (mode, tid), d in curves.groupby(["mode", "trial_id"], sort=False):
        last, c = d.iloc[-1], crossed.loc[tid]
        per_epoch = float(last["epoch"]) / float(last["examples_seen"]) if last["examples_seen"] else np.nan
        per_trial.append(
            {
                "batch_size": int(d["batch_size"].iloc[0]),
                "lr": float(d["lr"].iloc[0]),
                "mode": mode,
                "trial_id": tid,
                "final": float(c["final_metric"]),
                "updates": float(last["step"]),
                "epochs": float(last["epoch"]),
                "final_batch": float(last.get("batch_size_current", np.nan)),
                "updates_to_target": float(c["steps_to_target"]),
                "epochs_to_target": float(c["examples_to_target"]) * per_epoch,
                "wall_to_target_s": float(c["wall_time_to_target_s"]),
            }
        )
    trials = pd.DataFrame(per_trial)
    rows = []
    for (b, lr), at in trials.groupby(["batch_size", "lr"], sort=True):
        for mode in present:
            g = at[at["mode"] == mode]
            if g.empty:
                continue
            row: dict[str, object] = {
                "batch_size": int(b),
                "lr": float(lr),
                "mode": mode,
                "seeds": len(g),
                "reached": int(g["updates_to_target"].notna().sum()),
            }
            for col in (
                "final",
                "updates",
                "epochs",
                "final_batch",
                "updates_to_target",
                "epochs_to_target",
                "wall_to_target_s",
            ):
                mean, sd, _, _ = spread(g[col])
                row[f"{col}_mean"], row[f"{col}_sd"] = mean, sd
            rows.append(row)
    table = pd.DataFrame(rows).rename(columns={"final_mean": f"final_{metric}_mean", "final_sd": f"final_{metric}_sd"})
    text = pd.DataFrame(
        {
            "batch": table["batch_size"].astype(str),
            "lr": [format_number(x) for x in table["lr"]],
            "mode": table["mode"],
            "seeds": table["seeds"].astype(str),
            "reached": table["reached"].astype(str),
            f"final {metric}": [
                plus_minus(m, s)
                for m, s in zip(table[f"final_{metric}_mean"], table[f"final_{metric}_sd"], strict=True)
            ],
            "updates": [format_number(x) for x in table["updates_mean"]],
            "epochs": [format_number(x) for x in table["epochs_mean"]],
            "final B": [format_number(x) for x in table["final_batch_mean"]],
            "updates to target": [
                plus_minus(m, s)
                for m, s in zip(table["updates_to_target_mean"], table["updates_to_target_sd"], strict=True)
            ],
            "epochs to target": [
                plus_minus(m, s)
                for m, s in zip(table["epochs_to_target_mean"], table["epochs_to_target_sd"], strict=True)
            ],
            "wall to target (s)": [
                plus_minus(m, s)
                for m, s in zip(table["wall_to_target_s_mean"], table["wall_to_target_s_sd"], strict=True)
            ],
        }
    )
    groups = list(table.groupby(["batch_size", "lr"], sort=True))
    findings: list[str] = []
    for (b, lr), part in groups:
        at = trials[(trials["batch_size"] == b) & (trials["lr"] == lr)]
        prefix = f"At B={b}, LR {format_number(lr)}: " if len(groups) > 1 else ""
        findings += [prefix + f for f in _findings(part, at, metric, target.value)]
    return ScheduleComparison(table, text, curves, tuple(findings))


def _findings(table: pd.DataFrame, trials: pd.DataFrame, metric: str, value: float) -> tuple[str, ...]:
    """The sentences of one (batch size, LR): each mode against decay_lr (or the first)."""
    out = []
    by = table.set_index("mode")
    ref = "decay_lr" if "decay_lr" in by.index else str(by.index[0])
    for mode in by.index:
        if mode == ref:
            continue
        r, m = by.loc[ref], by.loc[mode]
        ratio = r["updates_mean"] / m["updates_mean"] if m["updates_mean"] else np.nan
        out.append(
            f"{mode} took {format_number(m['updates_mean'])} updates for the {format_number(m['epochs_mean'])} epochs "
            f"{ref} took {format_number(r['updates_mean'])} for: {format_number(ratio)}× fewer."
        )
        n1, n2 = int(r["seeds"]), int(m["seeds"])
        a, b = trials.loc[trials["mode"] == ref, "final"], trials.loc[trials["mode"] == mode, "final"]
        diff = float(b.mean() - a.mean())
        if min(n1, n2) < 2:
            out.append(
                f"Final {metric}: {mode} {format_number(diff)} from {ref}; one seed each, so no spread to judge it by."
            )
            continue
        se = float(np.sqrt(a.var(ddof=1) / n1 + b.var(ddof=1) / n2))
        verdict = "more than" if abs(diff) > 2 * se else "within"
        out.append(
            f"Final {metric}: {mode} {plus_minus(float(b.mean()), float(b.std(ddof=1)))} against {ref} "
            f"{plus_minus(float(a.mean()), float(a.std(ddof=1)))}: a difference of {format_number(diff)}, {verdict} "
            f"the seeds' spread (2 standard errors = {format_number(2 * se)})."
        )
    reached = by["updates_to_target_mean"].dropna()
    if len(reached) >= 2:
        parts = ", ".join(
            f"{mode} {format_number(by.loc[mode, 'updates_to_target_mean'])} updates / "
            f"{format_number(by.loc[mode, 'epochs_to_target_mean'])} epochs"
            for mode in reached.index
        )
        out.append(f"To {metric} {value:g} (mean over the seeds that reached it): {parts}.")
    return tuple(out)
