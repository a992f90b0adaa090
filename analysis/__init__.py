"""Analysis of batch-size x learning-rate runs: steps to target, critical batch size,
LR scaling rules, and a paper-ready report.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")    # a synthetic RUN_DIR; any real one works
    from analysis import load_run, per_batch_summary, write_report
    run = load_run("/tmp/demo")         # curves, trials, study, run_dir
    print(per_batch_summary(run))       # best LR and steps to target per batch size
    write_report("/tmp/demo")           # -> /tmp/demo/report/

Plotting (matplotlib, seaborn) is imported only when a report is written, so loading runs
and summaries stays quick for the launcher and notebooks.
"""

from __future__ import annotations

from pathlib import Path

from .best_lr import per_batch_summary
from .bootstrap import DEFAULT_N_BOOT
from .critical import fit_critical_batch
from .load import Run, RunError, Target, load_run

__all__ = ["Run", "RunError", "Target", "load_run", "per_batch_summary", "fit_critical_batch", "write_report"]


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, n_boot: int = DEFAULT_N_BOOT) -> Path:
    """Write RUN_DIR/report (or ``out_dir``) and return its path; see ``analysis.report``."""
    from .report import write_report as _write

    return _write(run_dir, out_dir, n_boot=n_boot)
