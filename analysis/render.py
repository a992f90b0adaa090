"""A tiny document model and its two renderings: Markdown and a self-contained HTML page.

Blocks are headings, paragraphs, bullet lists, figures and tables. Inline text may use
`code` and **bold**, which both renderers understand. The HTML embeds every figure as a
base64 PNG so the page can be mailed or archived alone.

    from pathlib import Path
    from analysis.render import Bullets, Heading, Paragraph, to_html, to_markdown
    blocks = [Heading("Report", 1), Paragraph("B_crit = **700**"), Bullets(("`lr_on_edge` at B = 16",))]
    to_markdown(blocks, Path("/tmp/demo/report"))   # figure/table links are relative to this dir
    to_html(blocks, "Report")
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .figure_style import FigureFile
from .tables import TableFile


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Figure:
    figure: FigureFile


@dataclass(frozen=True)
class Table:
    table: TableFile


Block = Heading | Paragraph | Bullets | Figure | Table


def _md_table(df: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def to_markdown(blocks: list[Block], report_dir: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Figure):
            f = b.figure
            png = f.png.relative_to(report_dir).as_posix()
            pdf = f.pdf.relative_to(report_dir).as_posix()
            out.append(f"![{f.title}]({png})\n\n*{f.title}.* {f.caption} ([PDF]({pdf}))")
        elif isinstance(b, Table):
            t = b.table
            csv = t.csv.relative_to(report_dir).as_posix()
            tex = t.tex.relative_to(report_dir).as_posix()
            out.append(f"**{t.title}** ([CSV]({csv}), [LaTeX]({tex}))\n\n{_md_table(t.text)}")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
figure{margin:1.2rem 0}figure img{max-width:100%;height:auto}figcaption{font-size:.9rem;color:#444}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem}
th,td{padding:.2rem .55rem;text-align:right}th{border-bottom:1px solid #222}
thead tr{border-top:2px solid #222}tbody tr:last-child{border-bottom:2px solid #222}
td:first-child,th:first-child{text-align:left}code{background:#f3f3f3;padding:0 .2rem}
"""


def to_html(blocks: list[Block], title: str) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Figure):
            f = b.figure
            data = base64.b64encode(f.png.read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption><strong>{html.escape(f.title)}.</strong> {_inline(f.caption)}"
                "</figcaption></figure>"
            )
        elif isinstance(b, Table):
            t = b.table
            out.append(f"<p><strong>{html.escape(t.title)}</strong></p>")
            out.append(t.text.to_html(index=False, border=0, escape=True))
    out.append("</body></html>")
    return "\n".join(out) + "\n"
