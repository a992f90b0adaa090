"""Write RUN_DIR/report/: report.md, report.html, report.pdf, figures/, tables/ and fits.json.

From the shell, ``python -m analysis.report RUN_DIR [--out DIR] [--n-boot N]``: exit status
0 on success (the report directory is printed), 2 when RUN_DIR lacks study.toml or curves/
or they cannot be read (one line naming the problem), 1 otherwise.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import write_report
    write_report("/tmp/demo")              # -> Path("/tmp/demo/report")
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainables.contract import UsageError

from .bootstrap import DEFAULT_N_BOOT
from .document import build_document
from .environment import environment_stamp
from .figures import write_figures
from .fits import analyse
from .load import load_run
from .render import to_html, to_markdown
from .report_pdf import write_pdf
from .results import fits_json
from .tables import write_tables


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, n_boot: int = DEFAULT_N_BOOT) -> Path:
    """Analyse ``run_dir`` and write the report; returns the report directory.

    Raises ``RunError`` (a ``UsageError``) when the run directory cannot be read.
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    a = analyse(run, n_boot=n_boot)
    (out / "fits.json").write_text(json.dumps(fits_json(a), indent=2, allow_nan=False) + "\n")
    figures = write_figures(a, out / "figures")
    tables = write_tables(a, out / "tables")
    blocks = build_document(a, figures, tables, environment_stamp())
    (out / "report.md").write_text(to_markdown(blocks, out), encoding="utf-8")
    (out / "report.html").write_text(to_html(blocks, f"Batch-size study: {run.name}"), encoding="utf-8")
    write_pdf(blocks, out / "report.pdf", f"Batch-size study: {run.name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report", description="Write the batch-size report of a run directory."
    )
    parser.add_argument("run_dir", type=Path, help="run directory (study.toml and curves/)")
    parser.add_argument("--out", type=Path, default=None, help="report directory (default RUN_DIR/report)")
    parser.add_argument(
        "--n-boot", type=int, default=DEFAULT_N_BOOT, help=f"bootstrap resamples (default {DEFAULT_N_BOOT})"
    )
    args = parser.parse_args(argv)
    if args.n_boot < 0:
        print("error: --n-boot must be >= 0", file=sys.stderr)
        return 2
    try:
        out = write_report(args.run_dir, args.out, n_boot=args.n_boot)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
