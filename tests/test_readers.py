"""RUN_DIR/curves (hive-partitioned by batch_size, int64) and trials.parquet as every dataframe
tool reads them, each in its documented way (the README's one-liners): pyarrow, pandas,
polars and DuckDB; and `python -m analysis.export` for tools that want one flat file. One
smoke run (tests/shared_smoke.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from shared_smoke import smoke_run

from analysis import export
from support import REPO
from trainables.contract import CURVES_SCHEMA

KEY = ["trial_id", "step"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_run(tmp_path_factory)


def _canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Contract columns in contract order, rows by trial and step, pandas' own dtypes."""
    cols = [c for c in CURVES_SCHEMA.names if c in df.columns]
    return df[cols].sort_values(KEY).reset_index(drop=True).convert_dtypes(dtype_backend="numpy_nullable")


def _records(df: pd.DataFrame) -> list[dict[str, object]]:
    """Rows by trial as plain Python values, every kind of null as None."""
    rows = df.sort_values("trial_id").to_dict("records")
    return [
        {k: None if v is None or (not isinstance(v, str) and pd.isna(v)) else v for k, v in r.items()} for r in rows
    ]


def _readers(run_dir: Path) -> dict[str, pd.DataFrame]:
    curves = f"{run_dir}/curves"
    hive = ds.partitioning(pa.schema([("batch_size", pa.int64())]), flavor="hive")
    got = {
        # the README's one-liners, as a user would type them
        "pyarrow": ds.dataset(curves, format="parquet", partitioning=hive).to_table(),
        "pandas": pd.read_parquet(curves, partitioning=hive),
        "polars": pl.read_parquet(
            f"{curves}/**/*.parquet", hive_partitioning=True, hive_schema={"batch_size": pl.Int64}
        ),
        "duckdb": duckdb.sql(
            f"SELECT * FROM read_parquet('{curves}/*/*.parquet', hive_partitioning = true, "
            "hive_types = {'batch_size': BIGINT})"
        ),
    }
    assert got["pyarrow"].schema.field("batch_size").type == pa.int64()
    assert got["pandas"]["batch_size"].dtype == "int64"
    assert got["polars"].schema["batch_size"] == pl.Int64
    duck = got["duckdb"]
    assert dict(zip(duck.columns, map(str, duck.types)))["batch_size"] == "BIGINT"
    return {
        "pyarrow": got["pyarrow"].to_pandas(),
        "pandas": got["pandas"],
        "polars": got["polars"].to_pandas(),
        "duckdb": duck.df(),
    }


def test_every_tool_reads_the_same_curves_with_batch_size_int64(run_dir: Path) -> None:
    frames = _readers(run_dir)
    sizes = sorted(int(p.name.removeprefix("batch_size=")) for p in (run_dir / "curves").glob("batch_size=*"))
    ref = _canonical(frames["pyarrow"])
    assert list(ref.columns) == CURVES_SCHEMA.names and len(ref) > 100
    assert sorted(ref["batch_size"].unique()) == sizes
    for name, df in frames.items():
        assert not df.duplicated(KEY).any(), name
        pd.testing.assert_frame_equal(_canonical(df), ref, check_dtype=False, obj=name)
        assert str(_canonical(df)["batch_size"].dtype) == "Int64", name


def test_every_tool_reads_trials_parquet(run_dir: Path) -> None:
    path = str(run_dir / "trials.parquet")
    frames = {
        "pyarrow": pq.read_table(path).to_pandas(),
        "pandas": pd.read_parquet(path),
        "polars": pl.read_parquet(path).to_pandas(),
        "duckdb": duckdb.sql(f"SELECT * FROM '{path}'").df(),
    }
    ref = _records(frames["pyarrow"])
    assert len(ref) == 9 and {r["status"] for r in ref} <= {"completed", "early_stopped", "diverged", "failed"}
    for name, df in frames.items():
        assert df["batch_size"].dtype == "int64", name
        assert list(df.columns) == list(frames["pyarrow"].columns), name
        assert _records(df) == ref, name


def test_export_writes_one_flat_file_each_tool_reads(run_dir: Path, tmp_path: Path) -> None:
    ref = _canonical(_readers(run_dir)["pyarrow"])
    out = tmp_path / "curves.csv"
    r = subprocess.run(
        [sys.executable, "-m", "analysis.export", str(run_dir), "--format", "csv", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout.strip() == str(out), r.stderr
    assert export.main([str(run_dir), "--format", "parquet", "--out", str(tmp_path / "curves.parquet")]) == 0
    flat = {
        "pandas csv": pd.read_csv(out),
        "polars csv": pl.read_csv(out).to_pandas(),
        "duckdb csv": duckdb.sql(f"SELECT * FROM read_csv('{out}')").df(),
        "pandas parquet": pd.read_parquet(tmp_path / "curves.parquet"),
        "duckdb parquet": duckdb.sql(f"SELECT * FROM '{tmp_path / 'curves.parquet'}'").df(),
    }
    trials = pd.read_parquet(run_dir / "trials.parquet").set_index("trial_id")
    for name, df in flat.items():
        assert df["batch_size"].dtype == "int64", name
        pd.testing.assert_frame_equal(_canonical(df), ref, check_dtype=False, obj=name)
        # each row carries its trial's status
        assert (df["status"].to_numpy() == trials.loc[df["trial_id"], "status"].to_numpy()).all(), name
    # the default file name, next to curves/
    assert export.main([str(run_dir), "--format", "parquet"]) == 0
    assert pq.read_table(run_dir / "curves_flat.parquet").num_rows == len(ref)


@pytest.mark.parametrize(
    "args",
    [
        ["--format", "xlsx"],
        ["--format", "csv", "--out", "/nonexistent-dir/x.csv"],
        ["--format", "csv", "--out", "."],
        [],
    ],
)
def test_export_bad_input_is_one_line_exit_2(
    run_dir: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert export.main([str(run_dir), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


def test_export_of_a_directory_without_curves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export.main([str(tmp_path), "--format", "csv"]) == 2
    assert export.main([str(tmp_path / "missing"), "--format", "csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'curves'} is missing", f"error: {tmp_path / 'missing'} is not a directory"]
