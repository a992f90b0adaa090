"""Reading and checking a tabular sweep for ``import_sweep``, and writing it as a run directory.

``read_table`` reads a CSV (every value as text) or Parquet file and renames its columns
to the contract's; ``to_run_tables`` checks every value (numbers where numbers belong,
one batch size and LR per trial, (trial, step) unique) and builds the curves and, when the
source has a status column, the trials; ``write_run`` writes them with the contract's
writer. Each problem is a ``UsageError`` whose one line names the source, the line (CSV;
the header is line 1) or row (Parquet, from 1), and the column.

    from pathlib import Path
    from analysis.import_tables import read_table, to_run_tables
    from trainables.contract import Target
    frame = read_table(Path("sweep.csv"), {"step": "iteration"}, final=False)
    curves, trials = to_run_tables(frame, "imported", Target(metric="val_loss", mode="min", value=0.4))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from trainables.contract import CURVES_SCHEMA, TRIALS_SCHEMA, Target, UsageError, write_atomic

KINDS = ("long", "final", "tensorboard")
REQUIRED = ("batch_size", "lr", "step")
NULLS = {"", "nan", "NaN", "NAN", "null", "NULL", "None", "NA", "N/A"}
STATUSES = {"completed", "early_stopped", "diverged", "failed"}
LINE = "_line"
"""The column of a frame that labels each row for messages ("line 5", "row 3", ...)."""
SOURCE = "_source"
"""``frame.attrs`` key: the source's name for messages."""
ORIGIN = "_origin"
"""``frame.attrs`` key: contract column -> the source column it was mapped from."""

_INT = {f.name for f in CURVES_SCHEMA if pa.types.is_integer(f.type)}
_STRING = {f.name for f in CURVES_SCHEMA if pa.types.is_string(f.type)}


def rename(frame: pd.DataFrame, columns: dict[str, str], source: str, final: bool) -> pd.DataFrame:
    """The source's columns under the contract's names; extras keep theirs."""
    if final and "step" not in columns and "step" not in frame.columns and "steps" in frame.columns:
        columns = {**columns, "step": "steps"}
    for dest, src in columns.items():
        if src not in frame.columns:
            raise UsageError(
                f"{source}: column {src!r} (for --map {dest}={src}) is missing; "
                f"its columns: {', '.join(map(str, frame.columns))}"
            )
    taken = set(columns.values())
    keep = {c: c for c in frame.columns if c not in taken and c not in columns}
    out = pd.DataFrame({**{d: frame[s] for d, s in columns.items()}, **{c: frame[c] for c in keep}})
    out[LINE] = frame[LINE].to_numpy()
    out.attrs[SOURCE] = source
    out.attrs[ORIGIN] = {d: s for d, s in columns.items() if d != s}
    return out


def read_table(path: Path, columns: dict[str, str], final: bool) -> pd.DataFrame:
    """A CSV or Parquet file as a frame with the contract's column names and row labels."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            frame[LINE] = [f"row {i + 1}" for i in range(len(frame))]
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
            frame[LINE] = [f"line {i + 2}" for i in range(len(frame))]
    except (OSError, ValueError, pa.ArrowException) as e:
        raise UsageError(f"{path}: cannot read: {str(e).splitlines()[0]}") from None
    if frame.empty:
        raise UsageError(f"{path}: no rows")
    return rename(frame, columns, str(path), final)


def _where(frame: pd.DataFrame, col: str, i: int) -> str:
    origin = frame.attrs.get(ORIGIN, {}).get(col)
    named = f"column {col!r}" + (f" (from {origin!r})" if origin else "")
    return f"{frame.attrs.get(SOURCE, 'source')}: {frame[LINE].iat[i]}: {named}"


def numbers(
    frame: pd.DataFrame, col: str, integer: bool = False, required: bool = False, strict: bool = True
) -> np.ndarray | None:
    """``frame[col]`` as floats (NaN = empty); a bad value raises naming its row, or, when
    not ``strict``, makes the result None (the column is not numeric)."""
    s = frame[col]
    if pd.api.types.is_bool_dtype(s) or not (pd.api.types.is_numeric_dtype(s)):
        text = s.astype(object).where(s.notna(), "").astype(str).str.strip()
        null = text.isin(NULLS).to_numpy()
        values = pd.to_numeric(text.where(~null), errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(np.isnan(values) & ~null)
        if bad.size:
            if not strict:
                return None
            raise UsageError(f"{_where(frame, col, int(bad[0]))}: {text.iat[int(bad[0])]!r} is not a number")
    else:
        values = s.to_numpy(dtype=float, na_value=np.nan)
        null = np.isnan(values)
    if required and null.any():
        raise UsageError(f"{_where(frame, col, int(np.flatnonzero(null)[0]))}: is empty")
    if integer:
        frac = np.flatnonzero(~null & (values != np.round(values)))
        if frac.size:
            raise UsageError(f"{_where(frame, col, int(frac[0]))}: {values[frac[0]]!r} is not an integer")
    return values


def _check_positive(frame: pd.DataFrame, col: str, values: np.ndarray, allow_zero: bool = False) -> None:
    bad = np.flatnonzero(~(values >= 0) if allow_zero else ~(values > 0))
    if bad.size:
        sign = "negative" if allow_zero else "not positive"
        raise UsageError(f"{_where(frame, col, int(bad[0]))}: {values[bad[0]]!r} is {sign}")


def _trial_ids(frame: pd.DataFrame, b: np.ndarray, lr: np.ndarray, seed: np.ndarray | None) -> np.ndarray:
    if "trial_id" in frame.columns:
        ids = frame["trial_id"].astype(object).where(frame["trial_id"].notna(), "").astype(str).str.strip()
        empty = np.flatnonzero(ids.isin(NULLS).to_numpy())
        if empty.size:
            raise UsageError(f"{_where(frame, 'trial_id', int(empty[0]))}: is empty")
        ids_arr = ids.to_numpy(dtype=object)
        for col, v in (("batch_size", b), ("lr", lr)):
            first = pd.Series(v).groupby(ids_arr, sort=False).transform("first").to_numpy(dtype=float)
            bad = np.flatnonzero(first != v)
            if bad.size:
                raise UsageError(
                    f"{_where(frame, col, int(bad[0]))}: trial {ids_arr[bad[0]]!r} has more than "
                    f"one {col} ({first[bad[0]]:g} and {v[bad[0]]:g})"
                )
        return ids_arr
    s = seed if seed is not None else np.full(len(b), np.nan)
    return np.array(
        [f"b{int(bb)}_lr{ll:.6g}" + ("" if np.isnan(ss) else f"_s{int(ss)}") for bb, ll, ss in zip(b, lr, s)],
        dtype=object,
    )


def to_run_tables(
    frame: pd.DataFrame, name: str, target: Target, final: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(curves, trials or None) from a renamed frame, every value checked."""
    for col in REQUIRED:
        if col not in frame.columns:
            raise UsageError(
                f"{frame.attrs.get(SOURCE, 'source')}: column {col!r} is missing "
                f"(name its source with --map {col}=SOURCE_COLUMN)"
            )
    if target.metric not in frame.columns:
        raise UsageError(
            f"{frame.attrs.get(SOURCE, 'source')}: column {target.metric!r} (the target metric) "
            f"is missing; its columns: {', '.join(c for c in frame.columns if c != LINE)}"
        )
    b = numbers(frame, "batch_size", integer=True, required=True)
    lr = numbers(frame, "lr", required=True)
    step = numbers(frame, "step", integer=True, required=True)
    assert b is not None and lr is not None and step is not None  # strict: never None
    _check_positive(frame, "batch_size", b)
    _check_positive(frame, "lr", lr)
    _check_positive(frame, "step", step, allow_zero=True)
    seed = numbers(frame, "seed", integer=True) if "seed" in frame.columns else None
    out: dict[str, object] = {
        "study": np.full(len(frame), name, dtype=object),
        "trial_id": _trial_ids(frame, b, lr, seed),
    }
    extras: list[str] = []
    for col in frame.columns:
        if col in (LINE, "trial_id", "study", "status") or col in out:
            continue
        if col in _STRING:
            out[col] = frame[col].astype(object).to_numpy()
            continue
        # Contract columns, the target and what the user mapped must be numbers; other extras
        # that are not come along as text.
        strict = col in CURVES_SCHEMA.names or col == target.metric or col in frame.attrs.get(ORIGIN, {})
        values = numbers(frame, col, integer=col in _INT, strict=strict)
        out[col] = values if values is not None else frame[col].astype(str).to_numpy(dtype=object)
        if col not in CURVES_SCHEMA.names:
            extras.append(col)
    curves = pd.DataFrame(out)
    if "examples_seen" not in curves:
        curves["examples_seen"] = curves["step"] * curves["batch_size"]
    _check_unique(frame, curves, final)
    trials = _trials(frame, curves, name) if "status" in frame.columns else None
    order = pd.factorize(curves["trial_id"], sort=False)[0]
    curves = curves.assign(_order=order).sort_values(["_order", "step"], kind="stable").drop(columns="_order")
    return curves.reset_index(drop=True), trials


def _check_unique(frame: pd.DataFrame, curves: pd.DataFrame, final: bool) -> None:
    key = curves[["trial_id"] if final else ["trial_id", "step"]]
    dup = key.duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((key == key.iloc[i]).all(axis=1).to_numpy())[0])
        what = (
            "appears again: a final-values file has one row per trial"
            if final
            else f"repeats step {int(curves['step'].iat[i])}"
        )
        raise UsageError(
            f"{frame.attrs.get(SOURCE, 'source')}: {frame[LINE].iat[i]}: trial "
            f"{curves['trial_id'].iat[i]!r} {what} (first at {frame[LINE].iat[first]})"
        )


def _trials(frame: pd.DataFrame, curves: pd.DataFrame, name: str) -> pd.DataFrame:
    status = frame["status"].astype(object).where(frame["status"].notna(), "").astype(str).str.strip()
    bad = np.flatnonzero(~status.isin(STATUSES).to_numpy())
    if bad.size:
        raise UsageError(
            f"{_where(frame, 'status', int(bad[0]))}: {status.iat[int(bad[0])]!r} is not one of "
            f"{', '.join(sorted(STATUSES))}"
        )
    c = curves.assign(status=status.to_numpy())
    g = c.groupby("trial_id", sort=False)
    mixed = g["status"].transform("nunique").to_numpy() > 1
    if mixed.any():
        i = int(np.flatnonzero(mixed)[0])
        raise UsageError(f"{_where(frame, 'status', i)}: trial {c['trial_id'].iat[i]!r} has more than one status")
    first, last = g.first(), g.last()

    def col(frame_: pd.DataFrame, name_: str) -> object:
        return frame_[name_].to_numpy() if name_ in frame_.columns else None

    return pd.DataFrame(
        {
            "trial_id": first.index.astype(str),
            "study": name,
            "batch_size": first["batch_size"].astype("int64"),
            "micro_batch_size": col(first, "micro_batch_size"),
            "lr": first["lr"].astype(float),
            "seed": col(first, "seed"),
            "optimizer": None,
            "status": first["status"],
            "steps": g["step"].max().astype("int64"),
            "examples_seen": g["examples_seen"].max(),
            "wall_time_s": g["wall_time_s"].max() if "wall_time_s" in c else None,
            "final_val_loss": col(last, "val_loss"),
            "best_val_accuracy": g["val_accuracy"].max() if "val_accuracy" in c else None,
            "sharpness": None,
            "node": None,
            "config_json": None,
            "error": None,
        }
    ).reset_index(drop=True)


def _arrow(frame: pd.DataFrame, schema: pa.Schema, extra_string: set[str]) -> pa.Table:
    arrays, fields = [], []
    for f in schema:
        values = frame[f.name] if f.name in frame else pd.Series([None] * len(frame), dtype=object)
        if pa.types.is_integer(f.type):
            values = pd.array(pd.to_numeric(values), dtype="Int64")
        arrays.append(pa.array(values, type=f.type, from_pandas=True))
        fields.append(f)
    for c in frame.columns:
        if c not in schema.names:
            t = pa.string() if c in extra_string else pa.float64()
            arrays.append(pa.array(frame[c], type=t, from_pandas=True))
            fields.append(pa.field(c, t))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_run(run_dir: Path, curves: pd.DataFrame, trials: pd.DataFrame | None) -> None:
    """curves/batch_size=<B>/part-0.parquet (the contract's columns first) and trials.parquet."""
    strings = {c for c in curves.columns if c not in CURVES_SCHEMA.names and curves[c].dtype == object}
    file_schema = pa.schema([f for f in CURVES_SCHEMA if f.name != "batch_size"])
    for b, part in curves.groupby("batch_size", sort=True):
        table = _arrow(part.drop(columns="batch_size"), file_schema, strings)
        write_atomic(run_dir / "curves" / f"batch_size={int(b)}" / "part-0.parquet", table)
    if trials is not None:
        write_atomic(run_dir / "trials.parquet", _arrow(trials, TRIALS_SCHEMA, set()))
