"""The one style of the report's figures and the axis and file helpers they share.

Seaborn "ticks" + "paper" context, 8 pt labels, no text under 7 pt, colour-blind palette,
every figure one column of a two-column paper wide (3.3 in), so that set at a column's width
its text stays at least ``MIN_FONT_PT``. One colour per batch size (``batch_colours``, viridis:
lightness grows with B, so it reads in grey and under every colour-vision deficiency), the
same in every figure of a run. ``STYLE`` is applied per figure through ``plt.rc_context``
(see ``figures.write_figures``) so importing changes no global state. Each figure is saved as
PNG (200 dpi) and PDF (vector); ``save_figure`` records its size, its smallest text and its
batch colours (``FigureFile``), which ``figures.write_figures`` writes to figures/figures.json.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib import RcParams

# Files only: a display-bound backend would be slower and fail on headless nodes.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from cycler import cycler  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from .numbers import format_number  # noqa: E402

COLUMN_WIDTH = 3.3
"""One column of a two-column paper (inches): the width of every figure."""
FULL_WIDTH = 7.0
MIN_FONT_PT = 7.0
"""The smallest text a figure may hold at a column's width."""
HEIGHT = 2.5
DPI = 200
PALETTE = sns.color_palette("colorblind")
# RcParams validates every key and value here, once, rather than at the first figure.
STYLE = RcParams(
    {
        **sns.axes_style("ticks"),
        **sns.plotting_context("paper"),
        "font.size": 8,
        "axes.labelsize": 8,
        "axes.titlesize": 8,
        "legend.fontsize": 7,
        "legend.title_fontsize": 7,
        "xtick.labelsize": 7,
        "ytick.labelsize": 7,
        "lines.linewidth": 1.2,
        "lines.markersize": 4,
        "axes.prop_cycle": cycler(color=PALETTE),
        "axes.grid": True,
        "grid.alpha": 0.25,
        "grid.linewidth": 0.5,
        "legend.frameon": False,
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "figure.dpi": 100,
    }
)


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

    width_in: float = 0.0
    """Width of the saved figure (inches): the PDF's page width."""

    height_in: float = 0.0
    """Height of the saved figure (inches)."""

    min_font_pt: float = 0.0
    """Size of its smallest text (tick, axis and colour-bar labels, legend, marks), in points."""

    axis_label_pt: float = 0.0
    """Size of its smallest axis label, in points."""

    font_sizes: tuple[float, ...] = ()
    """Every size its text is set in (mathtext sub- and superscripts at 0.7 of theirs)."""

    batch_colours: dict[str, str] = field(default_factory=dict)
    """Colour (hex) of each batch size's lines (``gid`` "batch_size=B"), by B."""

    def facts(self) -> dict[str, Any]:
        """What figures.json records of the figure."""
        return {
            "pdf": self.pdf.name,
            "png": self.png.name,
            "width_in": self.width_in,
            "height_in": self.height_in,
            "min_font_pt": self.min_font_pt,
            "axis_label_pt": self.axis_label_pt,
            "font_sizes": list(self.font_sizes),
            "batch_colours": self.batch_colours,
        }


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
    """The one colour of each batch size: viridis from dark (smallest B) to light green (its
    pale yellow end is left out, too faint on white). Pass every batch size of the run, not
    just those a figure draws, so each B has its colour in every figure."""
    bs = sorted({int(b) for b in batch_sizes})
    cmap = sns.color_palette("viridis", as_cmap=True)
    pos = np.linspace(0.0, 0.85, len(bs)) if len(bs) > 1 else np.zeros(1)
    return {b: tuple(float(x) for x in cmap(p)[:3]) for b, p in zip(bs, pos)}  # type: ignore[misc]


BATCH_GID = "batch_size="
"""``gid`` prefix of an artist drawn for one batch size: ``gid=f"batch_size={B}"``."""


def _texts(fig: plt.Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def figure_facts(fig: plt.Figure) -> dict[str, Any]:
    """Size, smallest text and batch colours of a drawn figure (see ``FigureFile``)."""
    w, h = fig.get_size_inches()
    sizes = [float(t.get_fontsize()) for t in _texts(fig)]
    labels = [
        float(lab.get_fontsize())
        for ax in fig.axes
        for lab in (ax.xaxis.label, ax.yaxis.label)
        if lab.get_visible() and lab.get_text().strip()
    ]
    colours: dict[str, str] = {}
    for line in fig.findobj(Line2D):
        if str(line.get_gid() or "").startswith(BATCH_GID):
            colours[str(line.get_gid()).removeprefix(BATCH_GID)] = to_hex(line.get_color())
    return {
        "width_in": round(float(w), 4),
        "height_in": round(float(h), 4),
        "min_font_pt": min(sizes, default=0.0),
        "axis_label_pt": min(labels, default=0.0),
        "font_sizes": tuple(sorted(set(sizes))),
        "batch_colours": dict(sorted(colours.items(), key=lambda kv: int(kv[0]))),
    }


def column_figure(height: float = HEIGHT) -> tuple[plt.Figure, plt.Axes]:
    return plt.subplots(figsize=(COLUMN_WIDTH, height), layout="constrained")


def legend_below(fig: plt.Figure, ax: plt.Axes) -> None:
    # Below the axes the legend never hides data, whatever the curve's shape.
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=2, handlelength=1.6, columnspacing=1.0)


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
    facts = figure_facts(fig)  # after a draw: tick labels exist only then
    fig.savefig(pdf)
    plt.close(fig)
    return FigureFile(name, title, caption, png, pdf, **facts)
