"""Paper-ready figures of an analysis; ``write_figures`` draws every one the data allow.

The scaling figures (steps, examples and best LR against batch size) are in
``scaling_figures``; this module holds the others (batch size x LR heatmap, learning curves,
generalization gap, noise scale). Style, sizes and file handling: ``figure_style``.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    from analysis.fits import analyse
    from analysis.figures import write_figures
    figs = write_figures(analyse(load_run("/tmp/demo")), "/tmp/figures")
    [f.name for f in figs]      # steps_vs_batch, examples_vs_batch, lr_vs_batch, ...
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize, to_hex

from .figure_style import (
    BATCH_GID,
    COLUMN_WIDTH,
    HEIGHT,
    MIN_FONT_PT,
    STYLE,
    FigureFile,
    batch_axis,
    batch_colours,
    column_figure,
    plain_log_axis,
    save_figure,
)
from .numbers import format_number
from .protocol_figures import PROTOCOL_FIGURES
from .results import Analysis
from .scaling_figures import examples_vs_batch, lr_vs_batch, steps_vs_batch


def _cell_text(statuses: pd.Series, reached: pd.Series, mark_unreached: bool) -> str:
    if reached.any():
        return ""
    st = set(statuses)
    if st == {"diverged"}:
        return "×"
    if "early_stopped" in st:
        return "es"
    if "failed" in st:
        return "f"
    # Where nothing reached the target the colour already shows the metric: no mark needed.
    return "–" if mark_unreached else ""


def heatmap(a: Analysis, out: Path) -> FigureFile | None:
    t = a.trials.copy()
    if t.empty:
        return None
    t["log_lr"] = np.round(np.log10(t["lr"].to_numpy(dtype=float)), 6)
    any_reached = bool(t["reached"].any())
    if any_reached:
        t["value"] = t["steps_to_target"]
        label, norm_log = "steps to target", True
    else:
        # A diverged trial's metric says nothing about its LR's quality: leave its cell blank.
        t["value"] = t["best_metric"].where(t["status"] != "diverged")
        label, norm_log = f"best {a.target.metric}", False
    lrs = np.sort(t["log_lr"].unique())
    bs = np.sort(t["batch_size"].unique())
    per_b = t.groupby("batch_size")["log_lr"].nunique().max()
    shared_grid = len(lrs) <= max(2 * per_b, 1) and len(lrs) <= 40
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, max(HEIGHT, 0.28 * len(bs) + 1.0)), layout="constrained")
    cell = t.groupby(["batch_size", "log_lr"])
    if any_reached:
        vals = cell["value"].min()
    else:
        vals = cell["value"].max() if a.target.mode == "max" else cell["value"].min()
    finite = vals[np.isfinite(vals.to_numpy(dtype=float))]
    cmap = sns.color_palette(
        "viridis_r" if any_reached else ("viridis" if a.target.mode == "max" else "viridis_r"), as_cmap=True
    )
    if finite.empty:
        norm = Normalize(0, 1)
    elif norm_log:
        norm = LogNorm(finite.min(), max(finite.max(), finite.min() * 1.01))
    else:
        norm = Normalize(finite.min(), max(finite.max(), finite.min() + 1e-9))
    best_ids = set(a.per_batch["best_trial_id"].dropna())
    if shared_grid:
        mat = vals.unstack("log_lr").reindex(index=bs, columns=lrs)
        ax.set_facecolor("0.9")
        # Both QuadMesh and PathCollection are ScalarMappables: all the colour bar needs.
        mesh: ScalarMappable = ax.pcolormesh(
            np.arange(len(lrs) + 1),
            np.arange(len(bs) + 1),
            np.ma.masked_invalid(mat.to_numpy(dtype=float)),
            cmap=cmap,
            norm=norm,
            edgecolors="white",
            linewidth=0.5,
        )
        for (bb, ll), grp in cell:
            i, j = int(np.searchsorted(bs, bb)), int(np.searchsorted(lrs, ll))
            txt = _cell_text(grp["status"], grp["reached"], any_reached)
            if txt:
                v = mat.iat[i, j]
                r, g, b_, _alpha = cmap(norm(v)) if np.isfinite(v) else (0.9, 0.9, 0.9, 1)
                dark = 0.299 * r + 0.587 * g + 0.114 * b_ < 0.5
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    txt,
                    ha="center",
                    va="center",
                    fontsize=MIN_FONT_PT,
                    color="white" if dark else "0.25",
                )
            if best_ids & set(grp["trial_id"]):
                # Inset so neighbouring rows' boxes never share an edge.
                ax.add_patch(plt.Rectangle((j + 0.08, i + 0.1), 0.84, 0.8, fill=False, ec="C3", lw=1.2))
        step = max(1, int(np.ceil(len(lrs) / 8)))  # at most 8 labels across a column
        ax.set_xticks(np.arange(len(lrs))[::step] + 0.5)
        ax.set_xticklabels(
            [format_number(10**v, digits=2, grouping=False) for v in lrs[::step]], rotation=45, ha="right"
        )
        ax.set_yticks(np.arange(len(bs)) + 0.5)
        ax.set_yticklabels([str(int(v)) for v in bs])
        ax.grid(False)
        ax.tick_params(length=0)
    else:
        # LR grids differ per batch size (rule-centred or random search): one marker per trial.
        y = np.searchsorted(bs, t["batch_size"].to_numpy())
        v = t["value"].to_numpy(dtype=float)
        ok = np.isfinite(v)
        mesh = ax.scatter(10 ** t["log_lr"][ok], y[ok], c=v[ok], cmap=cmap, norm=norm, marker="s", s=28)
        notok = ~ok
        div = notok & (t["status"] == "diverged").to_numpy()
        ax.scatter(10 ** t["log_lr"][div], y[div], marker="x", color="0.3", s=18, lw=0.8)
        rest = notok & ~div
        ax.scatter(10 ** t["log_lr"][rest], y[rest], marker="s", facecolor="none", edgecolor="0.5", s=24, lw=0.6)
        best = t["trial_id"].isin(best_ids).to_numpy()
        ax.scatter(10 ** t["log_lr"][best], y[best], marker="*", color="C3", s=40, zorder=5)
        ax.set_xscale("log")
        ax.set_yticks(np.arange(len(bs)))
        ax.set_yticklabels([str(int(v)) for v in bs])
    cbar = fig.colorbar(mesh, ax=ax, pad=0.02)
    cbar.set_label(label)
    cbar.ax.tick_params(labelsize=MIN_FONT_PT)
    if norm_log:
        plain_log_axis(cbar.ax.yaxis)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("batch size $B$")
    marks = (
        "red box: best trial per batch size; × diverged; es early-stopped; f failed; "
        "– or grey: never reached the target"
        if shared_grid
        else "red star: best trial per batch size; × diverged; open squares: never reached the target"
    )
    return save_figure(
        fig,
        out,
        "heatmap",
        "Batch size × learning rate",
        f"{label.capitalize()} of every trial (minimum over seeds per cell). {marks}.",
    )


def learning_curves(a: Analysis, out: Path) -> FigureFile | None:
    ids = a.per_batch.dropna(subset=["best_trial_id"])
    if ids.empty:
        return None
    metric = a.target.metric
    c = a.run.curves
    cols = ["trial_id", "batch_size", "step", metric] + (["examples_seen"] if "examples_seen" in c.columns else [])
    rows = c.loc[c["trial_id"].isin(set(ids["best_trial_id"])), cols]
    rows = rows[np.isfinite(rows[metric].to_numpy(dtype=float)) & (rows["step"] > 0)].sort_values(
        ["batch_size", "step"]
    )
    if rows.empty:
        return None
    colours = run_colours(a)
    # one column: steps above, examples below, the batch sizes' legend under both
    fig, axes = plt.subplots(2, 1, figsize=(COLUMN_WIDTH, 2 * HEIGHT), layout="constrained")
    for _, r in ids.iterrows():
        d = rows[rows["trial_id"] == r["best_trial_id"]]
        if d.empty:
            continue
        b = int(r["batch_size"])
        kw = dict(color=colours[b], lw=1.0, label=f"{b}", gid=f"{BATCH_GID}{b}")
        axes[0].plot(d["step"], d[metric], **kw)
        seen = d["examples_seen"] if "examples_seen" in d and d["examples_seen"].notna().all() else d["step"] * b
        axes[1].plot(seen, d[metric], **kw)
    # A loss approaching a small target is only readable on a log axis.
    log_y = a.target.mode == "min" and bool((rows[metric] > 0).all()) and a.target.value > 0
    for ax, xl in zip(axes, ("steps", "examples seen")):
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.axhline(a.target.value, color="k", ls="--", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel(metric.replace("_", " "))
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(
        handles,
        [f"B={x}" for x in labels],
        loc="outside lower center",
        ncol=min(len(labels), 4),
        handlelength=1.4,
        columnspacing=0.8,
    )
    return save_figure(
        fig,
        out,
        "learning_curves",
        "Learning curves of the best trial per batch size",
        f"{metric} of the best trial at each batch size against optimizer steps (top) "
        f"and examples (bottom); the dashed line is the target {a.target.value:g}.",
    )


def generalization(a: Analysis, out: Path) -> FigureFile | None:
    pb = a.per_batch
    gap = pb["generalization_gap"].to_numpy(dtype=float)
    sharp = pb["sharpness"].to_numpy(dtype=float) if "sharpness" in pb else np.full(len(pb), np.nan)
    ok, ok_s = np.isfinite(gap), np.isfinite(sharp)
    if not ok.any() and not ok_s.any():
        return None
    b = pb["batch_size"].to_numpy(dtype=float)
    if ok_s.any():  # Keskar et al.: the gap and the sharpness side by side, sharing B
        fig, (ax, ax_s) = plt.subplots(2, 1, figsize=(COLUMN_WIDTH, HEIGHT * 1.5), sharex=True, layout="constrained")
        ax_s.plot(b[ok_s], sharp[ok_s], "s-", color="C1", ms=3.5, lw=0.9)
        ax_s.set_ylabel(r"sharpness $\lambda_{max}$")
        batch_axis(ax_s, b)
    else:
        fig, ax = column_figure()
        batch_axis(ax, b)
    ax.plot(b[ok], gap[ok], "o-", color="k", ms=3.5, lw=0.9)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_ylabel("val loss − train loss")
    caption = (
        "Final validation minus final training loss at the best learning rate of each batch size (mean over its seeds)"
    )
    if ok_s.any():
        caption += (
            "; below, the sharpness (top eigenvalue of the training-loss Hessian at the final "
            "weights, power iteration on a fixed subset) of the same trials"
        )
    return save_figure(fig, out, "generalization_gap", "Generalization gap and sharpness vs batch size", caption + ".")


def noise_scale(a: Analysis, out: Path) -> FigureFile | None:
    nc = a.noise.curves
    if not a.noise.measured or nc.empty:
        return None
    colours = run_colours(a)
    fig, ax = column_figure(HEIGHT + 0.7)
    for b, d in nc.groupby("batch_size"):
        ax.plot(
            d["examples_seen"],
            d["grad_noise_scale"],
            color=colours[int(b)],
            lw=0.9,
            label=f"{int(b)}",
            gid=f"{BATCH_GID}{int(b)}",
        )
    c = a.critical
    if c.b_crit is not None:
        lo, hi = c.b_crit_ci95 or (None, None)
        if lo is not None and hi is not None:
            ax.axhspan(lo, hi, color="C3", alpha=0.12, lw=0)
        ax.axhline(c.b_crit, color="C3", ls="--", lw=1, label="$B_{crit}$ (fit)")
    if a.noise.b_simple is not None:
        ax.axhline(a.noise.b_simple, color="k", ls=":", lw=1, label="$B_{simple}$ at target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    ax.set_xlabel("examples seen")
    ax.set_ylabel("gradient noise scale $B_{simple}$")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        [f"B={x}" if x.isdigit() else x for x in labels],
        loc="outside lower center",
        ncol=4,
        handlelength=1.4,
        columnspacing=0.8,
    )
    return save_figure(
        fig,
        out,
        "noise_scale",
        "Gradient noise scale during training",
        "B_simple = tr(Σ)/|G|² measured during training by the best trial at each batch "
        "size, against the fitted B_crit (dashed, shaded 95% CI) and the median B_simple "
        "at the target.",
    )


FIGURES: tuple[Callable[[Analysis, Path], FigureFile | None], ...] = (
    steps_vs_batch,
    examples_vs_batch,
    lr_vs_batch,
    heatmap,
    learning_curves,
    generalization,
    noise_scale,
)
FIGURE_NAMES: tuple[str, ...] = (
    "steps_vs_batch",
    "examples_vs_batch",
    "lr_vs_batch",
    "heatmap",
    "learning_curves",
    "generalization_gap",
    "noise_scale",
)
"""The file stems of ``FIGURES``, in order, whether drawn or not."""


FIGURE_FACTS = "figures.json"
"""figures/figures.json: each figure's size, smallest text and batch colours (``FigureFile.facts``)."""


def run_colours(a: Analysis) -> dict[int, tuple[float, float, float]]:
    """The run's one batch size -> colour mapping (every batch size of the run, drawn or not)."""
    return batch_colours(np.union1d(a.trials["batch_size"].to_numpy(), a.run.curves["batch_size"].to_numpy()))


def write_figures(a: Analysis, out_dir: str | Path) -> list[FigureFile]:
    """Draw every figure the data allow into ``out_dir``, with figures.json; returns what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with plt.rc_context(STYLE):
        for draw in (*FIGURES, *PROTOCOL_FIGURES):
            f = draw(a, out)
            if f is not None:
                written.append(f)
    facts = {
        "column_width_in": COLUMN_WIDTH,
        "min_font_pt": MIN_FONT_PT,
        "batch_colours": {str(b): to_hex(c) for b, c in run_colours(a).items()},
        "figures": {f.name: f.facts() for f in written},
    }
    (out / FIGURE_FACTS).write_text(json.dumps(facts, indent=1) + "\n")
    return written
