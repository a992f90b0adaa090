"""The local critical batch size by branching (Merrill et al. 2025), from the legs
``orchestrator.branching`` ran under ``RUN_DIR/branching/``.

At each checkpoint of the base run (batch B0), the reference branch (k = 1, the base
continued) and the branches at k·B0 all train the same ``window`` examples; each ends
with its loss L_k (the study's ``branching.metric`` at the window's end, the mean over
``branching.seeds`` replicas). Walking k
upwards, a branch keeps up when L_k ≤ (1 + tolerance) · min_{j<k} L_j (j = 1 included), and
the local critical batch size is B0 times the largest k up to which every branch keeps
up. Where none does it is censored below (< the smallest k·B0), where all do above
(≥ the largest); a diverged branch does not keep up.

This is not McCandlish's B_crit: that one is a property of the whole run to the target
with the LR re-tuned per batch size (steps to target against B); the branched one is local
(the largest batch that, with the LR moved by one rule, loses nothing against the base
from this point on, over a short window) and depends on the base run's LR.

    from analysis import load_run
    from analysis.branching import branching
    run = load_run("runs/nqm-branching-...")
    br = branching(run.run_dir, run.study)    # None: the run has no branching
    br.table            # one row per checkpoint: examples, base loss, local CBS, censoring
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.contract import BRANCHING_DIR, RunError, read_curves, read_trials

from .numbers import format_number


@dataclass(frozen=True)
class LocalCritical:
    """The rule's answer at one checkpoint."""

    multiplier: int
    """The largest k up to which every branch keeps up (1: none does)."""
    censored: str | None
    """"below": not even the smallest k keeps up; "above": the largest does; None otherwise."""


def local_critical(losses: dict[int, float], tolerance: float) -> LocalCritical:
    """The branching rule on one checkpoint's final losses ``{k: L_k}`` (k = 1 the reference).

    >>> local_critical({1: 1.0, 2: 1.005, 4: 1.01, 8: 1.2}, 0.02)
    LocalCritical(multiplier=4, censored=None)
    """
    if not math.isfinite(losses.get(1, math.nan)):
        raise ValueError("the reference branch (k = 1) has no finite loss")
    ks = sorted(k for k in losses if k > 1)
    best, kept = losses[1], 1
    for k in ks:
        value = losses[k]
        if not (math.isfinite(value) and value <= (1 + tolerance) * best):
            break
        kept, best = k, min(best, value)
    censored = "below" if kept == 1 else "above" if ks and kept == ks[-1] else None
    return LocalCritical(kept, censored)


@dataclass(frozen=True)
class Branched:
    """What the branching measured, ready for the report."""

    table: pd.DataFrame
    """One row per checkpoint: examples, base loss there, the reference's loss after the
    window, the local critical batch size (null where the base never got there) and its
    censoring, B_simple measured by the base run there (null when not reported)."""
    branches: pd.DataFrame
    """One row per branch: checkpoint, k, replica, batch size, LR, status, final loss, and
    loss / the reference's (its mean over replicas)."""
    base_curve: pd.DataFrame
    """The base run: examples seen, its loss and ``grad_noise_scale`` (where reported)."""
    settings: dict[str, Any]
    """The study's ``[branching]`` table."""
    examples: int
    """Examples all legs trained (the base run plus every branch)."""
    text: pd.DataFrame
    """``table`` rounded for the report and LaTeX."""


def branching(run_dir: Path, study: dict[str, Any]) -> Branched | None:
    """The measurement of a run with ``[branching]``; None when the study has none or no
    phase finished. Raises ``RunError`` for a phase that cannot be read."""
    settings = study.get("branching")
    root = Path(run_dir) / BRANCHING_DIR
    if not settings or not root.is_dir():
        return None
    legs = []
    for phase in sorted(root.glob("phase*"), key=lambda p: int(p.name.removeprefix("phase"))):
        if not (phase / "trials.parquet").is_file():
            continue
        legs.append(_phase_legs(phase, settings.get("metric", "val_loss")))
    if not legs:
        return None
    rows = pd.concat(legs, ignore_index=True)
    base = rows[rows["role"] == "base"]
    curve = pd.concat(list(base["curve"]), ignore_index=True) if len(base) else pd.DataFrame()
    curve = curve.sort_values("examples_seen", ignore_index=True) if len(curve) else curve
    branches = rows[rows["role"] == "branch"].drop(columns=["curve", "role"])
    table = _per_checkpoint(settings, branches, curve)
    out = branches.sort_values(["checkpoint", "multiplier"], ignore_index=True)
    ref = out[out["multiplier"] == 1].groupby("checkpoint")["final_loss"].mean()
    out["loss_ratio"] = out["final_loss"] / out["checkpoint"].map(ref)
    return Branched(table, out, curve, dict(settings), int(rows["examples"].sum()), _text(table))


def _phase_legs(phase: Path, metric: str) -> pd.DataFrame:
    legs_file = phase / "legs.json"
    if not legs_file.is_file():
        raise RunError(f"{legs_file} is missing")
    legs = json.loads(legs_file.read_text())
    trials = read_trials(phase / "trials.parquet").to_pandas().set_index("trial_id")
    curves = read_curves(phase / "curves").to_pandas()
    out = []
    for tid, leg in legs.items():
        if tid not in trials.index:
            continue
        c = curves[curves["trial_id"] == tid].sort_values("step")
        status = str(trials.loc[tid, "status"])
        last = c[metric].dropna() if metric in c.columns else pd.Series(dtype=float)
        ran = status == "completed" and len(c) and int(c["examples_seen"].iloc[-1]) == leg["examples"]
        blank = np.full(len(c), np.nan)
        out.append(
            {
                **leg,
                "trial_id": tid,
                "batch_size": int(trials.loc[tid, "batch_size"]),
                "lr": float(trials.loc[tid, "lr"]),
                "status": status,
                "final_loss": float(last.iloc[-1]) if ran and len(last) else math.inf,
                "curve": pd.DataFrame(
                    {
                        "examples_seen": c["examples_seen"].to_numpy() + leg["start_examples"],
                        "loss": c[metric].to_numpy(dtype=float) if metric in c.columns else blank,
                        "grad_noise_scale": (
                            c["grad_noise_scale"].to_numpy(dtype=float) if "grad_noise_scale" in c.columns else blank
                        ),
                    }
                ),
            }
        )
    return pd.DataFrame(out)


def _per_checkpoint(settings: dict[str, Any], branches: pd.DataFrame, curve: pd.DataFrame) -> pd.DataFrame:
    b0, tol = int(settings["base_batch"]), float(settings.get("tolerance", 0.02))
    rows = []
    for i, c in enumerate(settings["checkpoints"]):
        at = branches[branches["checkpoint"] == i]
        # the mean over a branch's replicas (seeds); a diverged replica makes it inf
        losses = {int(k): float(v.mean()) for k, v in at.groupby("multiplier")["final_loss"]}
        upto = curve[curve["examples_seen"] <= c] if len(curve) else curve
        reached = len(upto) and int(upto["examples_seen"].iloc[-1]) == c
        ans = local_critical(losses, tol) if math.isfinite(losses.get(1, math.inf)) else None
        noise = upto["grad_noise_scale"].dropna() if reached else pd.Series(dtype=float)
        rows.append(
            {
                "checkpoint": i,
                "examples_seen": int(c),
                "base_loss": float(upto["loss"].iloc[-1]) if reached else None,
                "reference_loss": losses.get(1) if ans is not None else None,
                "local_critical_batch": None if ans is None else ans.multiplier * b0,
                "censored": None if ans is None else ans.censored,
                "branches": len(losses),
                "b_simple": float(noise.iloc[-1]) if len(noise) else None,
                "reason": None if ans is not None else "the base run or its reference branch did not get there",
            }
        )
    return pd.DataFrame(rows)


def _text(table: pd.DataFrame) -> pd.DataFrame:
    def cbs(r: Any) -> str:
        v = r.local_critical_batch
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "n/a"
        side = r.censored if isinstance(r.censored, str) else ""  # None reads back as NaN
        prefix = {"below": "< ", "above": "≥ "}.get(side, "")
        return prefix + (format_number(int(v) * 2) if side == "below" else format_number(int(v)))

    return pd.DataFrame(
        {
            "examples seen": [format_number(int(x)) for x in table["examples_seen"]],
            "base loss": [format_number(x) for x in table["base_loss"]],
            "local critical batch": [cbs(r) for r in table.itertuples()],
            "B_simple (base)": [format_number(x) for x in table["b_simple"]],
        }
    )
