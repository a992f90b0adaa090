"""A compact live view of a sweep: per batch size, trials done / running / stopped /
diverged and the best target value so far, plus an overall ETA; with early stopping, the
trials stopped at each rung and the examples that saved (against running them to the cap).

The sweep's callback writes a snapshot to ``RUN_DIR/tune/progress.json`` (atomically)
and, when local, renders it; ``launch --follow`` renders the same snapshot from the shared
filesystem while a Slurm job runs.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial

from orchestrator.adaptive import planned_trials
from orchestrator.grid import trial_grid
from orchestrator.scheduler import scheduler_kind
from orchestrator.sink import tune_error_line
from orchestrator.study import Study
from orchestrator.tune_config import config_of
from trainables.contract import decide_status, write_atomic

SNAPSHOT = Path("tune") / "progress.json"


def snapshot_path(run_dir: Path) -> Path:
    return Path(run_dir) / SNAPSHOT


def read_snapshot(run_dir: Path) -> dict[str, Any] | None:
    """The latest snapshot, or None before the sweep wrote one."""
    try:
        return json.loads(snapshot_path(run_dir).read_text())
    except (OSError, ValueError):
        return None


def _fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _fmt_examples(n: float) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k" if n >= 1e3 else f"{n:.0f}"


def _fmt_rungs(stops: dict[str, int]) -> str:
    """``{"60000.0": 4, "180000.0": 1}`` -> ``60k:4 180k:1`` (rungs without stops left out)."""

    def pos(m: str) -> float:
        return math.inf if m == "?" else float(m)

    return " ".join(
        f"{m if m == '?' else _fmt_examples(pos(m))}:{n}"
        for m, n in sorted(stops.items(), key=lambda x: pos(x[0]))
        if n
    )


def render(snap: dict[str, Any]) -> str:
    """The display text of one snapshot."""
    t = snap["target"]
    done = sum(b["completed"] + b["early_stopped"] + b["diverged"] + b["failed"] for b in snap["batches"])
    head = f"{snap['study']}  {done}/{snap['total_trials']} trials done  elapsed {_fmt_s(snap['elapsed_s'])}  " + (
        "finished" if snap["done"] else f"ETA {_fmt_s(snap['eta_s'])}"
    )
    metric = f"best {t['metric']}"
    es = snap.get("early_stopping")
    lines = [
        head,
        f"{'batch':>7} {'done':>6} {'run':>4} {'stop':>4} {'div':>4} {'fail':>4} {metric:>20} {'reached':>7}"
        + (f" {'wait':>4} {'saved':>6}  stopped at rung" if es else ""),
    ]
    for b in snap["batches"]:
        fin = b["completed"] + b["early_stopped"] + b["diverged"] + b["failed"]
        best = "-" if b["best"] is None else f"{b['best']:.4g}"
        frac = f"{fin}/{b['trials']}"
        lines.append(
            f"{b['batch_size']:>7} {frac:>6} {b['running']:>4} {b['early_stopped']:>4} "
            f"{b['diverged']:>4} {b['failed']:>4} {best:>20} {b['reached']:>7}"
            + (
                f" {b.get('paused', 0):>4} {_fmt_examples(b.get('saved_examples', 0)):>6}  "
                f"{_fmt_rungs(b.get('stopped_at', {}))}"
                if es
                else ""
            )
        )
    if es:
        lines.append(
            f"early stopping ({es['scheduler']}): {es['stopped']} trials stopped, "
            f"{_fmt_examples(es['saved_examples'])} examples saved of a "
            f"{_fmt_examples(es['budget_examples'])} budget (every trial to its cap)"
        )
    if (search := snap.get("search")) is not None:
        lines.append(
            f"adaptive search: {search['started']} trials started at {search['batch_sizes_started']} of "
            f"{len(snap['batches'])} batch sizes (about {search['planned']} if the LR rule predicts every "
            f"optimum; the grid has {search['grid']})"
        )
    return "\n".join(lines)


class LiveDisplay:
    """Redraws in place on a terminal; on a pipe or file, prints every ``every_s``."""

    def __init__(self, stream: TextIO = sys.stderr, every_s: float = 30.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = every_s if not self.tty else 0.5
        self._lines = 0
        self._last = 0.0

    def show(self, snap: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        text = render(snap)
        if self.tty and self._lines:
            self.stream.write(f"\x1b[{self._lines}F\x1b[J")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._lines = text.count("\n") + 1 if self.tty else 0


class ProgressCallback(Callback):
    """Keeps the per-batch-size counts and writes/renders snapshots."""

    def __init__(
        self,
        run_dir: Path,
        study: Study,
        early_stopped: set[str],
        display: LiveDisplay | None,
        every_s: float = 1.0,
        stopped_at: dict[str, float] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.study = study
        self.early_stopped = early_stopped
        # shared with the scheduler: trial id -> the rung (examples) it was stopped at
        self.stopped_at = stopped_at if stopped_at is not None else {}
        self.diverged: set[str] = set()
        self.errored: set[str] = set()
        self.ended: set[str] = set()
        self.display = display
        self.every_s = every_s
        self.best: dict[int, float] = {}
        self.reached: dict[int, set[str]] = {}
        self.examples: dict[str, int] = {}
        # counts from the grid: Tune creates the trials of a large grid lazily
        self.per_batch = Counter(p.batch_size for p in trial_grid(study))
        self.caps = {b: study.budget.examples_cap(b) for b in self.per_batch}
        self.budget = sum(self.caps[b] * n for b, n in self.per_batch.items())
        # the adaptive search starts a part of the grid: what it would run if the LR rule
        # predicted every batch size's optimum (the dry run's figure)
        self.planned = planned_trials(study) if study.search.strategy == "adaptive" else None
        self.started = time.time()
        self._last = 0.0

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        b = config_of(trial).batch_size
        self.examples[trial.trial_id] = int(result.get("examples_seen", 0))
        t = self.study.target
        v = result.get(t.metric)
        if v is not None and math.isfinite(v):
            if t.better(v, self.best.get(b)):
                self.best[b] = float(v)
            if t.reached(v):
                self.reached.setdefault(b, set()).add(trial.trial_id)
        if result.get("diverged"):
            self.diverged.add(trial.trial_id)
        if result.get("error"):
            self.errored.add(trial.trial_id)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self.publish(trials, done=False)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.ended.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        self._say(trial, "failed, its retries spent")

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._say(trial, "retrying from its last checkpoint")

    def _say(self, trial: Trial, what: str) -> None:
        """One line per failure of a trial's worker (Tune's traceback is in the trial's
        error.txt under RUN_DIR/tune, not on the console: run_sweep turns its printing off)."""
        cfg = config_of(trial)
        line = f"trial {trial.trial_id} (B={cfg.batch_size}, lr={cfg.lr:.4g}): {tune_error_line(trial)}; {what}"
        print(line, file=self.display.stream if self.display else sys.stderr, flush=True)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.publish(trials, done=all(t.trial_id in self.ended for t in trials))

    # Tune checkpoints callback state: a resumed sweep keeps its counts and best values.
    def get_state(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "reached": self.reached,
            "examples": self.examples,
            "diverged": self.diverged,
            "errored": self.errored,
            "ended": self.ended,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.best, self.reached = state["best"], state["reached"]
        self.examples, self.diverged, self.errored = state["examples"], state["diverged"], state["errored"]
        self.ended = state["ended"]

    def snapshot(self, trials: list[Trial], done: bool) -> dict[str, Any]:
        rows: dict[int, dict[str, Any]] = {
            b: dict(
                batch_size=b,
                trials=n,
                pending=n,
                running=0,
                completed=0,
                early_stopped=0,
                diverged=0,
                failed=0,
                best=self.best.get(b),
                reached=len(self.reached.get(b, ())),
                paused=0,
                stopped_at={},
                saved_examples=0,
            )
            for b, n in self.per_batch.items()
        }
        done_ex = 0
        for tr in trials:
            b = config_of(tr).batch_size
            r = rows[b]
            # Tune marks the trials it interrupts TERMINATED too: only those that ended through
            # its completion or error hooks are done; the others wait for --resume
            interrupted = tr.status == Trial.TERMINATED and tr.trial_id not in self.ended
            if tr.status == Trial.PAUSED and not interrupted:
                r["paused"] += 1  # waiting at a synchronous rung
            if tr.status in (Trial.PENDING, Trial.PAUSED) or interrupted:
                continue
            r["pending"] -= 1
            if tr.status == Trial.RUNNING:
                r["running"] += 1
                done_ex += self.examples.get(tr.trial_id, 0)
            else:
                done_ex += self.caps[b]  # a finished trial used (or was spared) its whole budget
                errored = tr.status == Trial.ERROR or tr.trial_id in self.errored
                status = decide_status(
                    diverged=tr.trial_id in self.diverged,
                    errored=errored,
                    early_stopped=tr.trial_id in self.early_stopped,
                )
                r[status] += 1
                if status == "early_stopped":
                    self._count_stop(r, tr.trial_id, b)
        elapsed = time.time() - self.started
        rate = done_ex / elapsed if elapsed > 0 else 0.0
        eta = (self.budget - done_ex) / rate if rate > 0 else None
        kind = scheduler_kind(self.study)
        early = (
            None
            if kind == "none"
            else dict(
                scheduler=kind,
                stopped=sum(r["early_stopped"] for r in rows.values()),
                saved_examples=sum(r["saved_examples"] for r in rows.values()),
                budget_examples=self.budget,
            )
        )
        return dict(
            study=self.study.name,
            target=self.study.target.model_dump(),
            done=done,
            total_trials=sum(self.per_batch.values()),
            elapsed_s=elapsed,
            eta_s=0.0 if done else eta,
            updated=time.time(),
            batches=[rows[b] for b in sorted(rows)],
            early_stopping=early,
            search=None
            if self.planned is None
            else dict(
                strategy="adaptive",
                started=len(trials),
                planned=self.planned,
                grid=sum(self.per_batch.values()),
                batch_sizes_started=len({config_of(tr).batch_size for tr in trials}),
            ),
        )

    def _count_stop(self, row: dict[str, Any], trial_id: str, b: int) -> None:
        """A stopped trial: its rung, and the examples to its cap it did not train."""
        rung = self.stopped_at.get(trial_id)
        key = "?" if rung is None else str(float(rung))
        row["stopped_at"][key] = row["stopped_at"].get(key, 0) + 1
        row["saved_examples"] += max(0, self.caps[b] - self.examples.get(trial_id, 0))

    def publish(self, trials: list[Trial], done: bool) -> None:
        snap = self.snapshot(trials, done)
        write_atomic(snapshot_path(self.run_dir), json.dumps(snap))
        if self.display is not None:
            self.display.show(snap, force=done)
