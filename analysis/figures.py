"""Paper-ready figures of an analysis, each saved as PNG (200 dpi) and PDF (vector).

One style for all (seaborn "ticks" + "paper" context, 8 pt text, colour-blind palette),
sized for a two-column paper: 3.4 in wide for one column, 7 in for both. The style is
applied per figure through ``rc_context`` so importing this module changes no global state.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    from analysis.fits import analyse
    from analysis.figures import write_figures
    figs = write_figures(analyse(load_run("/tmp/demo")), "/tmp/figures")
    [f.name for f in figs]      # steps_vs_batch, examples_vs_batch, lr_vs_batch, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from cycler import cycler  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from .critical import steps_curve  # noqa: E402
from .lr_rules import rule_curve  # noqa: E402
from .results import Analysis  # noqa: E402

COLUMN_WIDTH = 3.4
FULL_WIDTH = 7.0
HEIGHT = 2.5
DPI = 200
PALETTE = sns.color_palette("colorblind")
STYLE: dict = {
    **sns.axes_style("ticks"),
    **sns.plotting_context("paper"),
    "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8, "legend.fontsize": 6.5,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4,
    "axes.prop_cycle": cycler(color=PALETTE), "axes.grid": True, "grid.alpha": 0.25,
    "grid.linewidth": 0.5, "legend.frameon": False, "pdf.fonttype": 42, "ps.fonttype": 42,
    "figure.dpi": 100,
}
REGIME_COLOURS = {"perfect scaling": "#d9f0d3", "diminishing returns": "#fee8c8",
                  "maximal data parallelism": "#f4cccc"}


@dataclass(frozen=True)
class FigureFile:
    name: str  # file stem under figures/
    title: str
    caption: str
    png: Path
    pdf: Path


def _int_label(x: float, _pos: int | None = None) -> str:
    return f"{x:.0f}" if x >= 1 else f"{x:g}"


def _pow2_label(x: float, _pos: int | None = None) -> str:
    return f"$2^{{{np.log2(x):.0f}}}$" if x > 0 else ""


def _log2_axis(axis: matplotlib.axis.Axis, formatter: Callable = _int_label) -> None:
    axis.set_major_locator(LogLocator(base=2))
    axis.set_major_formatter(FuncFormatter(formatter))
    axis.set_minor_formatter(NullFormatter())


def _plain_log_axis(axis: matplotlib.axis.Axis) -> None:
    # 1-2-5 ticks read better than 2x10^2 in a paper with few decades on the axis.
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _p: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _batch_axis(ax: plt.Axes, batch_sizes: np.ndarray) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes if len(batch_sizes) <= 12 else batch_sizes[:: int(np.ceil(len(batch_sizes) / 12))])
    ax.xaxis.set_major_formatter(FuncFormatter(_int_label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", which="minor", bottom=False)
    ax.set_xlabel("batch size $B$")
    if len(batch_sizes) > 6:
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right")


def _batch_colours(batch_sizes: np.ndarray) -> dict[int, tuple]:
    cols = sns.color_palette("viridis", len(batch_sizes))
    return {int(b): c for b, c in zip(batch_sizes, cols)}


def _column_figure(height: float = HEIGHT) -> tuple[plt.Figure, plt.Axes]:
    return plt.subplots(figsize=(COLUMN_WIDTH, height), layout="constrained")


def _legend_below(fig: plt.Figure, ax: plt.Axes) -> None:
    # Below the axes the legend never hides data, whatever the curve's shape.
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=2, handlelength=1.6,
                   columnspacing=1.0)


def _data_ylim(ax: plt.Axes, values: np.ndarray) -> None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size:
        ax.set_ylim(v.min() / 1.5, v.max() * 1.5)


def _save(fig: plt.Figure, out: Path, name: str, title: str, caption: str) -> FigureFile:
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    fig.savefig(png, dpi=DPI)
    fig.savefig(pdf)
    plt.close(fig)
    return FigureFile(name, title, caption, png, pdf)


def _shade_regimes(ax: plt.Axes, a: Analysis, lo: float, hi: float) -> None:
    p, d = a.regimes.perfect_scaling_up_to, a.regimes.diminishing_returns_up_to
    if p is None:
        return
    spans = [("perfect scaling", lo, p)]
    spans.append(("diminishing returns", p, d if d is not None else hi))
    if d is not None:
        spans.append(("maximal data parallelism", d, hi))
    for label, x0, x1 in spans:
        if x1 > x0:
            ax.axvspan(x0, x1, color=REGIME_COLOURS[label], alpha=0.6, lw=0, zorder=0, label=label)


def steps_vs_batch(a: Analysis, out: Path) -> FigureFile | None:
    pb = a.per_batch
    b = pb["batch_size"].to_numpy(dtype=float)
    s = pb["steps_to_target"].to_numpy(dtype=float)
    ok = np.isfinite(s)
    if not ok.any():
        return None
    edge = pb["lr_on_edge"].to_numpy(dtype=bool)
    lo_x, hi_x = b.min() / 1.3, b.max() * 1.3
    fig, ax = _column_figure(HEIGHT + 0.9)
    _shade_regimes(ax, a, lo_x, hi_x)
    grid = np.geomspace(lo_x, hi_x, 200)
    b0, s0 = b[ok][0], s[ok][0]
    ax.plot(grid, s0 * b0 / grid, ls="--", color="0.4", lw=0.9, label="perfect scaling $\\propto 1/B$")
    c = a.critical
    if c.b_crit is not None:
        if c.band is not None:
            ax.fill_between(c.band.batch_size, c.band.low, c.band.high,
                            color=PALETTE[0], alpha=0.2, lw=0, label="fit 95% CI")
        ax.plot(grid, steps_curve(grid, c.s_min, c.b_crit), color=PALETTE[0],
                label=f"$S_{{min}}(1+B_{{crit}}/B)$, $B_{{crit}}$={c.b_crit:.0f}")
        ax.axvline(c.b_crit, color=PALETTE[0], ls=":", lw=0.9)
    err = np.vstack([s - pb["steps_ci95_low"].to_numpy(dtype=float),
                     pb["steps_ci95_high"].to_numpy(dtype=float) - s])
    err = np.where(np.isfinite(err), np.maximum(err, 0), 0)
    inner = ok & ~edge
    ax.errorbar(b[inner], s[inner], yerr=err[:, inner], fmt="o", color="k", ms=3.5, lw=0.8,
                capsize=1.5, label="best trial (bootstrap 95% CI)", zorder=5)
    if (ok & edge).any():
        ax.errorbar(b[ok & edge], s[ok & edge], yerr=err[:, ok & edge], fmt="o", mfc="white",
                    color="k", ms=3.5, lw=0.8, capsize=1.5, label="best LR on grid edge", zorder=5)
    ax.set_xlim(lo_x, hi_x)
    ax.set_yscale("log", base=2)
    _data_ylim(ax, np.r_[s, pb["steps_ci95_high"].to_numpy(dtype=float)])
    cens = ~ok
    if cens.any():
        # S is only known to exceed the trials' length there: mark them along the top edge.
        ax.scatter(b[cens], np.full(cens.sum(), 0.95), transform=ax.get_xaxis_transform(), marker="^",
                   facecolor="white", edgecolor="C3", s=24, zorder=6, clip_on=False,
                   label="censored (target not reached)")
    _log2_axis(ax.yaxis, _pow2_label)
    _batch_axis(ax, b)
    ax.set_ylabel("steps to target $S$")
    _legend_below(fig, ax)
    return _save(fig, out, "steps_vs_batch", "Steps to target vs batch size",
                 "Steps to target S(B) of the best trial at each batch size (error bars: bootstrap "
                 "95% CI over trials), the perfect-scaling line anchored at the smallest batch size, "
                 "the fitted S_min(1 + B_crit/B) with its bootstrap 95% band, and the regimes "
                 "(green: perfect scaling, orange: diminishing returns, red: maximal data parallelism). "
                 "Open circles: best LR on the grid's edge (S is an upper bound); open triangles along "
                 "the top: censored batch sizes, where no trial reached the target.")


def examples_vs_batch(a: Analysis, out: Path) -> FigureFile | None:
    pb = a.per_batch
    b = pb["batch_size"].to_numpy(dtype=float)
    e = pb["examples_to_target"].to_numpy(dtype=float)
    ok = np.isfinite(e)
    if not ok.any():
        return None
    lo_x, hi_x = b.min() / 1.3, b.max() * 1.3
    fig, ax = _column_figure(HEIGHT + 0.6)
    c = a.critical
    grid = np.geomspace(lo_x, hi_x, 200)
    if c.b_crit is not None:
        if c.band is not None:
            band_b = c.band.batch_size
            ax.fill_between(band_b, c.band.low * band_b, c.band.high * band_b,
                            color=PALETTE[0], alpha=0.2, lw=0, label="fit 95% CI")
        ax.plot(grid, c.e_min * (1 + grid / c.b_crit), color=PALETTE[0],
                label=f"$E_{{min}}(1+B/B_{{crit}})$")
        ax.axhline(c.e_min, color="0.4", ls="--", lw=0.9, label=f"$E_{{min}}$={c.e_min:.3g}")
    lo = pb["steps_ci95_low"].to_numpy(dtype=float) * b
    hi = pb["steps_ci95_high"].to_numpy(dtype=float) * b
    err = np.where(np.isfinite([e - lo, hi - e]), np.maximum([e - lo, hi - e], 0), 0)
    ax.errorbar(b[ok], e[ok], yerr=err[:, ok], fmt="o", color="k", ms=3.5, lw=0.8, capsize=1.5,
                label="best trial", zorder=5)
    ax.set_xlim(lo_x, hi_x)
    ax.set_yscale("log", base=2)
    _data_ylim(ax, np.r_[e, hi, c.e_min if c.e_min is not None else np.nan])
    _log2_axis(ax.yaxis, _pow2_label)
    _batch_axis(ax, b)
    ax.set_ylabel("examples to target $E = BS$")
    _legend_below(fig, ax)
    return _save(fig, out, "examples_vs_batch", "Examples to target vs batch size",
                 "Examples to target E = B S of the best trial per batch size with the fitted "
                 "E_min(1 + B/B_crit) and its bootstrap 95% band; beyond B_crit each doubling of B "
                 "costs nearly twice the examples.")


def lr_vs_batch(a: Analysis, out: Path) -> FigureFile | None:
    pb = a.per_batch
    b = pb["batch_size"].to_numpy(dtype=float)
    lr = pb["best_lr"].to_numpy(dtype=float)
    ok = np.isfinite(lr)
    if not ok.any():
        return None
    edge = pb["lr_on_edge"].to_numpy(dtype=bool)
    lo_x, hi_x = b.min() / 1.3, b.max() * 1.3
    fig, ax = _column_figure(HEIGHT + 0.9)
    grid_lr = a.trials["lr"].to_numpy(dtype=float)
    fit = a.lr_scaling
    grid = np.geomspace(lo_x, hi_x, 200)
    if fit.exponent is not None:
        ax.plot(grid, rule_curve("linear", fit, grid), ls="--", color=PALETTE[1], lw=1.1, zorder=3,
                label="linear rule $\\propto B$")
        ax.plot(grid, rule_curve("sqrt", fit, grid), ls=":", color=PALETTE[2], lw=1.2,
                label="square-root rule $\\propto \\sqrt{B}$")
        ci = fit.exponent_ci95
        ci_txt = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and None not in ci else ""
        ax.plot(grid, rule_curve("power", fit, grid), color=PALETTE[0],
                label=f"power law $B^{{{fit.exponent:.2f}}}${ci_txt}")
        if fit.preferred_rule == "saturating":
            ax.plot(grid, rule_curve("saturating", fit, grid), color=PALETTE[4], ls="-.",
                    label="$\\eta_{max}/(1+B_{noise}/B)$")
    err = np.vstack([lr - pb["best_lr_ci95_low"].to_numpy(dtype=float),
                     pb["best_lr_ci95_high"].to_numpy(dtype=float) - lr])
    err = np.where(np.isfinite(err), np.maximum(err, 0), 0)
    by_metric = (pb["lr_objective"] == "metric").to_numpy()
    inner = ok & ~edge & ~by_metric
    ax.errorbar(b[inner], lr[inner], yerr=err[:, inner], fmt="o", color="k", ms=3.5, lw=0.8,
                capsize=1.5, label="best LR (interpolated)", zorder=5)
    fallback = ok & ~edge & by_metric
    if fallback.any():
        ax.errorbar(b[fallback], lr[fallback], yerr=err[:, fallback], fmt="D", color="0.45", ms=3.2,
                    lw=0.8, capsize=1.5, label="best LR by best metric (censored B)", zorder=5)
    if (ok & edge).any():
        ax.scatter(b[ok & edge], lr[ok & edge], marker="o", facecolor="white", edgecolor="C3",
                   s=20, zorder=6, label="on grid edge (not fitted)")
    ax.set_xlim(lo_x, hi_x)
    ax.set_yscale("log")
    lr_lo = pb["best_lr_ci95_low"].to_numpy(dtype=float)
    lr_hi = pb["best_lr_ci95_high"].to_numpy(dtype=float)
    finite = np.r_[lr, lr_lo, lr_hi]
    finite = finite[np.isfinite(finite) & (finite > 0)]
    y_lo, y_hi = max(finite.min() / 2, grid_lr.min() / 1.5), min(finite.max() * 2, grid_lr.max() * 1.5)
    ax.set_ylim(y_lo, y_hi)
    edges = [v for v in (grid_lr.min(), grid_lr.max()) if y_lo < v < y_hi]
    for i, v in enumerate(edges):
        ax.axhline(v, color="0.6", lw=0.8, ls=(0, (1, 1)), label="LR grid edge" if i == 0 else None)
    _batch_axis(ax, b)
    ax.set_ylabel("best learning rate $\\eta^*$")
    _legend_below(fig, ax)
    return _save(fig, out, "lr_vs_batch", "Best learning rate vs batch size",
                 "Best learning rate per batch size (interpolated on the grid; error bars: bootstrap "
                 "95% CI), with the linear and square-root rules and the free power law fitted to the "
                 "interior optima; open red circles are optima on the grid's edge, left out of the fits; "
                 "grey diamonds are batch sizes where no trial reached the target, whose best LR is "
                 "the one with the best value of the target metric.")


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
    fig_w = FULL_WIDTH if len(lrs) > 9 else COLUMN_WIDTH + 0.6
    fig, ax = plt.subplots(figsize=(fig_w, max(HEIGHT, 0.28 * len(bs) + 1.0)), layout="constrained")
    cell = t.groupby(["batch_size", "log_lr"])
    if any_reached:
        vals = cell["value"].min()
    else:
        vals = cell["value"].max() if a.target.mode == "max" else cell["value"].min()
    finite = vals[np.isfinite(vals.to_numpy(dtype=float))]
    cmap = sns.color_palette("viridis_r" if any_reached else ("viridis" if a.target.mode == "max" else "viridis_r"),
                             as_cmap=True)
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
        mesh = ax.pcolormesh(np.arange(len(lrs) + 1), np.arange(len(bs) + 1),
                             np.ma.masked_invalid(mat.to_numpy(dtype=float)), cmap=cmap, norm=norm,
                             edgecolors="white", linewidth=0.5)
        for (bb, ll), grp in cell:
            i, j = int(np.searchsorted(bs, bb)), int(np.searchsorted(lrs, ll))
            txt = _cell_text(grp["status"], grp["reached"], any_reached)
            if txt:
                v = mat.iat[i, j]
                r, g, b_, _alpha = cmap(norm(v)) if np.isfinite(v) else (0.9, 0.9, 0.9, 1)
                dark = 0.299 * r + 0.587 * g + 0.114 * b_ < 0.5
                ax.text(j + 0.5, i + 0.5, txt, ha="center", va="center", fontsize=6,
                        color="white" if dark else "0.25")
            if best_ids & set(grp["trial_id"]):
                # Inset so neighbouring rows' boxes never share an edge.
                ax.add_patch(plt.Rectangle((j + 0.08, i + 0.1), 0.84, 0.8, fill=False, ec="C3", lw=1.2))
        step = max(1, int(np.ceil(len(lrs) / 12)))
        ax.set_xticks(np.arange(len(lrs))[::step] + 0.5)
        ax.set_xticklabels([f"{10 ** v:.2g}" for v in lrs[::step]], rotation=45, ha="right")
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
    cbar.ax.tick_params(labelsize=6)
    if norm_log:
        _plain_log_axis(cbar.ax.yaxis)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("batch size $B$")
    marks = ("red box: best trial per batch size; × diverged; es early-stopped; f failed; "
             "– or grey: never reached the target" if shared_grid else
             "red star: best trial per batch size; × diverged; open squares: never reached the target")
    return _save(fig, out, "heatmap", "Batch size × learning rate",
                 f"{label.capitalize()} of every trial (minimum over seeds per cell). {marks}.")


def learning_curves(a: Analysis, out: Path) -> FigureFile | None:
    ids = a.per_batch.dropna(subset=["best_trial_id"])
    if ids.empty:
        return None
    metric = a.target.metric
    c = a.run.curves
    rows = c.loc[c["trial_id"].isin(set(ids["best_trial_id"])), ["trial_id", "batch_size", "step", metric]]
    rows = rows[np.isfinite(rows[metric].to_numpy(dtype=float)) & (rows["step"] > 0)].sort_values(["batch_size", "step"])
    if rows.empty:
        return None
    bs = np.sort(ids["batch_size"].unique())
    colours = _batch_colours(bs)
    fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH, HEIGHT), sharey=True, layout="constrained")
    for _, r in ids.iterrows():
        d = rows[rows["trial_id"] == r["best_trial_id"]]
        if d.empty:
            continue
        b = int(r["batch_size"])
        kw = dict(color=colours[b], lw=1.0, label=f"{b}")
        axes[0].plot(d["step"], d[metric], **kw)
        axes[1].plot(d["step"] * b, d[metric], **kw)
    # A loss approaching a small target is only readable on a log axis.
    log_y = a.target.mode == "min" and bool((rows[metric] > 0).all()) and a.target.value > 0
    for ax, xl in zip(axes, ("steps", "examples seen")):
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.axhline(a.target.value, color="k", ls="--", lw=0.8)
        ax.set_xlabel(xl)
    axes[0].set_ylabel(metric.replace("_", " "))
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, title="$B$", loc="outside right center", fontsize=6, title_fontsize=6.5)
    return _save(fig, out, "learning_curves", "Learning curves of the best trial per batch size",
                 f"{metric} of the best trial at each batch size against optimizer steps (left) and "
                 f"examples (right); the dashed line is the target {a.target.value:g}.")


def generalization(a: Analysis, out: Path) -> FigureFile | None:
    pb = a.per_batch
    gap = pb["generalization_gap"].to_numpy(dtype=float)
    sharp = pb["sharpness"].to_numpy(dtype=float) if "sharpness" in pb else np.full(len(pb), np.nan)
    ok, ok_s = np.isfinite(gap), np.isfinite(sharp)
    if not ok.any() and not ok_s.any():
        return None
    b = pb["batch_size"].to_numpy(dtype=float)
    if ok_s.any():  # Keskar et al.: the gap and the sharpness side by side, sharing B
        fig, (ax, ax_s) = plt.subplots(2, 1, figsize=(COLUMN_WIDTH, HEIGHT * 1.5), sharex=True,
                                       layout="constrained")
        ax_s.plot(b[ok_s], sharp[ok_s], "s-", color="C1", ms=3.5, lw=0.9)
        ax_s.set_ylabel(r"sharpness $\lambda_{max}$")
        _batch_axis(ax_s, b)
    else:
        fig, ax = _column_figure()
        _batch_axis(ax, b)
    ax.plot(b[ok], gap[ok], "o-", color="k", ms=3.5, lw=0.9)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_ylabel("val loss − train loss")
    caption = ("Final validation minus final training loss at the best learning rate of each batch "
               "size (mean over its seeds)")
    if ok_s.any():
        caption += ("; below, the sharpness (top eigenvalue of the training-loss Hessian at the final "
                    "weights, power iteration on a fixed subset) of the same trials")
    return _save(fig, out, "generalization_gap", "Generalization gap and sharpness vs batch size", caption + ".")


def noise_scale(a: Analysis, out: Path) -> FigureFile | None:
    nc = a.noise.curves
    if not a.noise.measured or nc.empty:
        return None
    bs = np.sort(nc["batch_size"].unique())
    colours = _batch_colours(bs)
    fig, ax = _column_figure(HEIGHT + 0.7)
    for b, d in nc.groupby("batch_size"):
        ax.plot(d["examples_seen"], d["grad_noise_scale"], color=colours[int(b)], lw=0.9, label=f"{int(b)}")
    c = a.critical
    if c.b_crit is not None:
        ci = c.b_crit_ci95
        if ci and None not in ci:
            ax.axhspan(ci[0], ci[1], color="C3", alpha=0.12, lw=0)
        ax.axhline(c.b_crit, color="C3", ls="--", lw=1, label="$B_{crit}$ (fit)")
    if a.noise.b_simple is not None:
        ax.axhline(a.noise.b_simple, color="k", ls=":", lw=1, label="$B_{simple}$ at target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set_xlabel("examples seen")
    ax.set_ylabel("gradient noise scale $B_{simple}$")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, [f"B={x}" if x.isdigit() else x for x in labels], loc="outside lower center",
               ncol=4, handlelength=1.4, columnspacing=0.8)
    return _save(fig, out, "noise_scale", "Gradient noise scale during training",
                 "B_simple = tr(Σ)/|G|² measured during training by the best trial at each batch size, "
                 "against the fitted B_crit (dashed, shaded 95% CI) and the median B_simple at the target.")


FIGURES: tuple[Callable[[Analysis, Path], FigureFile | None], ...] = (
    steps_vs_batch, examples_vs_batch, lr_vs_batch, heatmap, learning_curves, generalization, noise_scale,
)


def write_figures(a: Analysis, out_dir: str | Path) -> list[FigureFile]:
    """Draw every figure the data allow into ``out_dir``; returns what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with plt.rc_context(STYLE):
        for draw in FIGURES:
            f = draw(a, out)
            if f is not None:
                written.append(f)
    return written
