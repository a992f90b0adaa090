"""What every finished sweep does, local or in a Slurm job: the summary and the report."""

from __future__ import annotations

from pathlib import Path


def summary_text(run_dir: Path) -> str:
    """Per batch size: best LR, steps to target, examples to target (from ``analysis``)."""
    import analysis

    table = analysis.per_batch_summary(analysis.load_run(run_dir))
    cols = [c for c in ("batch_size", "best_lr", "lr_on_edge", "steps_to_target", "examples_to_target",
                        "trials", "reached") if c in table.columns]
    return table[cols].to_string(index=False, na_rep="-")


def write_report(run_dir: Path) -> Path:
    """Write ``RUN_DIR/report`` and return its path."""
    import analysis

    return Path(analysis.write_report(run_dir))
