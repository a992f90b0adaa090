"""Report tables: per batch size, the fitted parameters with their 95% CIs, and (with
several seeds) the seeds per batch size and LR (``analysis.seeds``), and (when the trials
measured it) the forgetting probe per batch size (``analysis.probe``).

Each is written as CSV (full precision, snake_case columns, for scripts) and as a LaTeX
booktabs table (rounded, for the paper; needs ``\\usepackage{booktabs}``). ``format_table``
gives the rounded text form that report.md and report.html show.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    from analysis.fits import analyse
    from analysis.tables import write_tables
    write_tables(analyse(load_run("/tmp/demo")), "/tmp/tables")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .curvature import curvature_forgetting
from .equal_budget import equal_budget
from .numbers import MISSING_CELL, format_interval, format_number
from .probe import probe_table
from .results import NOISE_LAWS, RULES, Analysis, Interval, LrScalingFit
from .seeds import seed_table


@dataclass(frozen=True)
class TableFile:
    """One table as written under tables/."""

    name: str
    """File stem under tables/."""

    title: str
    """Heading the report shows above it."""

    data: pd.DataFrame
    """Raw values with snake_case columns: the CSV."""

    text: pd.DataFrame
    """Rounded strings under headers for humans: report.md, report.html and the LaTeX."""

    csv: Path
    """The CSV file."""

    tex: Path
    """The LaTeX booktabs file."""


def _g(x: Any) -> str:
    return format_number(x, missing=MISSING_CELL)


def _ci(lo: Any, hi: Any) -> str:
    return format_interval((lo, hi), missing=MISSING_CELL)


def per_batch_table(a: Analysis) -> tuple[pd.DataFrame, pd.DataFrame]:
    pb = a.per_batch
    cols = [
        "batch_size",
        "trials",
        "reached",
        "censored",
        "best_lr",
        "best_lr_ci95_low",
        "best_lr_ci95_high",
        "lr_on_edge",
        "best_trial_lr",
        "steps_to_target",
        "steps_ci95_low",
        "steps_ci95_high",
        "examples_to_target",
        "wall_time_to_target_s",
        "steps_over_s_min",
        "final_train_loss",
        "final_val_loss",
        "generalization_gap",
    ]
    if pb["sharpness"].notna().any():
        cols.append("sharpness")
    if pb["b_simple_at_target"].notna().any():
        cols.append("b_simple_at_target")
    data = pb[cols].copy()
    text = pd.DataFrame(
        {
            "B": data["batch_size"].map(_g),
            "trials": data["trials"].map(_g),
            "reached": data["reached"].map(_g),
            "best LR": [_g(v) + (" (edge)" if e else "") for v, e in zip(data["best_lr"], data["lr_on_edge"])],
            "LR 95% CI": [_ci(lo, hi) for lo, hi in zip(data["best_lr_ci95_low"], data["best_lr_ci95_high"])],
            "steps S": [("censored" if c else _g(v)) for v, c in zip(data["steps_to_target"], data["censored"])],
            "S 95% CI": [_ci(lo, hi) for lo, hi in zip(data["steps_ci95_low"], data["steps_ci95_high"])],
            "examples E": data["examples_to_target"].map(_g),
            "wall (s)": data["wall_time_to_target_s"].map(_g),
            "S/S_min": data["steps_over_s_min"].map(_g),
            "gen. gap": data["generalization_gap"].map(_g),
        }
    )
    if "sharpness" in data:
        text["sharpness"] = data["sharpness"].map(_g)
    if "b_simple_at_target" in data:
        text["B_simple"] = data["b_simple_at_target"].map(_g)
    return data, text


def _nan(x: float | None) -> float:
    # The CSV holds NaN where fits.json holds null: pandas writes it as an empty field.
    return np.nan if x is None else float(x)


def _fit_row(
    parameter: str, estimate: float | None, ci: Interval | None = None, note: str | None = None
) -> dict[str, Any]:
    lo, hi = ci if ci is not None else (None, None)
    return {
        "parameter": parameter,
        "estimate": _nan(estimate),
        "ci95_low": _nan(lo),
        "ci95_high": _nan(hi),
        "note": note or "",
    }


def _inconsistency(lr: LrScalingFit, rule: str) -> str | None:
    """Why ``rule`` may not be preferred, or None when it may."""
    if lr.consistent.get(rule, True):
        return None
    law = lr.laws.get(rule)
    if law is not None and not law.identified:
        return "not preferable: B_noise pinned beyond the measured range"
    return "not preferable: outside the free exponent's CI"


def fit_table(a: Analysis) -> tuple[pd.DataFrame, pd.DataFrame]:
    c, lr, reg = a.critical, a.lr_scaling, a.regimes
    c_note = c.reason or (f"CI: {c.ci_method}" if c.ci_method else c.ci_reason)
    rows = [
        _fit_row("B_crit", c.b_crit, c.b_crit_ci95, c_note),
        _fit_row("S_min", c.s_min, c.s_min_ci95),
        _fit_row("E_min", c.e_min, c.e_min_ci95),
        _fit_row(
            "LR exponent",
            lr.exponent,
            lr.exponent_ci95,
            "; ".join(
                x
                for x in (
                    f"preferred rule: {lr.preferred_rule}" if lr.preferred_rule else lr.reason,
                    f"CI: {lr.ci_method}" if lr.ci_method else None,
                )
                if x
            ),
        ),
    ]
    for law in NOISE_LAWS:
        fitted = lr.laws.get(law)
        if fitted is not None:
            rows.append(
                _fit_row(
                    f"B_noise ({law})",
                    fitted.b_noise if fitted.identified else None,
                    fitted.b_noise_ci95,
                    fitted.ci_reason,
                )
            )
    for rule in RULES:
        freq = lr.selection_frequency.get(rule)
        notes = [f"chosen in {freq:.0%} of resamples" if freq is not None else None, _inconsistency(lr, rule)]
        rows.append(_fit_row(f"AICc {rule}", lr.aicc.get(rule), note="; ".join(x for x in notes if x)))
    rows += [
        _fit_row("perfect scaling up to B", reg.perfect_scaling_up_to, note=reg.reasons.get("perfect_scaling_up_to")),
        _fit_row(
            "diminishing returns up to B",
            reg.diminishing_returns_up_to,
            note=reg.reasons.get("diminishing_returns_up_to"),
        ),
        _fit_row("B_simple (at target)", a.noise.b_simple, note=a.reasons.get("noise_scale.b_simple")),
    ]
    data = pd.DataFrame(rows)
    text = pd.DataFrame(
        {
            "parameter": data["parameter"],
            "estimate": data["estimate"].map(_g),
            "95% CI": [_ci(lo, hi) for lo, hi in zip(data["ci95_low"], data["ci95_high"])],
            "note": data["note"],
        }
    )
    return data, text


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    "–": "--",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_booktabs(text: pd.DataFrame, caption: str, label: str, wide: bool = False) -> str:
    """A LaTeX table (booktabs rules) of a frame of strings; ``wide`` spans both columns."""
    align = "".join("l" if i == 0 or col in ("note", "parameter") else "r" for i, col in enumerate(text.columns))
    env = "table*" if wide else "table"
    lines = [
        rf"\begin{{{env}}}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in text.columns) + r" \\",
        r"\midrule",
    ]
    for _, row in text.iterrows():
        lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\end{{{env}}}", ""]
    return "\n".join(lines)


def write_tables(a: Analysis, out_dir: str | Path) -> list[TableFile]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tables = [
        ("per_batch", "Per batch size", per_batch_table(a)),
        ("fits", "Fitted parameters (95% CIs)", fit_table(a)),
    ]
    if (seeds := seed_table(a)) is not None:
        tables.append(("seeds", "Seeds per batch size and LR: how many reach the target, and their spread", seeds))
    if (eb := equal_budget(a)) is not None:
        tables.append(
            ("equal_budget", "Equal-budget comparison: each LR policy at every batch size", (eb.table, eb.text))
        )
    if (cf := curvature_forgetting(a)) is not None:
        title = "LR sweeps on training subsets: best and instability LR per batch size and fraction"
        tables.append(("curvature_forgetting", title, (cf.table, cf.text)))
    if (rt := a.range_test) is not None:
        title = "LR range test: the picked LR per batch size and the best one the sweep found"
        tables.append(("range_test", title, (rt.table, rt.text)))
    if a.schedules is not None:
        title = "LR decay vs batch increase: each schedule mode over its seeds"
        tables.append(("schedules", title, (a.schedules.table, a.schedules.text)))
    if a.branched is not None:
        title = "Branched local critical batch size at each checkpoint of the base run"
        tables.append(("branching", title, (a.branched.table, a.branched.text)))
    if (probe := probe_table(a)) is not None:
        title = "Forgetting probe: the final weights' loss on recent, start-of-epoch and held-out data"
        tables.append(("forgetting_probe", title, probe))
    for name, title, (data, text) in tables:
        csv, tex = out / f"{name}.csv", out / f"{name}.tex"
        data.to_csv(csv, index=False)
        caption = (
            f"{a.run.name}: {title[0].lower() + title[1:]}; target {a.target.metric} "
            f"{'≥' if a.target.mode == 'max' else '≤'} {a.target.value:g}."
        )
        tex.write_text(to_booktabs(text, caption, f"tab:{name}", wide=name == "per_batch"))
        written.append(TableFile(name, title, data, text, csv, tex))
    return written
