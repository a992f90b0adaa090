"""The figures of the protocols beyond steps to target, drawn only where the run has them:
the equal-budget comparison of LR policies (``analysis.equal_budget``) and the LR sweeps on
training subsets (``analysis.curvature``).

    from analysis import load_run
    from analysis.fits import analyse
    from analysis.protocol_figures import PROTOCOL_FIGURES
    a = analyse(load_run("runs/lr-policies-..."), n_boot=50)
    [draw(a, Path("/tmp/figs")) for draw in PROTOCOL_FIGURES]   # None where not applicable
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .curvature import curvature_forgetting
from .equal_budget import equal_budget
from .figure_style import COLUMN_WIDTH, FULL_WIDTH, HEIGHT, PALETTE, FigureFile, batch_axis, plain_log_axis, save_figure
from .results import Analysis

POLICY_COLOURS = {"constant": PALETTE[7], "sqrt": PALETTE[2], "linear": PALETTE[0], "tuned": PALETTE[3]}
POLICY_MARKERS = {"constant": "s", "sqrt": "^", "linear": "o", "tuned": "D"}


def equal_budget_figure(a: Analysis, out: Path) -> FigureFile | None:
    eb = equal_budget(a)
    if eb is None or eb.table.empty:
        return None
    panels = [
        ("final_val_loss", "final val loss"),
        ("final_val_accuracy", "final val accuracy"),
        ("weight_distance", r"$\|\theta - \theta_0\|$"),
        ("epoch_time_s", "seconds per epoch"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(FULL_WIDTH, HEIGHT * 1.6), layout="constrained", sharex=True)
    batches = np.sort(eb.table["batch_size"].unique()).astype(float)
    for ax, (col, label) in zip(axes.flat, panels, strict=True):
        for policy, d in eb.table.groupby("policy", sort=False):
            ok = np.isfinite(d[f"{col}_mean"].to_numpy(dtype=float))
            if not ok.any():
                continue
            sd = np.nan_to_num(d[f"{col}_sd"].to_numpy(dtype=float)[ok])
            ax.errorbar(
                d["batch_size"].to_numpy(dtype=float)[ok],
                d[f"{col}_mean"].to_numpy(dtype=float)[ok],
                yerr=sd,
                color=POLICY_COLOURS.get(str(policy)),
                marker=POLICY_MARKERS.get(str(policy), "o"),
                ms=3.5,
                lw=0.9,
                capsize=2,
                label=str(policy),
                # tuned often is a rule's LR: dashed and hollow, so the rule's line shows through
                ls="--" if policy == "tuned" else "-",
                mfc="none" if policy == "tuned" else None,
            )
        ax.set_ylabel(label)
        batch_axis(ax, batches)
        if col == "epoch_time_s":
            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
    for ax in axes[0]:
        ax.set_xlabel("")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, handlelength=1.6)
    return save_figure(
        fig,
        out,
        "equal_budget",
        "Equal-budget comparison of LR policies",
        "Every batch size trains on the same examples; per LR policy, the mean over seeds (bars: sd) of the final "
        "validation loss and accuracy, the distance from the initial weights and the wall time per epoch.",
    )


def curvature_figure(a: Analysis, out: Path) -> FigureFile | None:
    cf = curvature_forgetting(a)
    if cf is None:
        return None
    batches = sorted(cf.verdicts)
    fig, axes = plt.subplots(
        1,
        len(batches),
        figsize=(max(COLUMN_WIDTH, 2.4 * len(batches)), HEIGHT + 0.4),
        layout="constrained",
        squeeze=False,
    )
    fractions = sorted(cf.curves["train_fraction"].unique())
    colours = dict(zip(fractions, plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(fractions))), strict=True))
    for ax, b in zip(axes[0], batches, strict=True):
        at_b = cf.curves[cf.curves["batch_size"] == b]
        top = np.nanmax(at_b["loss"].to_numpy(dtype=float)) if at_b["loss"].notna().any() else 1.0
        for f, d in at_b.groupby("train_fraction", sort=True):
            lr, loss = d["lr"].to_numpy(dtype=float), d["loss"].to_numpy(dtype=float)
            ax.plot(lr, loss, "o-", color=colours[f], ms=3, lw=0.9, label=f"{f:g}")
            bad = d["unstable"].to_numpy(dtype=bool)
            ax.plot(lr[bad], np.full(bad.sum(), top * 1.05), "x", color=colours[f], ms=5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        ax.set_title(f"B={b}: {cf.verdicts[b].verdict}", fontsize=7.5)
        ax.set_xlabel("learning rate")
    axes[0][0].set_ylabel(cf.loss_column.removeprefix("final_").replace("_", " "))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="training fraction", loc="outside lower center", ncol=len(fractions))
    return save_figure(
        fig,
        out,
        "curvature_forgetting",
        "LR sweeps on training subsets: curvature or forgetting",
        "Final training loss against the learning rate, one line per fraction of the training set (nested subsets), "
        "mean over stable seeds; x marks an unstable LR (diverged, or no lower than its first loss).",
    )


def branching_figure(a: Analysis, out: Path) -> FigureFile | None:
    br = a.branched
    if br is None or br.table["local_critical_batch"].isna().all():
        return None
    b0, tol = int(br.settings["base_batch"]), float(br.settings.get("tolerance", 0.02))
    fig, (left, right) = plt.subplots(1, 2, figsize=(FULL_WIDTH, HEIGHT + 0.3), layout="constrained")
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(br.table)))
    for (i, d), colour in zip(br.branches.groupby("checkpoint", sort=True), colours, strict=False):
        mean = d.groupby("multiplier")["loss_ratio"].mean()  # over replicas, as the rule reads it
        ratio, size = mean.to_numpy(dtype=float), mean.index.to_numpy(dtype=float) * b0
        ok = np.isfinite(ratio)
        examples = int(br.settings["checkpoints"][int(i)])
        left.plot(size[ok], ratio[ok], "o-", ms=2.5, lw=0.9, color=colour, label=f"{examples:,}")
        if d["multiplier"].duplicated().any():  # replicas: each one faintly
            each = d[np.isfinite(d["loss_ratio"])]
            left.plot(each["multiplier"] * b0, each["loss_ratio"], ".", ms=2, color=colour, alpha=0.4)
    left.axhline(1 + tol, color="0.4", lw=0.8, ls="--")
    left.set_xscale("log", base=2)
    left.set_xlabel("branch batch size k·B0")
    left.set_ylabel("final loss / reference's")
    left.legend(title="from examples", fontsize=6, title_fontsize=6.5)
    t = br.table[br.table["local_critical_batch"].notna()]
    x, y = t["examples_seen"].to_numpy(dtype=float), t["local_critical_batch"].to_numpy(dtype=float)
    marker = {"below": "v", "above": "^"}
    for m in ("o", "v", "^"):
        sel = np.array([marker.get(c or "", "o") == m for c in t["censored"]])
        if sel.any():
            right.plot(x[sel], y[sel], m, color=PALETTE[0], ms=5, ls="none")
    right.plot(x, y, "-", color=PALETTE[0], lw=0.9, label="branched (local)")
    curve = br.base_curve.dropna(subset=["grad_noise_scale"]) if len(br.base_curve) else br.base_curve
    if len(curve):
        right.plot(
            curve["examples_seen"], curve["grad_noise_scale"], color=PALETTE[2], lw=0.9, label="B_simple (base run)"
        )
    c = a.critical
    if c.b_crit is not None:
        right.axhline(c.b_crit, color=PALETTE[3], lw=0.9, ls="--", label="B_crit (sweep, to target)")
        lo, hi = c.b_crit_ci95 or (None, None)
        if lo is not None and hi is not None:
            right.axhspan(lo, hi, color=PALETTE[3], alpha=0.15, lw=0)
    right.set_xscale("log")
    right.set_yscale("log", base=2)
    plain_log_axis(right.yaxis)
    right.set_xlabel("examples seen by the base run")
    right.set_ylabel("batch size")
    right.legend(fontsize=6)
    return save_figure(
        fig,
        out,
        "branching",
        "Local critical batch size by branching",
        f"Left: each branch's final loss over the reference's (k = 1), per checkpoint (mean over replicas, dots: "
        f"each); dashed: 1 + tolerance "
        f"({tol:g}). Right: the local critical batch size at each checkpoint (triangles: censored), the base "
        "run's B_simple and the sweep's McCandlish B_crit with its 95% interval: local versus whole-run measures.",
    )


def schedules_figure(a: Analysis, out: Path) -> FigureFile | None:
    sc = a.schedules
    if sc is None:
        return None
    metric = a.target.metric
    fig, (left, right) = plt.subplots(1, 2, figsize=(FULL_WIDTH, HEIGHT), layout="constrained")
    for i, (mode, d) in enumerate(sc.curves.groupby("mode", sort=False)):
        colour = PALETTE[[0, 3, 2][i % 3]]
        for j, (_, t) in enumerate(d.groupby("trial_id", sort=True)):
            label = mode if j == 0 else None
            left.plot(t["epoch"], t[metric], lw=0.8, color=colour, alpha=0.8, label=label)
            right.plot(t["step"], t[metric], lw=0.8, color=colour, alpha=0.8, label=label)
    for ax in (left, right):
        ax.axhline(a.target.value, color="0.4", lw=0.7, ls="--")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_ylim(
            bottom=max(float(np.nanmin(sc.curves[metric])), a.target.value - 0.1)
            if metric.endswith("accuracy")
            else None
        )
    left.set_xlabel("epochs")
    right.set_xlabel("optimizer updates")
    left.legend(fontsize=6)
    return save_figure(
        fig,
        out,
        "schedules",
        "LR decay vs batch increase",
        f"{metric.replace('_', ' ')} of every seed of each schedule mode against epochs (left: the curves should "
        "coincide) and against optimizer updates (right: the batch increase needs fewer); dashed: the target.",
    )


def range_test_figure(a: Analysis, out: Path) -> FigureFile | None:
    rt = a.range_test
    if rt is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(FULL_WIDTH, HEIGHT), layout="constrained")
    sizes = sorted(rt.table["batch_size"])
    colours = dict(zip(sizes, plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(sizes))), strict=True))
    for b, d in rt.curves.groupby("batch_size", sort=True):
        c = colours[int(b)]
        left.plot(d["lr_current"], d["train_loss"], lw=0.5, color=c, alpha=0.35)
        left.plot(d["lr_current"], d["smoothed_loss"], lw=1.0, color=c, label=f"B={int(b)}")
    for r in rt.table.itertuples():
        if r.picked_lr is not None and np.isfinite(r.picked_lr):
            left.axvline(r.picked_lr, color=colours[int(r.batch_size)], lw=0.7, ls="--")
    left.set_xscale("log")
    left.set_yscale("log")
    start = rt.curves.groupby("batch_size")["train_loss"].first().to_numpy(dtype=float)
    if np.isfinite(start).any():  # the valley, not the blow-up past divergence
        left.set_ylim(top=3 * float(np.nanmax(start)))
    left.set_xlabel("learning rate (rising over the test)")
    left.set_ylabel("training loss (faint: raw)")
    left.legend(fontsize=6)
    t = rt.table
    x = t["batch_size"].to_numpy(dtype=float)
    right.fill_between(
        x,
        t["grid_min"].to_numpy(dtype=float),
        t["grid_max"].to_numpy(dtype=float),
        color=PALETTE[7],
        alpha=0.2,
        lw=0,
        label="centred grid",
    )
    for col, marker, colour, label in (
        ("picked_lr", "o", PALETTE[0], "picked (minimum / 10)"),
        ("steepest_lr", "^", PALETTE[2], "steepest (Lightning)"),
        ("best_lr", "*", PALETTE[3], "best in the sweep"),
    ):
        right.plot(x, t[col].to_numpy(dtype=float), marker, color=colour, ms=5, ls="-", lw=0.7, label=label)
    right.set_yscale("log")
    batch_axis(right, x)
    right.set_xlabel("batch size")
    right.set_ylabel("learning rate")
    right.legend(fontsize=6)
    return save_figure(
        fig,
        out,
        "range_test",
        "LR range test",
        "Left: each batch size's range test, training loss against the rising LR (smoothed; faint: raw), dashed "
        "at its picked LR. Right: per batch size the picked LR, Lightning's steepest-descent LR, the LR the "
        "sweep found best, and the span of the grid centred on the pick.",
    )


PROTOCOL_FIGURES: tuple[Callable[[Analysis, Path], FigureFile | None], ...] = (
    equal_budget_figure,
    curvature_figure,
    range_test_figure,
    schedules_figure,
    branching_figure,
)
"""Drawn after ``figures.FIGURES``; a run without the protocol gets none of them (and the
report does not list them as missing)."""
