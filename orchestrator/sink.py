"""Every evaluation of every trial into ``RUN_DIR/curves`` (Parquet), crash-safe.

A Tune callback on the driver. Each trial owns one file,
``curves/batch_size=<B>/<trial_id>.parquet``, rewritten with all of the trial's rows every
``flush_every_s`` while it runs, when Tune saves its experiment state after the trial
reported a checkpoint, and when the trial ends (a rewrite costs about a millisecond and
grows with the trial, so rewrites are kept few: bench/bench_sink.py measures their share
of the driver's CPU); a rewrite goes to a temporary name
that is then renamed over the old file, so readers (the progress display, a notebook)
always see a whole file and a crash never leaves half of one. Rows are keyed by
``(trial_id, step)``: a resumed trial that reports a step again replaces nothing and
duplicates nothing. At the end, ``trials.parquet`` holds one row per trial.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ray.tune import Callback
from ray.tune.experiment import Trial

from orchestrator.rundir import tune_dir
from orchestrator.tune_config import config_of
from trainables.contract import (
    CURVES_FILE_SCHEMA,
    FINAL_COLUMNS,
    METRIC_COLUMNS,
    TRIALS_SCHEMA,
    TrialConfig,
    curves_file,
    decide_status,
    write_atomic,
)

ORPHANED = "orphaned_curves"
"""Under RUN_DIR/tune: curve files of trials a resume forgot (``ParquetSink.set_aside_orphans``)."""


def tune_error_line(trial: Trial) -> str:
    """The last line of the error Tune recorded for a trial (its traceback's last line)."""
    try:
        text = trial.get_error() or ""
    except OSError:
        text = ""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1] if lines else "the trial's worker died"


class TrialRecord:
    """What the sink knows of one trial: its rows and its end."""

    def __init__(self, trial_id: str, config: TrialConfig) -> None:
        self.trial_id = trial_id
        self.config = config
        self.rows: dict[int, dict[str, Any]] = {}
        self.dirty = False
        self.last_flush = time.monotonic()
        self.checkpointed = False
        """A checkpoint was reported since the last flush: a resume would start from it."""
        self.node: str | None = None
        self.diverged = False
        self.failed = False
        self.error: str | None = None
        self.final: dict[str, float] = {}
        """The last row's end-of-trial measurements (``FINAL_COLUMNS``)."""


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


class ParquetSink(Callback):
    """Writes curves as trials report and ``trials.parquet`` when the sweep ends."""

    def __init__(
        self, run_dir: Path, study_name: str, early_stopped: set[str] | None = None, flush_every_s: float = 30.0
    ) -> None:
        self.run_dir = Path(run_dir)
        self.curves_dir = self.run_dir / "curves"
        self.study = study_name
        self.flush_every_s = flush_every_s
        # shared with the scheduler, which adds the trials it stops
        self.early_stopped = early_stopped if early_stopped is not None else set()
        self.records: dict[str, TrialRecord] = {}
        self.ended: set[str] = set()

    # --- Tune hooks -------------------------------------------------------------------
    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        rec = self._record(trial)
        self.add_row(rec, result)
        if time.monotonic() - rec.last_flush >= self.flush_every_s:
            self.flush(rec)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        self.flush(self._record(trial))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        # Tune gives up on a trial its retries could not save (lost node, killed worker)
        self.ended.add(trial.trial_id)
        rec = self._record(trial)
        rec.failed = True
        rec.error = rec.error or tune_error_line(trial)
        self.flush(rec)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for t in trials:
            self._record(t)
        # Tune marks running trials TERMINATED when it is interrupted too; only trials
        # that completed or failed through Tune's hooks have ended.
        if all(t.trial_id in self.ended or t.status == Trial.ERROR for t in trials):
            self.finish()
        else:  # interrupted: keep the curves, but no trial table that calls them final
            self.flush_all()

    # --- Tune checkpoints callback state with its experiment state (resume) ----------------
    def get_state(self) -> dict[str, Any]:
        # Tune is about to record trial checkpoints that may be newer than the last flush:
        # write those trials' rows first, or a resume after a crash would skip them. A trial
        # without a new checkpoint would resume from an older one and report its rows again.
        for rec in self.records.values():
            if rec.checkpointed:
                self.flush(rec)
        meta = {
            t: {"node": r.node, "diverged": r.diverged, "failed": r.failed, "error": r.error, "final": r.final}
            for t, r in self.records.items()
        }
        return {
            "ended": sorted(self.ended),
            "meta": meta,
            "configs": {t: r.config.to_dict() for t, r in self.records.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.ended = set(state["ended"])
        for tid, cfg in state["configs"].items():
            rec = self._record_of(tid, TrialConfig.from_dict(cfg))
            for k, v in state["meta"][tid].items():
                setattr(rec, k, v)

    # --- the work ----------------------------------------------------------------------
    def _record(self, trial: Trial) -> TrialRecord:
        # looked up first: rebuilding the typed config costs more than the row itself
        return self.records.get(trial.trial_id) or self._record_of(trial.trial_id, config_of(trial))

    def _record_of(self, trial_id: str, config: TrialConfig) -> TrialRecord:
        rec = self.records.get(trial_id)
        if rec is None:
            rec = self.records[trial_id] = TrialRecord(trial_id, config)
            self._load_existing(rec)
        return rec

    def _path(self, rec: TrialRecord) -> Path:
        return curves_file(self.curves_dir, rec.config.batch_size, rec.trial_id)

    def _load_existing(self, rec: TrialRecord) -> None:
        # a resumed sweep: keep what the trial already wrote
        path = self._path(rec)
        if path.is_file():
            for row in pq.read_table(path).to_pylist():
                rec.rows[int(row["step"])] = row

    def add_row(self, rec: TrialRecord, result: dict[str, Any]) -> None:
        """Add one reported result (ignored if that step was already recorded)."""
        rec.node = result.get("node", rec.node)
        if result.get("error"):
            rec.failed, rec.error = True, str(result["error"])
        if "step" not in result:
            return
        if result.get("diverged"):
            rec.diverged = True
        rec.final.update({k: float(result[k]) for k in FINAL_COLUMNS if result.get(k) is not None})
        if result.get("checkpoint_dir_name"):  # set by Ray on a result reported with a checkpoint
            rec.checkpointed = True
        step = int(result["step"])
        if step in rec.rows:
            return
        cfg = rec.config
        row: dict[str, Any] = {
            "study": self.study,
            "trial_id": rec.trial_id,
            "micro_batch_size": cfg.micro_batch_size,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "train_fraction": cfg.train_fraction,
            "step": step,
            "examples_seen": int(result.get("examples_seen", step * cfg.batch_size)),
        }
        for col in METRIC_COLUMNS:
            row[col] = _float(result.get(col))
        rec.rows[step] = row
        rec.dirty = True

    def flush(self, rec: TrialRecord) -> None:
        if not rec.dirty:
            return
        rows = [rec.rows[s] for s in sorted(rec.rows)]
        table = pa.Table.from_pylist(rows, schema=CURVES_FILE_SCHEMA)
        write_atomic(self._path(rec), table)
        rec.dirty = rec.checkpointed = False
        rec.last_flush = time.monotonic()

    def trials_table(self) -> pa.Table:
        out = []
        for rec in self.records.values():
            rows = [rec.rows[s] for s in sorted(rec.rows)]
            last = rows[-1] if rows else {}
            val_losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
            accs = [
                r["val_accuracy"]
                for r in rows
                if r.get("val_accuracy") is not None and math.isfinite(r["val_accuracy"])
            ]
            cfg = rec.config
            out.append(
                {
                    "trial_id": rec.trial_id,
                    "study": self.study,
                    "batch_size": cfg.batch_size,
                    "micro_batch_size": cfg.micro_batch_size,
                    "lr": cfg.lr,
                    "seed": cfg.seed,
                    "train_fraction": cfg.train_fraction,
                    "optimizer": cfg.optimizer,
                    "status": decide_status(
                        diverged=rec.diverged, errored=rec.failed, early_stopped=rec.trial_id in self.early_stopped
                    ),
                    "steps": int(last.get("step", 0)),
                    "examples_seen": int(last.get("examples_seen", 0)),
                    "wall_time_s": float(last.get("wall_time_s") or 0.0),
                    "final_val_loss": val_losses[-1] if val_losses else None,
                    "best_val_accuracy": max(accs) if accs else None,
                    **{k: rec.final.get(k) for k in FINAL_COLUMNS},
                    "node": rec.node,
                    "config_json": json.dumps(cfg.to_dict(), sort_keys=True),
                    "error": rec.error,
                }
            )
        return pa.Table.from_pylist(
            sorted(out, key=lambda r: (r["batch_size"], r["lr"], r["seed"])), schema=TRIALS_SCHEMA
        )

    def flush_all(self) -> None:
        for rec in self.records.values():
            self.flush(rec)

    def finish(self) -> None:
        """Flush every trial, set aside the curves of trials the experiment no longer has,
        and write ``trials.parquet``."""
        self.flush_all()
        self.set_aside_orphans()
        write_atomic(self.run_dir / "trials.parquet", self.trials_table())

    def set_aside_orphans(self) -> list[Path]:
        """Move the curve files of trials Tune does not know to ``tune/orphaned_curves/``.

        A searcher's trial started after Tune's last experiment snapshot is forgotten by a
        resume: the restored searcher suggests that point again under a new (random) trial
        id, so the first attempt's partial curve would count the point twice. (A grid trial
        gets its id back and its file is reloaded: never an orphan.)"""
        moved = []
        for path in sorted(self.curves_dir.glob("batch_size=*/*.parquet")):
            if path.stem not in self.records:
                dest = tune_dir(self.run_dir) / ORPHANED / path.parent.name / path.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                path.rename(dest)
                moved.append(dest)
        if moved:
            print(
                f"resume: {len(moved)} partial curve(s) of trials started after the last snapshot, "
                f"run again since, moved to {tune_dir(self.run_dir) / ORPHANED}",
                file=sys.stderr,
            )
        return moved
