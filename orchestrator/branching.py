"""Run the study's ``[branching]`` measurement after its sweep (Merrill et al. 2025).

One base run at B0 trains from scratch to the first checkpoint, then from each checkpoint
to the next; from every checkpoint, branches at k·B0 (and a reference at k = 1, the base
continued) train ``window`` examples with the LR moved by the rule. Each leg is a Tune
trial that starts from the state the base leg before it saved (``TrialConfig.init_state``,
through the adapter's ``STATE_FILES_KEY``), so the legs of a checkpoint run in one phase,
in parallel, once the base has reached it. Phases are separate Tune experiments under
``RUN_DIR/branching/phase<j>/``, each a small run directory of its own (``curves/``,
``trials.parquet``, ``tune/``, and ``legs.json``: trial id -> leg); a finished phase is
skipped on ``--resume``, an unfinished one restored. ``analysis.branching`` reads them.

    from orchestrator.branching import format_branching
    print(format_branching(study))       # the dry run's lines
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ray import tune

from orchestrator.adapter import tune_trainable
from orchestrator.branching_spec import Branching
from orchestrator.errors import SweepInterrupted
from orchestrator.grid import TrialPoint, trial_config
from orchestrator.sink import ParquetSink
from orchestrator.study import Study
from orchestrator.sweep import run_config, trial_name, trial_resources
from orchestrator.tune_config import CONFIG_KEY, STATE_FILES_KEY
from trainables.contract import BRANCHING_DIR, TrialConfig, write_atomic
from trainables.registry import resolve
from trainables.schedule import micro_batch_size

LEGS_FILE = "legs.json"
LEG_KEY = "leg"
INDEX_KEY = "leg_index"
EXPERIMENT = "branching"


@dataclass(frozen=True)
class Leg:
    """One trial of the measurement."""

    role: Literal["base", "branch"]
    """base: the base run from ``start_examples`` to checkpoint ``checkpoint``; branch: from
    checkpoint ``checkpoint`` at k·B0 for the window (k = 1: the reference)."""
    checkpoint: int
    """Index into ``Branching.checkpoints``."""
    multiplier: int
    """k (1 for the base and the reference)."""
    start_examples: int
    """Examples the base run had seen where the leg starts."""
    examples: int
    """Examples the leg trains."""
    replica: int = 0
    """Which of the ``seeds`` branches of its (checkpoint, k) this is (0 for the base)."""

    @property
    def name(self) -> str:
        if self.role == "base":
            return f"base{self.checkpoint}"
        return f"c{self.checkpoint}-k{self.multiplier}" + (f"-r{self.replica}" if self.replica else "")


def phases(b: Branching) -> list[list[Leg]]:
    """The legs in the order they can run: phase 0 is the base to the first checkpoint;
    phase i + 1 the branches from checkpoint i and the base on to checkpoint i + 1."""
    cps = b.checkpoints
    out = [[Leg("base", 0, 1, 0, cps[0])]]
    for i, c in enumerate(cps):
        legs = [Leg("branch", i, k, c, b.window, r) for k in [1, *b.multipliers] for r in range(b.seeds)]
        if i + 1 < len(cps):
            legs.append(Leg("base", i + 1, 1, c, cps[i + 1] - c))
        out.append(legs)
    return out


def state_file(run_dir: Path, checkpoint: int) -> Path:
    """Where the base leg ending at checkpoint ``checkpoint`` leaves its trainable's state."""
    return Path(run_dir).resolve() / BRANCHING_DIR / "states" / f"base{checkpoint}.pt"


def phase_dir(run_dir: Path, j: int) -> Path:
    return Path(run_dir).resolve() / BRANCHING_DIR / f"phase{j}"


def leg_config(study: Study, leg: Leg) -> TrialConfig:
    """The trial config of one leg: the study's optimizer and model at the leg's batch size
    and LR, capped at the leg's examples, never stopping at the target. The study's warmup
    happens once, at the start of the base run; replica r of the legs from checkpoint i
    shares the data seed ``seed + 1 + i + r · len(checkpoints)`` at every k (the same
    batches, as far as they go)."""
    b = study.branching
    assert b is not None
    size = leg.multiplier * b.base_batch
    micro = micro_batch_size(size // study.resources.workers_per_trial, study.budget.max_micro_batch)
    fresh = leg.start_examples == 0
    start = leg.checkpoint - 1 if leg.role == "base" else leg.checkpoint
    seed = b.seed if fresh else b.seed + 1 + start + leg.replica * len(b.checkpoints)
    cfg = trial_config(study, TrialPoint(size, micro, b.lr(leg.multiplier), seed))
    return dataclasses.replace(
        cfg,
        warmup_examples=cfg.warmup_examples if fresh else 0,
        max_steps=None,
        max_examples=leg.examples,
        stop_at_target=False,
    )


def tune_space(study: Study, run_dir: Path, legs: list[Leg]) -> list[dict[str, Any]]:
    """Each leg's Tune config: the trial config, the state files it loads and saves, the leg."""
    out = []
    for leg in legs:
        start = leg.checkpoint - 1 if leg.role == "base" else leg.checkpoint
        load = str(state_file(run_dir, start)) if leg.start_examples > 0 else None
        save = str(state_file(run_dir, leg.checkpoint)) if leg.role == "base" else None
        out.append(
            {
                CONFIG_KEY: leg_config(study, leg).to_dict(),
                STATE_FILES_KEY: {"load": load, "save": save},
                LEG_KEY: dataclasses.asdict(leg),
            }
        )
    return out


class LegRecorder(tune.Callback):
    """Writes ``legs.json`` (trial id -> leg) as trials start: the analysis's key to a phase.
    Read back from disk each time, so a restored experiment adds to what is there."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        legs = json.loads(self.path.read_text()) if self.path.is_file() else {}
        if trial.trial_id not in legs:
            legs[trial.trial_id] = trial.config[LEG_KEY]
            write_atomic(self.path, json.dumps(legs, indent=1, sort_keys=True))


def run_branching(study: Study, run_dir: Path, *, resume: bool = False, checkpoint_every_s: float = 60.0) -> None:
    """Run (or resume) every phase of the study's branching on the connected Ray.

    A phase whose base leg left no state (it diverged or failed) ends the measurement there,
    with a warning: the later checkpoints have no base to branch from, and the analysis says
    so. Raises ``SweepInterrupted`` when Tune stopped a phase early."""
    b = study.branching
    if b is None:
        return
    trainable = tune.with_resources(
        tune_trainable(resolve(study.trainable), checkpoint_every_s), trial_resources(study.resources)
    )
    plan = phases(b)
    for j, legs in enumerate(plan):
        out = phase_dir(run_dir, j)
        if (out / "trials.parquet").is_file():
            continue
        if j > 0 and not state_file(run_dir, j - 1).is_file():
            print(
                f"branching: the base run did not reach checkpoint {j - 1} ({b.checkpoints[j - 1]} examples: "
                "it diverged or failed); no branches from there on",
                file=sys.stderr,
            )
            return
        path = out / "tune" / EXPERIMENT
        restore = resume and tune.Tuner.can_restore(str(path))
        how = "resumed" if restore else "new"
        print(f"branching: {out.name} of {len(plan)} ({how}), {len(legs)} trials", file=sys.stderr, flush=True)
        if restore:
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = _new_tuner(study, run_dir, out, trainable, legs)
        tuner.fit()
        if not (out / "trials.parquet").is_file():
            raise SweepInterrupted(f"branching stopped before {out.name} finished; continue it with --resume {run_dir}")


def _new_tuner(study: Study, run_dir: Path, out: Path, trainable: Any, legs: list[Leg]) -> tune.Tuner:
    return tune.Tuner(
        trainable,
        param_space=_param_space(tune_space(study, run_dir, legs)),
        tune_config=tune.TuneConfig(
            num_samples=1, reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_name
        ),
        run_config=run_config(EXPERIMENT, out / "tune", [ParquetSink(out, study.name), LegRecorder(out / LEGS_FILE)]),
    )


class _Pick:
    """A ``tune.sample_from`` that takes one key of the leg the trial's grid index names:
    Tune's grid varies one key at a time, and a leg is three keys that vary together."""

    def __init__(self, space: list[dict[str, Any]], key: str) -> None:
        self.space, self.key = space, key

    def __call__(self, config: dict[str, Any]) -> Any:
        return self.space[config[INDEX_KEY]][self.key]


def _param_space(space: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (CONFIG_KEY, STATE_FILES_KEY, LEG_KEY)
    return {
        INDEX_KEY: tune.grid_search(list(range(len(space)))),
        **{k: tune.sample_from(_Pick(space, k)) for k in keys},
    }


def examples_planned(b: Branching) -> int:
    """Examples every leg trains, summed: the base run to its last checkpoint plus the branches."""
    return sum(leg.examples for legs in phases(b) for leg in legs)


def format_branching(study: Study) -> str:
    """The dry run's lines on the branching measurement."""
    b = study.branching
    if b is None:
        return ""
    trials = sum(len(legs) for legs in phases(b))
    ks = ", ".join(str(k) for k in b.multipliers)
    return "\n".join(
        [
            f"branching: base B={b.base_batch} lr={b.base_lr:g} to {b.checkpoints[-1]:,} examples; from each of "
            f"{len(b.checkpoints)} checkpoints ({', '.join(f'{c:,}' for c in b.checkpoints)}) branches at k = 1 "
            f"(reference), {ks} with the {b.lr_rule} LR rule, {b.window:,} examples each",
            f"branching: {trials} trials, {examples_planned(b):,} examples, run after the sweep",
        ]
    )
