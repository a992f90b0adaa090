"""One flat file of a run's curves, for tools that read a single CSV or Parquet file.

Every row of RUN_DIR/curves (``batch_size`` a column, int64, as in the hive path), sorted by
batch size, LR, seed, trial and step, with the trial's ``status`` and ``optimizer`` from
trials.parquet where the run has one.

    python -m analysis.export RUN_DIR --format csv                 # RUN_DIR/curves_flat.csv
    python -m analysis.export RUN_DIR --format parquet --out x.parquet

Exit status 0 (the file written is printed), 2 for bad input (one line naming it).

    from analysis.export import flat_curves
    flat_curves("RUN_DIR").to_pandas()
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trainables.contract import RunError, UsageError, read_curves, read_trials

FORMATS = ("csv", "parquet")
TRIAL_COLUMNS = ("status", "optimizer")
"""Columns of trials.parquet joined onto every curve row."""


def flat_curves(run_dir: str | Path) -> pa.Table:
    """RUN_DIR's curves as one table (``RunError`` when RUN_DIR or its curves cannot be read)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory")
    curves = read_curves(run_dir / "curves")
    trials_path = run_dir / "trials.parquet"
    if trials_path.is_file():
        trials = read_trials(trials_path)
        keep = [c for c in TRIAL_COLUMNS if c in trials.column_names and c not in curves.column_names]
        if keep:
            curves = curves.join(trials.select(["trial_id", *keep]), "trial_id", join_type="left outer")
    order = [(c, "ascending") for c in ("batch_size", "lr", "seed", "trial_id", "step") if c in curves.column_names]
    return curves.sort_by(order)


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Write the flat curves of ``run_dir`` as ``fmt`` to ``out`` (default RUN_DIR/curves_flat.FMT)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    table = flat_curves(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / f"curves_flat.{fmt}"
    if path.is_dir():
        raise UsageError(f"--out: {path} is a directory; name the file")
    if not path.parent.is_dir():
        raise UsageError(f"--out: {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if fmt == "csv":
            pacsv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp)
        tmp.replace(path)
    except OSError as e:
        raise UsageError(f"--out: cannot write {path}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, exit 2
        raise UsageError(message)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m analysis.export", description="Write a run's curves as one flat file.")
    parser.add_argument("run_dir", type=Path, help="run directory (curves/, and trials.parquet if present)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="csv or parquet")
    parser.add_argument("--out", type=Path, default=None, help="file to write (default RUN_DIR/curves_flat.FORMAT)")
    try:
        args = parser.parse_args(argv)
        path = export(args.run_dir, args.format, args.out)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
