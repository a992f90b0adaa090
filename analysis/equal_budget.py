"""The equal-budget comparison of LR policies (``[protocol] kind = "fixed_budget"``): every
batch size trains on the same examples, and each policy sets its LR -- constant, the linear
rule (Goyal et al. 2017), the square-root rule (Malladi et al. 2022) from the study's
``base_lr`` at ``base_batch``, or ``tuned``: the best LR tried at that batch size.

Per (policy, batch size), over the seeds of the policy's LR: the final and best validation
loss, the final validation accuracy, the generalization gap (final validation minus final
training loss of the same weights), the distance travelled from the initial weights
‖θ − θ₀‖ (Hoffer et al. 2017) and the wall time per epoch. ``tuned`` picks, per batch
size, the LR with the lowest mean final validation loss among those whose every seed ran
to the budget (a diverged seed disqualifies its LR). ``gap_closed`` says how much of the
constant LR's loss excess over ``tuned`` a rule removes: 1 is all of it, 0 none.

    from analysis import load_run
    from analysis.fits import analyse
    from analysis.equal_budget import equal_budget
    eb = equal_budget(analyse(load_run("runs/lr-policies-..."), n_boot=50))   # None: no policies
    eb.table, eb.findings
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainables.contract import rule_lr

from .numbers import MISSING_CELL, format_number
from .results import Analysis
from .seeds import plus_minus, spread

POLICY_ORDER = ("constant", "sqrt", "linear", "tuned")


@dataclass(frozen=True)
class EqualBudget:
    """The comparison, ready for the report."""

    table: pd.DataFrame
    """One row per (policy, batch size): the raw values (the CSV)."""
    text: pd.DataFrame
    """The same, rounded, mean ± sd over seeds (report and LaTeX)."""
    findings: tuple[str, ...]
    """One sentence per measured fact (gap closed at each batch size, distance, epoch time)."""


def policies_of(study: dict[str, Any]) -> tuple[list[str], dict[str, Any]] | None:
    """The study's LR policies (in ``POLICY_ORDER``) and its ``search.lr`` table; a
    fixed_budget study without policies compares ``tuned`` alone; None otherwise."""
    lr = study.get("search", {}).get("lr", {})
    if "policies" in lr:
        return [p for p in POLICY_ORDER if p in lr["policies"]], lr
    if study.get("protocol", {}).get("kind") == "fixed_budget":
        return ["tuned"], lr
    return None


def final_rows(curves: pd.DataFrame) -> pd.DataFrame:
    """Per trial id: its final validation accuracy, best validation loss, final distance
    from init and seconds per epoch (wall time over epochs at its last row)."""
    c = curves.sort_values(["trial_id", "step"])
    g = c.groupby("trial_id", sort=True)
    last = g.last()  # the last non-null value of each column

    def col(name: str) -> pd.Series:
        return last[name].astype(float) if name in last else pd.Series(np.nan, index=last.index)

    epochs = col("epoch").where(col("epoch") > 0)
    return pd.DataFrame(
        {
            "final_val_accuracy": col("val_accuracy"),
            "best_val_loss": g["val_loss"].min().astype(float) if "val_loss" in c else np.nan,
            "weight_distance": col("weight_distance"),
            "epoch_time_s": col("wall_time_s") / epochs,
        }
    )


def equal_budget(a: Analysis) -> EqualBudget | None:
    """The comparison for a study with LR policies or the fixed_budget protocol; None otherwise."""
    found = policies_of(a.run.study)
    if found is None:
        return None
    policies, lr = found
    t = a.trials.merge(final_rows(a.run.curves), left_on="trial_id", right_index=True, how="left")
    train = "final_train_eval_loss" if a.gap_train_column == "train_eval_loss" else "final_train_loss"
    t["gap"] = t["final_val_loss"] - t[train]
    rows = []
    for b, at_b in t.groupby("batch_size", sort=True):
        chosen = {p: rule_lr(p, lr["base_lr"], lr["base_batch"], int(b)) for p in policies if p != "tuned"}
        if "tuned" in policies and (best := _tuned_lr(at_b)) is not None:
            chosen["tuned"] = best
        for p in policies:
            seeds = at_b[np.isclose(at_b["lr"], chosen[p], rtol=1e-9)] if p in chosen else at_b.iloc[:0]
            rows.append(_row(p, int(b), chosen.get(p, np.nan), seeds))
    table = pd.DataFrame(rows)
    return EqualBudget(table, _text(table), tuple(_findings(table)))


def _tuned_lr(at_b: pd.DataFrame) -> float | None:
    """The LR of a batch size with the lowest mean final val loss over seeds that all finished."""
    best: tuple[float, float] | None = None
    for lr, seeds in at_b.groupby("lr", sort=True):
        loss = seeds["final_val_loss"].to_numpy(dtype=float)
        if (seeds["status"] != "completed").any() or not np.isfinite(loss).all():
            continue
        if best is None or loss.mean() < best[0]:
            best = (float(loss.mean()), float(lr))
    return None if best is None else best[1]


def _row(policy: str, b: int, lr: float, seeds: pd.DataFrame) -> dict[str, Any]:
    done = seeds[seeds["status"] == "completed"]
    out: dict[str, Any] = {
        "policy": policy,
        "batch_size": b,
        "lr": lr,
        "seeds": len(seeds),
        "completed": len(done),
        "diverged": int((seeds["status"] == "diverged").sum()),
    }
    for name in ("final_val_loss", "best_val_loss", "final_val_accuracy", "gap", "weight_distance", "epoch_time_s"):
        mean, sd, _, _ = spread(done[name]) if name in done else (np.nan,) * 4
        out[f"{name}_mean"], out[f"{name}_sd"] = mean, sd
    return out


def _text(table: pd.DataFrame) -> pd.DataFrame:
    def g(x: float) -> str:
        return format_number(x, missing=MISSING_CELL)

    def pm(name: str) -> list[str]:
        return [plus_minus(m, s) for m, s in zip(table[f"{name}_mean"], table[f"{name}_sd"], strict=True)]

    return pd.DataFrame(
        {
            "policy": table["policy"],
            "B": table["batch_size"].map(g),
            "LR": table["lr"].map(g),
            "finished": [f"{c} of {n}" for c, n in zip(table["completed"], table["seeds"], strict=True)],
            "final val loss": pm("final_val_loss"),
            "best val loss": pm("best_val_loss"),
            "final val acc": pm("final_val_accuracy"),
            "gap": pm("gap"),
            "‖θ − θ₀‖": pm("weight_distance"),
            "s / epoch": pm("epoch_time_s"),
        }
    )


def gap_closed(constant: float, rule: float, tuned: float) -> float | None:
    """The share of the constant LR's excess loss over ``tuned`` that a rule removes; None
    where constant is not worse than tuned (nothing to close) or a value is missing.

    >>> gap_closed(0.395, 0.352, 0.345)
    0.86
    """
    if not all(np.isfinite(v) for v in (constant, rule, tuned)) or constant - tuned <= 0:
        return None
    return round((constant - rule) / (constant - tuned), 2)


def _findings(table: pd.DataFrame) -> list[str]:
    def at(policy: str, b: int, col: str = "final_val_loss_mean") -> float:
        hit = table[(table["policy"] == policy) & (table["batch_size"] == b)]
        return float(hit[col].iloc[0]) if len(hit) else np.nan

    out = []
    batches = sorted(table["batch_size"].unique())
    policies = set(table["policy"])
    for rule in ("linear", "sqrt"):
        if not {"constant", rule, "tuned"} <= policies:
            continue
        parts = []
        for b in batches:
            c, r, t = at("constant", b), at(rule, b), at("tuned", b)
            closed = gap_closed(c, r, t)
            if closed is not None:
                parts.append(f"B={b}: {closed:.0%} (constant {c:.3f}, {rule} {r:.3f}, tuned {t:.3f})")
            elif np.isfinite(c) and np.isfinite(t) and not np.isfinite(r):
                lr, div, n = (at(rule, b, k) for k in ("lr", "diverged", "seeds"))
                parts.append(f"B={b}: the {rule} LR {lr:.3g} diverged on {div:.0f} of {n:.0f} seeds")
        if parts:
            out.append(
                f"Share of the constant LR's excess final val loss over tuned that {rule} scaling removes: "
                + "; ".join(parts)
                + "."
            )
    policy = "tuned" if "tuned" in policies else str(table["policy"].iloc[0])
    mine = table[table["policy"] == policy]
    for col, what, unit in (
        ("weight_distance_mean", f"Distance from the initial weights at the {policy} LR", ""),
        ("epoch_time_s_mean", "Wall time per epoch (this run's hardware, packed trials)", " s"),
    ):
        d = mine.dropna(subset=[col])
        if len(d) >= 2:
            out.append(
                f"{what}: "
                + ", ".join(f"{v:.3g}{unit} at B={b}" for b, v in zip(d["batch_size"], d[col], strict=True))
                + "."
            )
    return out
