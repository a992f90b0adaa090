"""A TensorBoard log directory as a long table of evaluations, for ``import_sweep``.

Every directory under the root that holds event files (``events.out.tfevents.*``) is one
trial, named by its path relative to the root. Its batch size, LR and seed come from the
named groups of ``run_pattern`` matched against that name, e.g.
``bs(?P<batch_size>\\d+)_lr(?P<lr>[0-9.e-]+)``, or from the run's hparams (values named
batch_size, lr, seed, or mapped with ``--map lr=learning_rate``). Every scalar tag becomes
a column (``--map val_loss=eval/loss`` gives it the contract's name), one row per step;
a tag named like the run's batch size, LR or seed comes as ``<tag>/scalar``. ``wall_time_s``
is the seconds since the run's first event.

Reading event files needs the ``tensorboard`` package, which this project does not
depend on; without it the import stops with one line saying what to install.

    from pathlib import Path
    from analysis.import_tensorboard import read_tensorboard
    frame = read_tensorboard(Path("logs"), {"val_loss": "eval/loss"},
                             r"bs(?P<batch_size>\\d+)_lr(?P<lr>[0-9.e-]+)")
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.contract import UsageError

from .import_tables import LINE, rename

MISSING = "reading TensorBoard event files needs the tensorboard package: pip install tensorboard"


def _hparams(accumulator: Any) -> dict[str, Any]:
    """The run's hparams (session start info of the hparams plugin), name -> value."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    out: dict[str, Any] = {}
    try:
        contents = accumulator.PluginTagToContent("hparams")
    except KeyError:  # the run logged no hparams
        return out
    for content in contents.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for name, value in data.session_start_info.hparams.items():
                kind = value.WhichOneof("kind")
                if kind is not None:
                    out[name] = getattr(value, kind)
    return out


def _scalars(accumulator: Any) -> tuple[dict[int, dict[str, float]], dict[int, float]]:
    """step -> {tag: value}, and step -> earliest wall time, from scalar (and scalar tensor) events."""
    from tensorboard.util import tensor_util

    values: dict[int, dict[str, float]] = {}
    wall: dict[int, float] = {}
    tags = accumulator.Tags()
    for tag in tags.get("scalars", []):
        for ev in accumulator.Scalars(tag):
            values.setdefault(int(ev.step), {})[tag] = float(ev.value)
            wall[int(ev.step)] = min(wall.get(int(ev.step), np.inf), float(ev.wall_time))
    for tag in tags.get("tensors", []):
        for ev in accumulator.Tensors(tag):
            arr = tensor_util.make_ndarray(ev.tensor_proto)
            if arr.size == 1 and np.issubdtype(arr.dtype, np.number):
                values.setdefault(int(ev.step), {})[tag] = float(arr.reshape(()))
                wall[int(ev.step)] = min(wall.get(int(ev.step), np.inf), float(ev.wall_time))
    return values, wall


def read_tensorboard(root: Path, columns: dict[str, str], run_pattern: str | None) -> pd.DataFrame:
    """One row per (run, step) with the contract's column names where mapped."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise UsageError(MISSING) from None
    try:
        regex = re.compile(run_pattern) if run_pattern else None
    except re.error as e:
        raise UsageError(f"--run-pattern: {e}") from None
    if regex is not None and not {"batch_size", "lr"} <= set(regex.groupindex):
        raise UsageError("--run-pattern needs the named groups (?P<batch_size>...) and (?P<lr>...)")
    runs = sorted({p.parent for p in root.rglob("events.out.tfevents.*")})
    if not runs:
        raise UsageError(f"{root}: no TensorBoard event files (events.out.tfevents.*) under it")
    rows: list[dict[str, Any]] = []
    for run in runs:
        name = run.relative_to(root).as_posix()
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        meta: dict[str, Any] = {k: v for k, v in _hparams(acc).items()}
        if regex is not None:
            m = regex.search(name)
            if m is None:
                raise UsageError(f"{root}: run {name!r} does not match --run-pattern {run_pattern!r}")
            meta.update({k: v for k, v in m.groupdict().items() if v is not None})
        values, wall = _scalars(acc)
        t0 = min(wall.values(), default=0.0)
        for step in sorted(values):
            # The run's batch size, LR and seed win over a scalar tag of the same name (an LR
            # schedule logged as "lr"), which comes along as "<tag>/scalar".
            scalars = {(f"{k}/scalar" if k in meta else k): v for k, v in values[step].items()}
            rows.append(
                {
                    **scalars,
                    **meta,
                    "trial_id": name,
                    "step": step,
                    "wall_time_s": wall[step] - t0,
                    LINE: f"run {name!r} step {step}",
                }
            )
    if not rows:
        raise UsageError(f"{root}: the event files hold no scalar values")
    frame = pd.DataFrame(rows)
    return rename(frame, columns, str(root), final=False)
