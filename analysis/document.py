"""The report's content: summary, figures, tables, methods, caveats, nulls, environment.

from analysis.synthetic import write_synthetic_run
write_synthetic_run("/tmp/demo")           # a synthetic RUN_DIR; any real one works
from analysis import load_run
from analysis.document import build_document, summary
from analysis.environment import environment_stamp
from analysis.fits import analyse
a = analyse(load_run("/tmp/demo"), n_boot=200)
summary(a)                                 # the headline bullets
blocks = build_document(a, [], [], environment_stamp())   # figures/tables: see report.py
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .bootstrap import BOOTSTRAP_METHODS
from .early_stopping import early_stopping_section
from .figure_style import FigureFile
from .figures import FIGURE_NAMES
from .generalization import TRAIN_EVAL
from .lr_rules import GRID_FLOOR, SELECTION
from .numbers import format_interval, format_number
from .protocol_sections import SECTION_ITEMS, protocol_sections, protocol_summary
from .render import Block, Bullets, Figure, Heading, Paragraph, Table
from .results import Analysis, Interval
from .tables import TableFile


def _ci(ci: Interval | None, method: str | None = None) -> str:
    return f"95% CI {format_interval(ci)}" + (f" by {method}" if method and ci is not None else "")


def _excludes(ci: Interval | None, est: float | None) -> bool:
    """Whether a closed interval (both ends known) leaves out the estimate."""
    if est is None or ci is None:
        return False
    lo, hi = ci
    return lo is not None and hi is not None and not lo <= est <= hi


def _counts(a: Analysis) -> dict[str, Any]:
    t = a.trials
    seeds = t["seed"].dropna().unique()
    return {
        "trials": len(t),
        "batch_sizes": int(t["batch_size"].nunique()),
        "seeds": len(seeds) if len(seeds) else 1,
        "reached": int(t["reached"].sum()),
        "rows": len(a.run.curves),
        "status": t["status"].value_counts().to_dict(),
    }


def summary(a: Analysis) -> list[str]:
    c, lr, reg, n = a.critical, a.lr_scaling, a.regimes, _counts(a)
    tgt = a.target
    items = [
        f"Target: `{tgt.metric}` {'≥' if tgt.mode == 'max' else '≤'} {tgt.value:g}. "
        f"{n['trials']} trials over {n['batch_sizes']} batch sizes ({n['seeds']} seed(s)); "
        f"{n['reached']} reached the target."
    ]
    if c.b_crit is not None:
        items.append(
            f"Critical batch size **B_crit = {format_number(c.b_crit)}** ({_ci(c.b_crit_ci95, c.ci_method)}, "
            f"{c.n_points} batch sizes); S_min = {format_number(c.s_min)} steps, "
            f"E_min = {format_number(c.e_min)} examples."
        )
    else:
        items.append(f"Critical batch size not estimated: {c.reason}.")
    p, d = reg.perfect_scaling_up_to, reg.diminishing_returns_up_to
    if p is not None:
        txt = f"Perfect scaling up to B = {p}; "
        txt += (
            f"diminishing returns up to B = {d}, maximal data parallelism beyond."
            if d is not None
            else reg.reasons.get("diminishing_returns_up_to", "") + "."
        )
        items.append(txt)
    else:
        items.append(f"Regimes not estimated: {reg.reasons.get('perfect_scaling_up_to')}.")
    if lr.exponent is not None:
        freq = lr.selection_frequency.get(lr.preferred_rule) if lr.preferred_rule else None
        chosen = f" (chosen in {freq:.0%} of bootstrap resamples)" if freq is not None else ""
        rule = (
            f"preferred rule **{lr.preferred_rule}**{chosen}"
            if lr.preferred_rule
            else f"no rule compared ({lr.reason})"
        )
        law = lr.laws.get(lr.preferred_rule or "")
        if law is not None:
            rule += (
                f", B_noise = {format_number(law.b_noise)} ({_ci(law.b_noise_ci95)}), "
                f"η_max = {format_number(law.eta_max)}"
            )
        if lr.selection_note:
            rule += f": {lr.selection_note}"
        items.append(
            f"LR scaling: {rule}; free exponent {format_number(lr.exponent)} "
            f"({_ci(lr.exponent_ci95, lr.ci_method)}) over {lr.n_points} interior optima."
        )
    else:
        items.append(f"LR scaling not estimated: {lr.reason}.")
    if a.noise.b_simple is not None:
        ratio = (
            f"; B_simple / B_crit = {format_number(a.noise.b_simple / c.b_crit, digits=2)}"
            if c.b_crit is not None
            else ""
        )
        items.append(f"Gradient noise scale at the target B_simple = {format_number(a.noise.b_simple)}{ratio}.")
    gap = a.per_batch["generalization_gap"].to_numpy(dtype=float)
    if np.isfinite(gap).any():
        b = a.per_batch["batch_size"].to_numpy()
        ok = np.isfinite(gap)
        train = (
            "val loss − `train_eval_loss`, both of the final weights"
            if a.gap_train_column == TRAIN_EVAL
            else "val loss − running-mean `train_loss`; biased low, see the caveats"
        )
        items.append(
            f"Generalization gap at the best LR ({train}) from "
            f"{format_number(gap[ok][0])} at B = {b[ok][0]} to {format_number(gap[ok][-1])} "
            f"at B = {b[ok][-1]}."
        )
    return items


METHODS = (
    "**Steps to target.** For each trial, S is the first optimizer step at which `{metric}` "
    "reaches {value:g} ({mode}), interpolated linearly in log(step) between the evaluation "
    "before the crossing and the crossing; examples to target E = B·S and wall time to target "
    "(linear in step between the same evaluations). Diverged trials never count as reaching "
    "the target. Per batch size B, S(B) is that of the best trial (fewest steps; Shallue et "
    "al. 2018); a batch size where no trial reached the target is censored: reported with "
    "null steps and left out of every fit.",
    "**Best learning rate.** At each B the objective at a grid LR is log S of its best trial; "
    "LRs whose trials never reached the target are censored (worse than any that did) and "
    "excluded from the interpolation. A least-squares parabola in log η through the grid "
    "minimum and its two neighbours (up to two more on a side where a neighbour is censored) "
    "gives the optimum −b/(2a) (only if a > 0, kept between the neighbouring grid points, and "
    "never moved toward a censored one, past which the parabola would extrapolate). "
    "Where no trial at a B reached the target the objective falls back to the best value of "
    "`{metric}` each trial attained. An optimum at the first or last LR of the grid is "
    "flagged `lr_on_edge` and left out of the LR-rule fits, since it only bounds the true one.",
    "**Critical batch size** (McCandlish et al. 2018). S(B) = S_min (1 + B_crit/B), "
    "equivalently E(B) = E_min (1 + B/B_crit) with B_crit = E_min/S_min. Start: ordinary "
    "least squares of S on 1/B (intercept S_min, slope E_min); then Levenberg–Marquardt on "
    "log S, parametrised by (log S_min, log B_crit), because the errors are multiplicative. "
    "B_crit is reported as not estimable when fewer than 3 batch sizes reached the target or "
    "the fit pins it more than 100× outside the measured range.",
    "**Regimes** (Shallue et al. 2018), read off the measured S(B): perfect scaling up to the "
    "largest B such that every B up to it keeps S(B) ≤ 1.2 · S(B₀)·B₀/B (B₀ the smallest B "
    "that reached the target); diminishing returns up to the first B beyond which one doubling "
    "of B cuts S by less than 10% (per-doubling cut 1 − (S₂/S₁)^(1/log₂(B₂/B₁)) between "
    "consecutive measured B); maximal data parallelism beyond.",
    "**LR scaling rule.** On log η*(B) = c + k log B: linear (k = 1; Goyal et al. 2017), "
    "square root (k = 1/2; Krizhevsky 2014, Malladi et al. 2022), constant (k = 0, the flat "
    "optimum of many Adam sweeps), power (free k, OLS), the saturating "
    "η*(B) = η_max/(1 + B_noise/B) (McCandlish et al. 2018) and the surge law "
    "η*(B) = η_max/(½(√(B_noise/B) + √(B/B_noise))), rising then falling with its peak at "
    "B_noise (Li et al. 2024); the last two by NLS on log η. Compared by "
    "AICc = n ln(RSS/n) + 2k + 2k(k+1)/(n−k−1) on the log residuals, with k the number of curve "
    "parameters plus one for the residual variance (so n ≥ k + 2 points are needed). The "
    "preferred rule is the {selection}; when that is the power law, no fixed rule fits. Edge "
    "optima and censored batch sizes (whose best LR optimises the target metric, not steps) are excluded.",
    "**Intervals.** {n_boot} bootstrap resamples (seed {seed}), a {bootstrap}: the whole "
    "pipeline (best trial, best LR and its edge flag, every fit) is redone on each; intervals "
    "are 2.5–97.5% percentiles. Resamples in which B_crit or B_noise left the measured range "
    "count at that end of the ranking. Where a fitted batch size has a single trial that "
    "decides its value (one trial, or one that reached the target), resampling cannot vary it "
    "and a percentile interval would be falsely narrow; the intervals then come from the fit's "
    "residuals: the profile likelihood of the S(B) (or B_noise) fit, {{θ: RSS(θ) ≤ RSS_min (1 + "
    "F(1, n−2)/(n−2))}} with the other parameter re-fitted (Bates & Watts 1988), and the "
    "t interval of the free LR exponent, the residual σ of log η* floored at "
    f"{GRID_FLOOR} of the LR grid's log spacing (Porian et al. 2024). Each interval names its method.",
    "**Generalization gap and noise scale.** The gap is final validation minus final training "
    "loss at the best trial's LR, averaged over its seeds (Keskar et al. 2016), the training "
    "loss being `train_eval_loss` (the final weights on a fixed training subset as large as the "
    "validation split) where the curves have it; otherwise the running mean `train_loss`, "
    "which lags the weights and so biases the gap low. When the curves "
    "carry `grad_noise_scale` (B_simple = tr(Σ)/|G|², McCandlish et al. 2018), the value of "
    "each batch size's best trial at the step it reached the target is taken, and the run's "
    "B_simple is their median over batch sizes.",
)


def caveats(a: Analysis) -> list[str]:
    pb, n = a.per_batch, _counts(a)
    items: list[str] = []
    edge = pb.loc[pb["lr_on_edge"], "batch_size"].tolist()
    if edge:
        items.append(
            f"Best LR on the grid's edge at B = {', '.join(map(str, edge))}: the optimum may lie "
            "outside the grid, so S there is an upper bound and these B are left out of the "
            "LR-rule fits. Widen the LR grid to resolve them."
        )
    cens = pb.loc[pb["censored"], "batch_size"].tolist()
    if cens:
        items.append(
            f"Censored batch sizes (no trial reached the target): B = {', '.join(map(str, cens))}. "
            "They are listed with null steps and excluded from the fits."
        )
    counts = pb["trials"].to_numpy()
    c = a.critical
    items.append(
        "S(B) is a best-of-n statistic: the minimum over n trials falls as n grows"
        + (
            f", and the trial counts differ across batch sizes ({counts.min()}–{counts.max()}), so "
            "batch sizes with more trials are favoured."
            if counts.min() != counts.max()
            else f" (n = {counts.min()} at every batch size here)."
        )
        + (
            " Its bootstrap interval is one-sided by construction (a resample's minimum is never "
            "below the full data's)."
            if c.ci_method in BOOTSTRAP_METHODS
            else ""
        )
    )
    c = a.critical
    lr = a.lr_scaling
    boot_c, boot_lr = c.ci_method in BOOTSTRAP_METHODS, lr.ci_method in BOOTSTRAP_METHODS
    outside = [
        name
        for name, est, ci, boot in (
            ("B_crit", c.b_crit, c.b_crit_ci95, boot_c),
            ("S_min", c.s_min, c.s_min_ci95, boot_c),
            ("E_min", c.e_min, c.e_min_ci95, boot_c),
            ("the LR exponent", lr.exponent, lr.exponent_ci95, boot_lr),
        )
        if boot and _excludes(ci, est)
    ]
    if outside:
        items.append(
            f"The bootstrap interval of {', '.join(outside)} does not contain the estimate. "
            "Resampling trials can only make a best-of-n S(B) worse (the best trial is left "
            "out of about a third of resamples), so intervals of quantities built on S(B) "
            "shift toward larger S: read them as the sensitivity to which trials were run."
        )
    if c.b_crit is not None:
        b = pb["batch_size"].to_numpy(dtype=float)
        if c.b_crit > b.max() or c.b_crit < b.min():
            items.append(
                f"B_crit = {format_number(c.b_crit)} lies outside the measured batch sizes "
                f"({int(b.min())}–{int(b.max())}): it is an extrapolation."
            )
    items += _interval_caveats(a)
    if 0 < c.n_points < 5:
        items.append(f"Only {c.n_points} batch sizes reached the target: fits rest on few points.")
    if a.run.trials_synthesised:
        items.append(
            "No trials.parquet: every trial with curves counted as completed (diverged and "
            "early-stopped trials are not marked)."
        )
    diverged = n["status"].get("diverged", 0)
    if diverged:
        items.append(f"{diverged} trial(s) diverged; they never count as reaching the target.")
    return items


def _interval_caveats(a: Analysis) -> list[str]:
    """Which intervals are not the bootstrap's, and why; the gap's training loss."""
    c, lr, pb = a.critical, a.lr_scaling, a.per_batch
    items = []
    if c.ci_note:
        how = f"come from the {c.ci_method} of the S(B) fit's residuals" if c.ci_method else "are not estimated"
        items.append(f"The intervals of B_crit, S_min and E_min {how}: {c.ci_note}.")
    if lr.ci_note and lr.exponent is not None:
        how = (
            "come from the fit's residuals (t interval of the exponent, profile likelihood of B_noise)"
            if lr.ci_method
            else "are not estimated"
        )
        items.append(f"The intervals of the LR exponent and B_noise {how}: {lr.ci_note}.")
    if "steps_ci_fixed" in pb and pb["steps_ci_fixed"].any():
        fixed = ", ".join(str(int(b)) for b in pb.loc[pb["steps_ci_fixed"], "batch_size"])
        items.append(
            f"No per-batch-size interval of S at B = {fixed}: a single trial decides S there, "
            "so resampling trials cannot vary it."
        )
    if lr.exponent is not None and lr.exponent_ci95 is None:
        items.append(f"The LR rules were compared by AICc alone: {lr.selection_note}.")
    if a.gap_train_column is not None and a.gap_train_column != TRAIN_EVAL:
        items.append(
            "The generalization gap subtracts `train_loss`, the running mean of the training "
            "loss since the previous report: it lags the weights, so it lies above the final "
            "weights' training loss and the gap comes out biased low (often negative). Keskar "
            "et al. compare at the final weights; trainables that report `train_eval_loss` "
            "give that gap."
        )
    return items


def nulls(a: Analysis) -> list[str]:
    return [f"`{key}`: {why}" for key, why in a.reasons.items()]


def environment(a: Analysis, env: dict[str, Any]) -> list[str]:
    n = _counts(a)
    pk = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    git = env["git"]
    commit = (
        (git["commit"][:12] + (" (uncommitted changes)" if git["dirty"] else ""))
        if git["commit"]
        else "n/a (not a git checkout with commits)"
    )
    nodes = (
        a.run.trials["node"].dropna().astype(str).unique()
        if a.run.trials is not None and "node" in a.run.trials
        else []
    )
    items = [
        f"Date: {env['date_utc']}; analysis code commit: {commit}",
        f"Python {env['python']} on {env['platform']}; CPU: {env['cpu']} ({env['cpu_count']} cores), "
        f"{env['memory_gib']} GiB RAM" + (f"; GPUs: {'; '.join(env['gpus'])}" if env["gpus"] else ""),
        f"Packages: {pk}",
        f"Run: `{a.run.run_dir}`, study `{a.run.name}`: {n['trials']} trials, {n['seeds']} seed(s), "
        f"{n['batch_sizes']} batch sizes, {n['rows']} curve rows; trial status: "
        + ", ".join(f"{k} {v}" for k, v in sorted(n["status"].items())),
        f"Bootstrap: {a.n_boot} resamples, seed {a.seed}, {a.boot.method} ({a.boot.n_seeds} seed(s))",
    ]
    if len(nodes):
        items.append(f"Training nodes: {', '.join(sorted(nodes)[:20])}" + (" …" if len(nodes) > 20 else ""))
    return items


def build_document(a: Analysis, figures: list[FigureFile], tables: list[TableFile], env: dict[str, Any]) -> list[Block]:
    fmt = {
        "metric": a.target.metric,
        "value": a.target.value,
        "mode": "higher is better" if a.target.mode == "max" else "lower is better",
        "n_boot": a.n_boot,
        "seed": a.seed,
        "bootstrap": a.boot.method,
        "selection": SELECTION,
    }
    blocks: list[Block] = [
        Heading(f"Batch-size study: {a.run.name}", 1),
        Heading("Summary"),
        Bullets((*summary(a), *protocol_summary(a))),
    ]
    blocks.append(Heading("Figures"))
    blocks += [Figure(f) for f in figures if f.name not in SECTION_ITEMS]
    missing = set(FIGURE_NAMES) - {f.name for f in figures}
    if missing:
        blocks.append(Paragraph("Not drawn, for lack of data: " + ", ".join(sorted(missing)) + "."))
    blocks.append(Heading("Tables"))
    blocks += [Table(t) for t in tables if t.name not in SECTION_ITEMS]
    blocks += protocol_sections(a, figures, tables)
    es = early_stopping_section(a.run.run_dir, a.run.trials, a.run.study)
    if es is not None:
        blocks += [Heading("Early stopping"), Paragraph(es.text)]
        blocks += [Bullets(es.items)] if es.items else []
    blocks.append(Heading("Methods"))
    blocks += [Paragraph(p.format(**fmt)) for p in METHODS]
    blocks += [Heading("Caveats"), Bullets(tuple(caveats(a)))]
    null_items = nulls(a)
    if null_items:
        blocks += [Heading("Values not estimated (null in fits.json)"), Bullets(tuple(null_items))]
    blocks += [Heading("Environment"), Bullets(tuple(environment(a, env)))]
    return blocks
