"""report.html as a person sees it: rendered by headless Chromium (Debian's ``chromium``).

``rendered`` loads the page, waits for it (every image decoded), and returns the DOM Chromium
built with a probe of each ``<img>`` (loaded? its decoded size) and of the page's height;
``screenshot`` writes a full-page PNG of the report.

    python -m analysis.browser RUN_DIR/report        # writes RUN_DIR/report/screenshot.png

Exit status 0 (the screenshot is printed), 2 when the report or Chromium is missing or a
figure does not load (one line naming it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.contract import UsageError

EXECUTABLES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
)
"""A private, offline Chromium: no sandbox (root), no GPU, no network of its own, no updates."""
PROBE_ID = "batchscale-probe"
PROBE = f"""<script>
window.addEventListener("load", () => {{
  const images = Array.from(document.images, i => ({{alt: i.alt, complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight}}));
  const probe = document.createElement("pre");
  probe.id = "{PROBE_ID}";
  probe.textContent = JSON.stringify({{images: images, height: document.documentElement.scrollHeight}});
  document.body.appendChild(probe);
}});
</script>"""
WIDTH = 1100
MAX_HEIGHT = 16000


def chromium() -> str | None:
    """The Chromium on PATH, or None."""
    for name in EXECUTABLES:
        if path := shutil.which(name):
            return path
    return None


def _chromium(args: list[str], url: str, timeout: float) -> subprocess.CompletedProcess[str]:
    exe = chromium()
    if exe is None:
        raise UsageError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        env = {**os.environ, "HOME": profile}  # nothing of the user's profile, nothing left behind
        r = subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"chromium exited {r.returncode}: {tail}")
    return r


@dataclass(frozen=True)
class Rendered:
    """What Chromium made of a page."""

    dom: str
    """The document after load (``--dump-dom``), the probe's ``<pre>`` at its end."""
    images: list[dict[str, Any]]
    """Each ``<img>``: alt, complete, width and height as decoded (0 for a broken image)."""
    height: int
    """The page's full height in CSS pixels."""

    def broken(self) -> list[str]:
        """The alt text of every image that did not load."""
        return [str(i["alt"]) for i in self.images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]


def rendered(html: Path, timeout: float = 60) -> Rendered:
    """Load ``html`` in Chromium (a copy with the probe added) and return what it rendered."""
    html = Path(html)
    text = html.read_text(encoding="utf-8")
    cut = text.rfind("</body>")
    probed = text[:cut] + PROBE + text[cut:] if cut >= 0 else text + PROBE
    with tempfile.TemporaryDirectory(prefix="report-probe-") as tmp:
        page = Path(tmp) / html.name
        page.write_text(probed, encoding="utf-8")
        r = _chromium(["--dump-dom", "--virtual-time-budget=10000"], page.as_uri(), timeout)
    dom = r.stdout
    start = dom.find(f'<pre id="{PROBE_ID}">')
    if start < 0:
        raise RuntimeError(f"{html}: the page never finished loading in Chromium (no probe in its DOM)")
    body = dom[dom.index(">", start) + 1 : dom.index("</pre>", start)]
    import html as htmllib

    probe = json.loads(htmllib.unescape(body))
    return Rendered(dom, list(probe["images"]), int(probe["height"]))


def screenshot(html: Path, png: Path, width: int = WIDTH, height: int | None = None, timeout: float = 60) -> Path:
    """A screenshot of the whole page (up to ``MAX_HEIGHT`` px tall) at ``width`` CSS px."""
    html, png = Path(html), Path(png)
    if height is None:
        height = rendered(html, timeout).height
    height = max(200, min(int(height), MAX_HEIGHT))
    png.parent.mkdir(parents=True, exist_ok=True)
    _chromium(
        [f"--screenshot={png.resolve()}", f"--window-size={width},{height}", "--virtual-time-budget=10000"],
        html.resolve().as_uri(),
        timeout,
    )
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {png}")
    return png


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m analysis.browser REPORT_DIR   (writes REPORT_DIR/screenshot.png)", file=sys.stderr)
        return 2
    report = Path(args[0])
    html = report / "report.html" if report.is_dir() else report
    try:
        if not html.is_file():
            raise UsageError(f"{html} is missing (python -m analysis.report RUN_DIR writes it)")
        page = rendered(html)
        if broken := page.broken():
            raise UsageError(f"{html}: {len(broken)} figure(s) do not load in Chromium: {', '.join(broken)}")
        out = screenshot(html, html.parent / "screenshot.png", height=page.height)
    except (UsageError, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
