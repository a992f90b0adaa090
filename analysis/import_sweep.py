"""Turn a sweep someone else ran into a run directory that ``python -m analysis.report`` reads.

    python -m analysis.import_sweep SOURCE --out RUN_DIR [--kind {auto,long,final,tensorboard}]
        [--map COLUMN=SOURCE_COLUMN ...] [--mapping FILE.toml] [--name NAME]
        [--target-metric M --target-mode {min,max} --target-value V] [--run-pattern REGEX]
    batchscale import ...                          # the same

SOURCE is one of:
- ``long``: a CSV or Parquet file with one row per evaluation of a trial: batch_size, lr,
  step, optionally seed, trial_id and status, and metric columns (val_loss, val_accuracy, ...);
- ``final``: a CSV or Parquet file with one row per trial, (batch_size, lr[, seed]) and its
  final values, at the step given by a ``step`` (or ``steps``) column: one evaluation per
  trial, at its last step, so a trial's steps to target is its length if it reached the target;
- ``tensorboard``: a directory of TensorBoard event files, one run per sub-directory, with
  batch size and LR taken from the run's name (``--run-pattern``, named groups batch_size,
  lr and optionally seed) or from its hparams. Needs the ``tensorboard`` package.
``auto`` (the default) takes a directory for ``tensorboard`` and a file for ``long``.

Columns named as in the contract's curves (CONTRACTS.md) are taken as they are; ``--map``
(or the mapping file's ``[columns]`` table) names the source column of any other, e.g.
``--map step=iteration --map val_loss=eval/loss``. Unmapped source columns come along as
extra columns. The mapping file may also hold ``name``, ``kind``, ``run_pattern`` and a
``[target]`` table (metric, mode, value); flags win over it.

RUN_DIR gets ``study.toml`` (name and target), ``curves/batch_size=<B>/part-0.parquet``
with the contract's columns where known (examples_seen = step * batch_size when absent)
and ``trials.parquet`` only when the source has a status column; without it every trial
counts as completed. Bad input (a missing column, a value that is not a number, a repeated
(trial, step)) exits with status 2 and one line naming the column and the line or row,
and leaves no RUN_DIR; a RUN_DIR that exists and is not empty is refused the same way.

    python -m analysis.import_sweep sweep.csv --out runs/imported --map step=iteration \\
        --target-metric val_loss --target-mode min --target-value 0.35
    python -m analysis.report runs/imported
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import pydantic

from trainables.contract import Target, UsageError, read_toml

from .import_tables import KINDS, read_table, to_run_tables, write_run

MAPPING_KEYS = {"name", "kind", "run_pattern", "columns", "target"}


def _parse_map(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        dest, sep, src = item.partition("=")
        if not sep or not dest.strip() or not src.strip():
            raise UsageError(f"--map expects COLUMN=SOURCE_COLUMN, got {item!r}")
        out[dest.strip()] = src.strip()
    return out


def _mapping_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.is_file():
        raise UsageError(f"--mapping {path}: no such file")
    data = read_toml(path)
    unknown = sorted(set(data) - MAPPING_KEYS)
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(MAPPING_KEYS))})")
    for key in ("columns", "target"):
        if key in data and not isinstance(data[key], dict):
            raise UsageError(f"{path}: {key} must be a table")
    for dest, src in data.get("columns", {}).items():
        if not isinstance(src, str):
            raise UsageError(f"{path}: columns.{dest} must be a string (the source column's name)")
    return data


def _target(args: argparse.Namespace, mapping: dict[str, Any]) -> Target:
    t = dict(mapping.get("target", {}))
    for key, flag in (("metric", args.target_metric), ("mode", args.target_mode), ("value", args.target_value)):
        if flag is not None:
            t[key] = flag
    for key in ("metric", "mode", "value"):
        if key not in t:
            raise UsageError(f"--target-{key} is required (or {key} in the mapping file's [target])")
    try:
        return Target.model_validate(t)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        raise UsageError(f"target {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _study_toml(name: str, target: Target, source: Path, kind: str) -> str:
    # JSON strings are valid TOML basic strings.
    return (
        f"# imported by analysis.import_sweep from {json.dumps(str(source))[1:-1]} ({kind})\n"
        f"name = {json.dumps(name)}\n\n[target]\nmetric = {json.dumps(target.metric)}\n"
        f"mode = {json.dumps(target.mode)}\nvalue = {target.value!r}\n"
    )


def _fresh(out: Path) -> None:
    """Refuse an existing RUN_DIR unless it is an empty directory."""
    if out.is_dir() and not any(out.iterdir()):
        return
    if out.exists():
        raise UsageError(f"--out {out} exists and is not empty; choose a new RUN_DIR")


def import_sweep(
    source: Path,
    out: Path,
    kind: str = "auto",
    columns: dict[str, str] | None = None,
    target: Target | None = None,
    name: str | None = None,
    run_pattern: str | None = None,
) -> Path:
    """Import ``source`` into the new run directory ``out``; raises UsageError on bad input."""
    if target is None:
        raise UsageError("--target-metric, --target-mode and --target-value are required")
    if not source.exists():
        raise UsageError(f"{source}: no such file or directory")
    if kind == "auto":
        kind = "tensorboard" if source.is_dir() else "long"
    _fresh(out)
    if kind == "tensorboard":
        from .import_tensorboard import read_tensorboard

        frame = read_tensorboard(source, columns or {}, run_pattern)
    else:
        frame = read_table(source, columns or {}, final=kind == "final")
    name = name or source.stem
    curves, trials = to_run_tables(frame, name, target, final=kind == "final")
    stage = out.parent / f".{out.name}.import-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir(parents=True)
        (stage / "study.toml").write_text(_study_toml(name, target, source, kind), encoding="utf-8")
        write_run(stage, curves, trials)
        if out.is_dir():
            out.rmdir()
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line UsageErrors (exit 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def main(argv: list[str] | None = None, prog: str = "python -m analysis.import_sweep") -> int:
    parser = _Parser(prog=prog, description="Import an existing sweep as a run directory.")
    parser.add_argument("source", type=Path, help="CSV/Parquet file or TensorBoard log directory")
    parser.add_argument("--out", type=Path, required=True, help="the new run directory")
    parser.add_argument(
        "--kind",
        choices=("auto", *KINDS),
        default=None,
        help="long (one row per evaluation), final (one row per trial), tensorboard",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=SOURCE_COLUMN",
        help="take contract column COLUMN from SOURCE_COLUMN (repeatable)",
    )
    parser.add_argument("--mapping", type=Path, default=None, help="TOML file: [columns], [target], name, ...")
    parser.add_argument("--name", default=None, help="study name (default: the source's file name)")
    parser.add_argument("--target-metric", default=None)
    parser.add_argument("--target-mode", default=None, choices=("min", "max"))
    parser.add_argument("--target-value", type=float, default=None)
    parser.add_argument(
        "--run-pattern",
        default=None,
        help=r"TensorBoard: regex on run names, e.g. 'bs(?P<batch_size>\d+)_lr(?P<lr>[0-9.e-]+)'",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        mapping = _mapping_file(args.mapping)
        columns = {**mapping.get("columns", {}), **_parse_map(args.map)}
        kind = args.kind or mapping.get("kind", "auto")
        if kind not in ("auto", *KINDS):
            raise UsageError(f"kind {kind!r} is not one of auto, {', '.join(KINDS)}")
        out = import_sweep(
            args.source,
            args.out,
            kind=kind,
            columns=columns,
            target=_target(args, mapping),
            name=args.name or mapping.get("name"),
            run_pattern=args.run_pattern or mapping.get("run_pattern"),
        )
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
