"""The one style of the report's figures and the axis and file helpers they share.

Seaborn "ticks" + "paper" context, 8 pt text, colour-blind palette, sized for a two-column
paper: 3.4 in wide for one column, 7 in for both. ``STYLE`` is applied per figure through
``plt.rc_context`` (see ``figures.write_figures``) so importing changes no global state.
Each figure is saved as PNG (200 dpi) and PDF (vector).

    from pathlib import Path
    import matplotlib.pyplot as plt
    from analysis.figure_style import STYLE, column_figure, save_figure
    with plt.rc_context(STYLE):
        fig, ax = column_figure()
        ax.plot([1, 2], [3, 4])
        save_figure(fig, Path("/tmp"), "demo", "Demo", "A line.")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib import RcParams

# Files only: a display-bound backend would be slower and fail on headless nodes.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from cycler import cycler  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from .numbers import format_number  # noqa: E402

COLUMN_WIDTH = 3.4
FULL_WIDTH = 7.0
HEIGHT = 2.5
DPI = 200
PALETTE = sns.color_palette("colorblind")
# RcParams validates every key and value here, once, rather than at the first figure.
STYLE = RcParams({
    **sns.axes_style("ticks"),
    **sns.plotting_context("paper"),
    "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8, "legend.fontsize": 6.5,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4,
    "axes.prop_cycle": cycler(color=PALETTE), "axes.grid": True, "grid.alpha": 0.25,
    "grid.linewidth": 0.5, "legend.frameon": False, "pdf.fonttype": 42, "ps.fonttype": 42,
    "figure.dpi": 100,
})


@dataclass(frozen=True)
class FigureFile:
    """One figure as written under figures/, with the text the report shows beside it."""

    name: str
    """File stem under figures/."""

    title: str
    """Short title, shown in bold before the caption."""

    caption: str
    """What the figure shows and how to read its marks."""

    png: Path
    """The raster file (embedded in report.html)."""

    pdf: Path
    """The vector file, for the paper."""


def number_label(x: float, _pos: int | None = None) -> str:
    return format_number(x, grouping=False)


def pow2_label(x: float, _pos: int | None = None) -> str:
    return f"$2^{{{np.log2(x):.0f}}}$" if x > 0 else ""


def log2_axis(axis: Axis, formatter: Callable[[float, int | None], str]) -> None:
    axis.set_major_locator(LogLocator(base=2))
    axis.set_major_formatter(FuncFormatter(formatter))
    axis.set_minor_formatter(NullFormatter())


def plain_log_axis(axis: Axis) -> None:
    # 1-2-5 ticks read better than 2x10^2 in a paper with few decades on the axis. They are
    # exact, so they need no rounding, and :g turns them scientific from 1e6, before a
    # whole number grows too wide for a colorbar.
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _p: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def batch_axis(ax: plt.Axes, batch_sizes: np.ndarray) -> None:
    """The x axis of every figure against batch size: log2, one tick per batch size (at most 12)."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes if len(batch_sizes) <= 12 else batch_sizes[:: int(np.ceil(len(batch_sizes) / 12))])
    ax.xaxis.set_major_formatter(FuncFormatter(number_label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", which="minor", bottom=False)
    ax.set_xlabel("batch size $B$")
    if len(batch_sizes) > 6:
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right")


def batch_colours(batch_sizes: np.ndarray) -> dict[int, tuple[float, float, float]]:
    cols = sns.color_palette("viridis", len(batch_sizes))
    return {int(b): c for b, c in zip(batch_sizes, cols)}


def column_figure(height: float = HEIGHT) -> tuple[plt.Figure, plt.Axes]:
    return plt.subplots(figsize=(COLUMN_WIDTH, height), layout="constrained")


def legend_below(fig: plt.Figure, ax: plt.Axes) -> None:
    # Below the axes the legend never hides data, whatever the curve's shape.
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=2, handlelength=1.6,
                   columnspacing=1.0)


def data_ylim(ax: plt.Axes, values: np.ndarray) -> None:
    """Y limits with a margin around the finite, positive ``values`` (log axes)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size:
        ax.set_ylim(v.min() / 1.5, v.max() * 1.5)


def save_figure(fig: plt.Figure, out: Path, name: str, title: str, caption: str) -> FigureFile:
    """Write ``fig`` as out/name.png and out/name.pdf and close it."""
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    fig.savefig(png, dpi=DPI)
    fig.savefig(pdf)
    plt.close(fig)
    return FigureFile(name, title, caption, png, pdf)
