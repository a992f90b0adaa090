"""The report as a person sees it: report.html rendered by headless Chromium (every figure
loads, the sections of report.md, its tables as HTML tables, a screenshot in report/), the
figures readable at a paper column's width (read from the saved PDFs), one colour-blind-safe
colour per batch size across figures, and report.pdf (read back with pypdf). One smoke run
(tests/shared_smoke.py)."""

from __future__ import annotations

import base64
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pypdf import PdfReader
from shared_smoke import smoke_run

from analysis import browser

COLUMN_IN = 3.3
MIN_PT = 7.0
SCRIPT = 0.7  # mathtext sets sub- and superscripts at 0.7 of their base size

needs_chromium = pytest.mark.skipif(
    browser.chromium() is None, reason="chromium is not installed (make test installs it: apt-get install chromium)"
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_run(tmp_path_factory) / "report"


def _plain(md: str) -> str:
    return re.sub(r"\*\*([^*]+)\*\*", r"\1", re.sub(r"`([^`]+)`", r"\1", md)).strip()


def _md(report: Path) -> dict[str, Any]:
    """What report.md holds: its headings, figures (titles) and tables (header cells, rows)."""
    lines = (report / "report.md").read_text().splitlines()
    headings = [(len(m.group(1)), _plain(m.group(2))) for ln in lines if (m := re.match(r"^(#+) (.*)$", ln))]
    figures = [m.group(1) for ln in lines if (m := re.match(r"^!\[([^]]*)\]\((figures/[^)]+\.png)\)", ln))]
    tables = []
    for i, ln in enumerate(lines):
        if ln.startswith("| ---"):
            header = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", lines[i - 1])[1:-1]]
            rows = 0
            while i + 1 + rows < len(lines) and lines[i + 1 + rows].startswith("|"):
                rows += 1
            tables.append((header, rows))
    return {"headings": headings, "figures": figures, "tables": tables}


class _Dom(HTMLParser):
    """Headings, images and tables of the DOM Chromium built."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[tuple[int, str]] = []
        self.images: list[str] = []
        self.tables: list[tuple[list[str], int]] = []
        self._text: list[str] | None = None
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if re.fullmatch(r"h[1-6]|th", tag):
            self._text, self._tag = [], tag
        elif tag == "img":
            self.images.append(dict(attrs).get("alt") or "")
        elif tag == "table":
            self.tables.append(([], 0))
        elif tag == "tr" and self.tables and self._in_body:
            header, rows = self.tables[-1]
            self.tables[-1] = (header, rows + 1)
        if tag in ("thead", "tbody"):
            self._in_body = tag == "tbody"

    _in_body = False

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._text is not None and tag == self._tag:
            text = "".join(self._text).strip()
            if tag == "th":
                self.tables[-1][0].append(text)
            else:
                self.headings.append((int(tag[1]), text))
            self._text = None


@needs_chromium
def test_chromium_renders_every_figure_section_and_table(report: Path) -> None:
    md = _md(report)
    page = browser.rendered(report / "report.html")
    assert len(page.images) == len(md["figures"]) >= 5
    assert page.broken() == []
    for img, title in zip(page.images, md["figures"]):
        png = Image.open(report / "figures" / f"{_figure_stem(report, title)}.png")
        assert (img["alt"], img["width"], img["height"]) == (title, *png.size)  # decoded at full size
    dom = _Dom()
    dom.feed(page.dom)
    assert dom.headings == md["headings"]  # every section of report.md, in order
    assert [h for h in dom.headings if h[0] == 2][:3] == [(2, "Summary"), (2, "Figures"), (2, "Tables")]
    assert dom.images == md["figures"]
    assert dom.tables == md["tables"] and len(dom.tables) >= 2  # HTML tables: the same headers and rows


def _figure_stem(report: Path, title: str) -> str:
    text = (report / "report.md").read_text()
    m = re.search(rf"!\[{re.escape(title)}\]\(figures/([^)]+)\.png\)", text)
    assert m, title
    return m.group(1)


@needs_chromium
def test_the_probe_sees_a_broken_image(report: Path, tmp_path: Path) -> None:
    good = base64.b64encode((report / "figures" / "heatmap.png").read_bytes()).decode()
    page = tmp_path / "page.html"
    page.write_text(
        f'<!DOCTYPE html><html><body><img alt="good" src="data:image/png;base64,{good}">'
        '<img alt="bad" src="data:image/png;base64,iVBORw0KGgoAAAAbroken"></body></html>'
    )
    assert browser.rendered(page).broken() == ["bad"]


@needs_chromium
def test_screenshot_of_the_whole_report(report: Path) -> None:
    assert browser.main([str(report)]) == 0
    shot = Image.open(report / "screenshot.png").convert("RGB")
    width, height = shot.size
    assert width == browser.WIDTH and height > 2000  # the whole page, not one screen
    top = shot.crop((0, 0, width, 600))
    assert len(top.getcolors(maxcolors=1 << 20) or []) > 50  # text and a figure, not a blank page


def _facts(report: Path) -> dict[str, Any]:
    return json.loads((report / "figures" / "figures.json").read_text())


def _pdf_text_sizes(pdf: Path) -> list[tuple[str, float]]:
    """Every text run of a PDF with its size in points, as the page draws it."""
    runs: list[tuple[str, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], font: Any, size: float) -> None:
        if text.strip():
            runs.append((text, size * math.hypot(tm[0], tm[1]) * math.hypot(cm[0], cm[1])))

    PdfReader(pdf).pages[0].extract_text(visitor_text=visit)
    return runs


def test_figures_readable_at_a_column_width(report: Path) -> None:
    facts = _facts(report)
    drawn = {f.name.removesuffix(".pdf") for f in (report / "figures").glob("*.pdf")}
    assert set(facts["figures"]) == drawn and len(drawn) >= 5
    for name, f in facts["figures"].items():
        pdf = report / "figures" / f["pdf"]
        box = PdfReader(pdf).pages[0].mediabox
        width_in = float(box.width) / 72
        assert width_in == pytest.approx(f["width_in"], abs=0.01) and width_in <= COLUMN_IN + 1e-6, name
        scale = COLUMN_IN / width_in  # the figure set one column wide
        assert f["axis_label_pt"] * scale >= 8 - 1e-6, name
        assert f["min_font_pt"] * scale >= MIN_PT - 1e-6, name
        # the PDF draws its text at those sizes only (and mathtext's scripts at 0.7 of them)
        allowed = [s * k for s in f["font_sizes"] for k in (1, SCRIPT, SCRIPT**2)]
        runs = _pdf_text_sizes(pdf)
        assert runs, name
        for text, size in runs:
            assert any(abs(size - a) < 0.05 for a in allowed), (name, text, size)
            if not any(abs(size - s * k) < 0.05 for s in f["font_sizes"] for k in (SCRIPT, SCRIPT**2)):
                assert size * scale >= MIN_PT - 1e-6, (name, text, size)


def _lightness(hex_colour: str) -> float:
    """CIE L* of an sRGB colour."""
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return 116 * y ** (1 / 3) - 16 if y > 216 / 24389 else 24389 / 27 * y


def test_one_colour_blind_safe_colour_per_batch_size(report: Path) -> None:
    facts = _facts(report)
    mapping = facts["batch_colours"]
    fits = json.loads((report / "fits.json").read_text())
    assert sorted(map(int, mapping)) == sorted(p["batch_size"] for p in fits["per_batch"])
    per_b = [f for f in facts["figures"].values() if f["batch_colours"]]
    assert len(per_b) >= 2  # learning curves and noise scale draw one line per batch size
    for f in per_b:
        assert f["batch_colours"] == {b: mapping[b] for b in f["batch_colours"]}, f["pdf"]
    # viridis: lightness rises with batch size, so the order reads in grey and to every eye
    lightness = [_lightness(mapping[b]) for b in sorted(mapping, key=int)]
    assert all(b - a >= 15 for a, b in zip(lightness, lightness[1:])), lightness


def test_report_pdf_holds_the_report(report: Path) -> None:
    md = _md(report)
    pdf = PdfReader(report / "report.pdf")
    assert pdf.metadata is not None and pdf.metadata.title and "nqm" in pdf.metadata.title
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in pdf.pages))
    for _level, heading in md["headings"]:
        assert heading in text, heading
    for header, _rows in md["tables"]:
        for cell in header:
            assert cell in text, cell
    # every figure, once, at its full resolution (matplotlib lists all images in every page's resources)
    images = {img.name: img.image.size for p in pdf.pages for img in p.images}
    pngs = [Image.open(report / "figures" / f"{_figure_stem(report, t)}.png").size for t in md["figures"]]
    assert sorted(images.values()) == sorted(pngs)
