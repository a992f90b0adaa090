"""The local back-end: the sweep runs in the foreground on this machine's Ray.

    from cluster.local import run_local
    run_local(study, Path("runs/demo"))
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator import outcome
from orchestrator.progress import LiveDisplay
from orchestrator.study import Study
from orchestrator.sweep import run_sweep


def run_local(study: Study, run_dir: Path, resume: bool = False) -> Path:
    """Run the sweep with a live display, print the summary, write the report; returns it."""
    print(f"RUN_DIR {run_dir}", file=sys.stderr)
    run_sweep(study, run_dir, resume=resume, display=LiveDisplay(sys.stderr))
    print(outcome.summary_text(run_dir))
    report = outcome.write_report(run_dir)
    print(f"report: {report / 'report.md'}")
    return report
