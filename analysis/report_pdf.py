"""report.pdf: the report as one PDF document, through matplotlib's PDF backend (no LaTeX).

The same blocks as report.md and report.html, in order, on A4 pages: headings, text and
bullets wrapped to the page, each figure at its own size (one paper column, 3.3 in), and
each table as a table (rows split across pages when they do not fit).

    from pathlib import Path
    from analysis.render import Bullets, Heading, Paragraph
    from analysis.report_pdf import write_pdf
    write_pdf([Heading("Report", 1), Paragraph("B_crit = **700**"), Bullets(("one", "two"))],
              Path("/tmp/report.pdf"), "Report")
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import RcParams
from matplotlib.backends.backend_pdf import PdfPages

from .figure_style import MIN_FONT_PT
from .render import Block, Bullets, Figure, Heading, Paragraph, Table

PAGE = (8.27, 11.69)
"""A4 portrait, inches."""
MARGIN = 0.8
TEXT_PT = 9.0
TABLE_PT = MIN_FONT_PT
HEADING_PT = {1: 15.0, 2: 12.0, 3: 10.0}
FONT = RcParams({"font.family": "DejaVu Sans", "pdf.fonttype": 42})
# DejaVu Sans' mean advance is ~0.55 em: the characters of one line at a size
_ADVANCE = 0.56


def plain(text: str) -> str:
    """Inline markup (`code`, **bold**) as plain text; ``$`` kept literal (not mathtext)."""
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    return text.replace("$", r"\$")


def _chars(width_in: float, size_pt: float) -> int:
    return max(20, int(width_in * 72 / (_ADVANCE * size_pt)))


class _Pages:
    """A cursor down A4 pages; a new page starts where the next thing does not fit."""

    def __init__(self, pdf: PdfPages) -> None:
        self.pdf = pdf
        self.fig: plt.Figure | None = None
        self.y = 0.0
        self.pages = 0
        self.width = PAGE[0] - 2 * MARGIN
        self.table_pt = TABLE_PT

    def need(self, height: float) -> plt.Figure:
        if self.fig is None or self.y - height < MARGIN:
            self.new_page()
        assert self.fig is not None
        return self.fig

    def new_page(self) -> None:
        self.close_page()
        self.fig = plt.figure(figsize=PAGE)
        self.pages += 1
        self.y = PAGE[1] - MARGIN

    def close_page(self) -> None:
        if self.fig is not None:
            self.fig.text(0.5, 0.45 / PAGE[1], str(self.pages), ha="center", fontsize=8, color="0.4")
            self.pdf.savefig(self.fig)
            plt.close(self.fig)
            self.fig = None

    def space(self, height: float) -> None:
        if self.fig is not None:
            self.y -= height

    def lines(self, text: str, size: float, bold: bool = False, indent: float = 0.0, first: str = "") -> None:
        """Wrapped text; ``first`` prefixes the first line (a bullet), later lines are indented."""
        width = _chars(self.width - indent, size)
        wrapped = textwrap.wrap(plain(text), width=width) or [""]
        step = 1.35 * size / 72
        for i, line in enumerate(wrapped):
            fig = self.need(step)
            if i == 0 and first:
                fig.text(MARGIN / PAGE[0], self.y / PAGE[1], first, fontsize=size, va="top")
            fig.text(
                (MARGIN + indent) / PAGE[0],
                self.y / PAGE[1],
                line,
                fontsize=size,
                va="top",
                fontweight="bold" if bold else "normal",
            )
            self.y -= step

    def image(self, png: Path, width: float) -> None:
        img = plt.imread(str(png))
        height = width * img.shape[0] / img.shape[1]
        fig = self.need(height)
        ax = fig.add_axes((MARGIN / PAGE[0], (self.y - height) / PAGE[1], width / PAGE[0], height / PAGE[1]))
        ax.imshow(img, interpolation="none")  # the PNG as it is, not resampled to the page's dpi
        ax.set_axis_off()
        self.y -= height

    def table(self, df: pd.DataFrame) -> None:
        cols = [str(c) for c in df.columns]
        # long cells (notes) wrap; the rest keep one line
        rows = [[textwrap.fill(plain(str(v)), 36) for v in r] for r in df.astype(str).itertuples(index=False)]
        widths = [
            max([len(plain(c))] + [max(len(x) for x in r[j].split("\n")) for r in rows]) + 2 for j, c in enumerate(cols)
        ]
        total = sum(widths)
        # a table wider than the page at 7 pt gets a smaller font rather than overlapping cells
        self.table_pt = min(TABLE_PT, max(5.0, self.width * 72 / (total * _ADVANCE)))
        table_w = min(self.width, total * _ADVANCE * self.table_pt / 72)
        line = 1.45 * self.table_pt / 72
        heights = [max(r[j].count("\n") + 1 for j in range(len(cols))) * line + 0.04 for r in rows]
        start = 0
        while start < len(rows):
            avail = self.y - MARGIN - (line + 0.04)
            end = start
            while end < len(rows) and sum(heights[start : end + 1]) <= avail:
                end += 1
            if end == start:  # not even one row fits here: the next page
                self.new_page()
                continue
            self._table_part(cols, rows[start:end], heights[start:end], widths, total, table_w, line + 0.04)
            start = end

    def _table_part(
        self,
        cols: list[str],
        rows: list[list[str]],
        heights: list[float],
        widths: list[int],
        total: int,
        table_w: float,
        head_h: float,
    ) -> None:
        height = head_h + sum(heights)
        fig = self.need(height)
        ax = fig.add_axes((MARGIN / PAGE[0], (self.y - height) / PAGE[1], table_w / PAGE[0], height / PAGE[1]))
        ax.set_axis_off()
        tbl = ax.table(
            cellText=rows,
            colLabels=[plain(c) for c in cols],
            colWidths=[w / total for w in widths],
            cellLoc="right",
            colLoc="right",
            loc="upper left",
        )
        tbl.auto_set_font_size(False)
        tbl.set_fontsize(self.table_pt)
        for (r, c), cell in tbl.get_celld().items():
            cell.set_height((head_h if r == 0 else heights[r - 1]) / height)
            cell.visible_edges = "B" if r == 0 else ""
            if c == 0:
                cell.get_text().set_horizontalalignment("left")
            if r == 0:
                cell.get_text().set_fontweight("bold")
        self.y -= height


def write_pdf(blocks: list[Block], path: Path, title: str) -> Path:
    """Write ``blocks`` as one PDF at ``path`` (its parent made if missing); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(FONT), PdfPages(path, metadata={"Title": title, "Creator": "batchscale"}) as pdf:
        pages = _Pages(pdf)
        for b in blocks:
            if isinstance(b, Heading):
                pages.space(0.18 if b.level > 1 else 0.0)
                pages.lines(b.text, HEADING_PT.get(b.level, 10.0), bold=True)
                pages.space(0.06)
            elif isinstance(b, Paragraph):
                pages.lines(b.text, TEXT_PT)
                pages.space(0.08)
            elif isinstance(b, Bullets):
                for item in b.items:
                    pages.lines(item, TEXT_PT, indent=0.18, first="•")
                pages.space(0.08)
            elif isinstance(b, Figure):
                f = b.figure
                pages.image(f.png, min(f.width_in or 3.3, pages.width))
                pages.space(0.04)
                pages.lines(f"**{f.title}.** {f.caption}", TEXT_PT - 1)
                pages.space(0.14)
            elif isinstance(b, Table):
                pages.lines(b.table.title, TEXT_PT, bold=True)
                pages.space(0.04)
                pages.table(b.table.text)
                pages.space(0.14)
        if pages.fig is None:
            pages.new_page()
        pages.close_page()
    return path
