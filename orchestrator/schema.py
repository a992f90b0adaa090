"""Arrow schemas of ``curves/`` and ``trials.parquet`` (contract: "curves/ columns").

``batch_size`` is the hive partition key of ``curves/``: files inside a partition do not
repeat it (pyarrow infers the partition's type from the path and refuses to merge it with
a column of the same name), so read the dataset with ``CURVES_PARTITIONING``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds

CURVES_SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("trial_id", pa.string()),
        ("batch_size", pa.int64()),
        ("micro_batch_size", pa.int64()),
        ("lr", pa.float64()),
        ("seed", pa.int64()),
        ("step", pa.int64()),
        ("examples_seen", pa.int64()),
        ("epoch", pa.float64()),
        ("wall_time_s", pa.float64()),
        ("train_loss", pa.float64()),
        ("val_loss", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("lr_current", pa.float64()),
        ("grad_noise_scale", pa.float64()),
    ]
)
CURVES_FILE_SCHEMA = pa.schema([f for f in CURVES_SCHEMA if f.name != "batch_size"])
CURVES_PARTITIONING = ds.partitioning(pa.schema([("batch_size", pa.int64())]), flavor="hive")

TRIAL_STATUSES = ("completed", "early_stopped", "diverged", "failed")
TRIALS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("study", pa.string()),
        ("batch_size", pa.int64()),
        ("micro_batch_size", pa.int64()),
        ("lr", pa.float64()),
        ("seed", pa.int64()),
        ("optimizer", pa.string()),
        ("status", pa.string()),
        ("steps", pa.int64()),
        ("examples_seen", pa.int64()),
        ("wall_time_s", pa.float64()),
        ("final_val_loss", pa.float64()),
        ("best_val_accuracy", pa.float64()),
        ("sharpness", pa.float64()),
        ("node", pa.string()),
        ("config_json", pa.string()),
    ]
)


def read_curves(curves_dir: str) -> pa.Table:
    """The whole curves dataset with the contract's column types."""
    dataset = ds.dataset(curves_dir, format="parquet", partitioning=CURVES_PARTITIONING, schema=CURVES_SCHEMA)
    return dataset.to_table()
