"""Adapts a Ray-free trainable (``trainables``) to a Ray Tune function trainable.

The adapter drops ``None`` metrics (Tune's schedulers cannot compare them), tags each
result with the node it ran on, persists the trainable's checkpoint dict at most every
``checkpoint_every_s`` seconds (a checkpoint per evaluation would cost more than the
training of a small model) and at the first evaluation past each ``checkpoint_at`` position
(examples seen: the rungs where a synchronous scheduler pauses trials, which resume from
there), resumes from Tune's latest checkpoint, and ends the trial at the study's target.

An exception from the trainable's own code ends the trial with a last result carrying
``error`` (its last line): the trial is ``failed``, and Tune does not retry it, since the
same code would fail the same way. Only what kills the trial's process from outside (a
node lost, the worker killed) reaches Tune as a trial error, which ``FailureConfig``
retries from the last checkpoint.

A trial whose Tune config names state files (``STATE_FILES_KEY``, ``orchestrator.branching``)
starts from the one it loads (``TrialConfig.init_state``) and, when it runs to its end,
leaves its last checkpoint in the one it saves.

A trial of ``world_size`` N > 1 runs as N data-parallel workers (``orchestrator.workers``)
in the trial's placement group: rank 0's reports come through the same ``report``, tagged
with the workers' nodes (``n1,n2``); the trainable's exception on a rank fails the trial
as above, and a lost worker is re-raised, so Tune restarts every rank from the checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ray import tune

from orchestrator.trial_side import error_line, node_name
from orchestrator.tune_config import STATE_FILES_KEY, config_of
from orchestrator.workers import WorkerFailed, WorkerGroup, WorkerLost
from trainables.contract import write_atomic
from trainables.registry import TrainableRef, load_function

CHECKPOINT_FILE = "state.pt"


class _TargetReached(Exception):
    """Unwinds a trainable that does not stop at the target by itself."""


def tune_trainable(
    trainable: TrainableRef,
    checkpoint_every_s: float = 60.0,
    checkpoint_at: Mapping[int, Sequence[float]] | None = None,
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable running ``trainable`` (resolved on the driver, imported again
    on the worker) on the trial's config;
    ``checkpoint_at``: per batch size, examples-seen positions to checkpoint at as well."""

    def run_trial(tune_config: dict[str, Any]) -> None:
        config = config_of(tune_config)
        files = tune_config.get(STATE_FILES_KEY) or {}
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
            config = config.with_checkpoint(state)
        if files.get("load"):  # a branch starts from another trial's state (its checkpoint wins)
            init = torch.load(files["load"], map_location="cpu", weights_only=False)
            config = dataclasses.replace(config, init_state=init)
        last_state: dict[str, Any] | None = None  # the trainable's state at its last report
        node = node_name()
        last_saved = time.monotonic()
        in_tune = False  # an exception raised inside tune.report is Tune's, never the trial's
        marks = sorted((checkpoint_at or {}).get(config.batch_size, ()))
        seen = -1.0  # examples at the previous report (none yet in this process)

        def report(metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> None:
            nonlocal last_saved, in_tune, seen, last_state
            last_state = checkpoint
            clean = {k: v for k, v in metrics.items() if v is not None}
            clean["node"] = node
            in_tune = True
            now_seen = float(metrics.get("examples_seen") or 0)
            at_mark = any(seen < m <= now_seen for m in marks)
            seen = now_seen
            if checkpoint is not None and (at_mark or time.monotonic() - last_saved >= checkpoint_every_s):
                with tempfile.TemporaryDirectory() as d:
                    torch.save(checkpoint, Path(d) / CHECKPOINT_FILE)
                    tune.report(clean, checkpoint=tune.Checkpoint.from_directory(d))
                last_saved = time.monotonic()
            else:
                tune.report(clean)
            in_tune = False
            if config.ends_at(metrics):
                raise _TargetReached

        try:
            if config.world_size > 1:  # N data-parallel workers (orchestrator.workers)
                group = WorkerGroup(config)
                try:
                    node = group.node_label
                    group.run(functools.partial(load_function, trainable), report)
                finally:
                    group.shutdown()
            else:
                load_function(trainable)(config, report)
            if files.get("save") and last_state is not None:  # ran to its end, not diverged
                save_state(last_state, Path(files["save"]))
        except _TargetReached:
            pass
        except WorkerLost:
            raise  # Tune's FailureConfig restarts the trial, every rank, from its checkpoint
        except WorkerFailed as e:
            tune.report({"error": e.line, "node": node})
        except Exception as e:
            if in_tune:
                raise
            tune.report({"error": error_line(e), "node": node})

    return run_trial


def save_state(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` written atomically (``write_atomic``): a reader sees all of it or none."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomic(path, buf.getvalue())
