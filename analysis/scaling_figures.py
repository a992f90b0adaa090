"""The scaling figures: steps, examples and best learning rate against batch size.

Each is a ``ScalingPlot``: the fitted curves with the fit's bootstrap band, the measured
points of the best trials with bootstrap 95% error bars, on the shared log2 batch axis.

    from pathlib import Path
    import matplotlib.pyplot as plt
    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    from analysis.fits import analyse
    from analysis.figure_style import STYLE
    from analysis.scaling_figures import steps_vs_batch
    with plt.rc_context(STYLE):
        steps_vs_batch(analyse(load_run("/tmp/demo"), n_boot=200), Path("/tmp"))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .critical import steps_curve
from .figure_style import (
    HEIGHT,
    PALETTE,
    FigureFile,
    batch_axis,
    column_figure,
    data_ylim,
    legend_below,
    log2_axis,
    pow2_label,
    save_figure,
)
from .lr_rules import rule_curve
from .numbers import format_interval, format_number
from .results import Analysis

REGIME_COLOURS = {"perfect scaling": "#d9f0d3", "diminishing returns": "#fee8c8", "maximal data parallelism": "#f4cccc"}
POINT_STYLE: dict[str, Any] = {"fmt": "o", "color": "k", "ms": 3.5, "lw": 0.8, "capsize": 1.5}


@dataclass(frozen=True)
class Points:
    """One kind of measured point on a scaling figure."""

    mask: np.ndarray
    """Which batch sizes are of this kind."""

    label: str
    """Legend entry."""

    style: Mapping[str, Any] = field(default_factory=dict)
    """``errorbar`` keywords that differ from ``POINT_STYLE``."""


class ScalingPlot:
    """A column figure of one quantity against batch size, drawn in the order of its legend."""

    def __init__(self, batch_sizes: np.ndarray, height: float) -> None:
        self.b = batch_sizes
        # A margin of 1.3x keeps the end points' error bars and markers off the frame.
        self.x_lo, self.x_hi = batch_sizes.min() / 1.3, batch_sizes.max() * 1.3
        self.grid = np.geomspace(self.x_lo, self.x_hi, 200)
        self.fig, self.ax = column_figure(height)

    def band(self, x: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        """The fit's 95% band (bootstrap or profile likelihood, as the fit's ``ci_method``)."""
        self.ax.fill_between(x, low, high, color=PALETTE[0], alpha=0.2, lw=0, label="fit 95% CI")

    def points(self, y: np.ndarray, low: np.ndarray, high: np.ndarray, kinds: Sequence[Points]) -> None:
        """Measured ``y`` with error bars to its bootstrap ``low`` and ``high`` (NaN: none)."""
        err = np.vstack([y - low, high - y])
        err = np.where(np.isfinite(err), np.maximum(err, 0), 0)
        for k in kinds:
            if k.mask.any():
                self.ax.errorbar(
                    self.b[k.mask],
                    y[k.mask],
                    yerr=err[:, k.mask],
                    **{**POINT_STYLE, **k.style},
                    label=k.label,
                    zorder=5,
                )

    def save(self, out: Path, ylabel: str, name: str, title: str, caption: str) -> FigureFile:
        self.ax.set_xlim(self.x_lo, self.x_hi)
        batch_axis(self.ax, self.b)
        self.ax.set_ylabel(ylabel)
        legend_below(self.fig, self.ax)
        return save_figure(self.fig, out, name, title, caption)


def _band(a: Analysis) -> str:
    return a.critical.ci_method or "none"


def _shade_regimes(p: ScalingPlot, a: Analysis) -> None:
    lo, hi = p.x_lo, p.x_hi
    perfect, diminishing = a.regimes.perfect_scaling_up_to, a.regimes.diminishing_returns_up_to
    if perfect is None:
        return
    spans = [("perfect scaling", lo, perfect)]
    spans.append(("diminishing returns", perfect, diminishing if diminishing is not None else hi))
    if diminishing is not None:
        spans.append(("maximal data parallelism", diminishing, hi))
    for label, x0, x1 in spans:
        if x1 > x0:
            p.ax.axvspan(x0, x1, color=REGIME_COLOURS[label], alpha=0.6, lw=0, zorder=0, label=label)


def _column(a: Analysis, name: str) -> np.ndarray:
    return a.per_batch[name].to_numpy(dtype=float)


def steps_vs_batch(a: Analysis, out: Path) -> FigureFile | None:
    b, s = _column(a, "batch_size"), _column(a, "steps_to_target")
    ok = np.isfinite(s)
    if not ok.any():
        return None
    edge = a.per_batch["lr_on_edge"].to_numpy(dtype=bool)
    p = ScalingPlot(b, HEIGHT + 0.9)
    ax = p.ax
    _shade_regimes(p, a)
    b0, s0 = b[ok][0], s[ok][0]
    ax.plot(p.grid, s0 * b0 / p.grid, ls="--", color="0.4", lw=0.9, label="perfect scaling $\\propto 1/B$")
    c = a.critical
    if c.b_crit is not None and c.s_min is not None:
        if c.band is not None:
            p.band(c.band.batch_size, c.band.low, c.band.high)
        ax.plot(
            p.grid,
            steps_curve(p.grid, c.s_min, c.b_crit),
            color=PALETTE[0],
            label=f"$S_{{min}}(1+B_{{crit}}/B)$, $B_{{crit}}$={format_number(c.b_crit)}",
        )
        ax.axvline(c.b_crit, color=PALETTE[0], ls=":", lw=0.9)
    high = _column(a, "steps_ci95_high")
    p.points(
        s,
        _column(a, "steps_ci95_low"),
        high,
        [
            Points(ok & ~edge, "best trial (bootstrap 95% CI)"),
            Points(ok & edge, "best LR on grid edge", {"mfc": "white"}),
        ],
    )
    ax.set_yscale("log", base=2)
    data_ylim(ax, np.r_[s, high])
    if (~ok).any():
        # S is only known to exceed the trials' length there: mark them along the top edge.
        ax.scatter(
            b[~ok],
            np.full((~ok).sum(), 0.95),
            transform=ax.get_xaxis_transform(),
            marker="^",
            facecolor="white",
            edgecolor="C3",
            s=24,
            zorder=6,
            clip_on=False,
            label="censored (target not reached)",
        )
    log2_axis(ax.yaxis, pow2_label)
    return p.save(
        out,
        "steps to target $S$",
        "steps_vs_batch",
        "Steps to target vs batch size",
        "Steps to target S(B) of the best trial at each batch size (error bars: bootstrap "
        "95% CI over trials, where resampling can vary S), the perfect-scaling line anchored at "
        f"the smallest batch size, the fitted S_min(1 + B_crit/B) with its 95% band ({_band(a)}), "
        "and the regimes "
        "(green: perfect scaling, orange: diminishing returns, red: maximal data parallelism). "
        "Open circles: best LR on the grid's edge (S is an upper bound); open triangles along "
        "the top: censored batch sizes, where no trial reached the target.",
    )


def examples_vs_batch(a: Analysis, out: Path) -> FigureFile | None:
    b, e = _column(a, "batch_size"), _column(a, "examples_to_target")
    ok = np.isfinite(e)
    if not ok.any():
        return None
    p = ScalingPlot(b, HEIGHT + 0.6)
    ax = p.ax
    c = a.critical
    if c.b_crit is not None and c.e_min is not None:
        if c.band is not None:
            p.band(c.band.batch_size, c.band.low * c.band.batch_size, c.band.high * c.band.batch_size)
        ax.plot(p.grid, c.e_min * (1 + p.grid / c.b_crit), color=PALETTE[0], label="$E_{min}(1+B/B_{crit})$")
        ax.axhline(c.e_min, color="0.4", ls="--", lw=0.9, label=f"$E_{{min}}$={format_number(c.e_min)}")
    high = _column(a, "steps_ci95_high") * b
    p.points(e, _column(a, "steps_ci95_low") * b, high, [Points(ok, "best trial")])
    ax.set_yscale("log", base=2)
    data_ylim(ax, np.r_[e, high, c.e_min if c.e_min is not None else np.nan])
    log2_axis(ax.yaxis, pow2_label)
    return p.save(
        out,
        "examples to target $E = BS$",
        "examples_vs_batch",
        "Examples to target vs batch size",
        "Examples to target E = B S of the best trial per batch size with the fitted "
        f"E_min(1 + B/B_crit) and its 95% band ({_band(a)}); beyond B_crit each doubling of B "
        "costs nearly twice the examples.",
    )


PREFERRED_LABELS = {
    "constant": "constant $\\eta^*$",
    "saturating": "saturating law",
    "surge": "surge law",
}
"""Legend labels of the rules drawn only when preferred."""


def lr_vs_batch(a: Analysis, out: Path) -> FigureFile | None:
    b, lr = _column(a, "batch_size"), _column(a, "best_lr")
    ok = np.isfinite(lr)
    if not ok.any():
        return None
    edge = a.per_batch["lr_on_edge"].to_numpy(dtype=bool)
    p = ScalingPlot(b, HEIGHT + 0.9)
    ax = p.ax
    fit = a.lr_scaling
    if fit.exponent is not None:
        ax.plot(
            p.grid,
            rule_curve("linear", fit, p.grid),
            ls="--",
            color=PALETTE[1],
            lw=1.1,
            zorder=3,
            label="linear rule $\\propto B$",
        )
        ax.plot(
            p.grid,
            rule_curve("sqrt", fit, p.grid),
            ls=":",
            color=PALETTE[2],
            lw=1.2,
            label="square-root rule $\\propto \\sqrt{B}$",
        )
        ci = fit.exponent_ci95
        ci_txt = f" {format_interval(ci)}" if ci and None not in ci else ""
        ax.plot(
            p.grid,
            rule_curve("power", fit, p.grid),
            color=PALETTE[0],
            label=f"power law $B^{{{format_number(fit.exponent)}}}${ci_txt}",
        )
        extra = PREFERRED_LABELS.get(fit.preferred_rule or "")
        if extra is not None:
            ax.plot(
                p.grid,
                rule_curve(fit.preferred_rule or "", fit, p.grid),
                color=PALETTE[4],
                ls="-.",
                label=extra + " (preferred)",
            )
    lr_lo, lr_hi = _column(a, "best_lr_ci95_low"), _column(a, "best_lr_ci95_high")
    by_metric = (a.per_batch["lr_objective"] == "metric").to_numpy()
    p.points(
        lr,
        lr_lo,
        lr_hi,
        [
            Points(ok & ~edge & ~by_metric, "best LR (interpolated)"),
            Points(
                ok & ~edge & by_metric, "best LR by best metric (censored B)", {"fmt": "D", "color": "0.45", "ms": 3.2}
            ),
        ],
    )
    if (ok & edge).any():
        ax.scatter(
            b[ok & edge],
            lr[ok & edge],
            marker="o",
            facecolor="white",
            edgecolor="C3",
            s=20,
            zorder=6,
            label="on grid edge (not fitted)",
        )
    ax.set_yscale("log")
    grid_lr = a.trials["lr"].to_numpy(dtype=float)
    finite = np.r_[lr, lr_lo, lr_hi]
    finite = finite[np.isfinite(finite) & (finite > 0)]
    y_lo, y_hi = max(finite.min() / 2, grid_lr.min() / 1.5), min(finite.max() * 2, grid_lr.max() * 1.5)
    ax.set_ylim(y_lo, y_hi)
    edges = [v for v in (grid_lr.min(), grid_lr.max()) if y_lo < v < y_hi]
    for i, v in enumerate(edges):
        ax.axhline(v, color="0.6", lw=0.8, ls=(0, (1, 1)), label="LR grid edge" if i == 0 else None)
    return p.save(
        out,
        "best learning rate $\\eta^*$",
        "lr_vs_batch",
        "Best learning rate vs batch size",
        "Best learning rate per batch size (interpolated on the grid; error bars: bootstrap "
        "95% CI), with the linear and square-root rules and the free power law fitted to the "
        "interior optima, and the preferred rule when it is another (constant, saturating or "
        "surge); open red circles are optima on the grid's edge, left out of the fits; "
        "grey diamonds are batch sizes where no trial reached the target, whose best LR is "
        "the one with the best value of the target metric.",
    )
