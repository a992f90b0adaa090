"""Run a study's LR range tests before its sweep and centre each batch size's grid on what
its test suggests (``search.lr = { range_test = {...}, decades, points }``).

One trial per batch size (seed 0, all of the data, the study's optimizer and momentum) runs
``range_test.steps`` updates with the LR rising exponentially from ``min`` to ``max``
(``trainables.schedule``, ``lr = "range_test"``), on the sweep's resources, as one Tune
experiment under ``RUN_DIR/range_test/`` (``curves/``, ``trials.parquet``, ``tune/``); the
rule (``analysis.range_test.suggest``) turns each curve into an LR, written to
``RUN_DIR/range_test/picks.json``. A finished range test is not run again on ``--resume``;
an unfinished one is restored.

    from orchestrator.range_test import format_range_test
    print(format_range_test(study))       # the dry run's line
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ray import tune

from analysis.range_test import RANGE_TEST_DIR, range_curves, read_picks, suggestions, write_picks
from orchestrator.adapter import tune_trainable
from orchestrator.errors import SweepInterrupted
from orchestrator.grid import TrialPoint, trial_config
from orchestrator.lr_spec import LrRangeTest
from orchestrator.sink import ParquetSink
from orchestrator.study import Study
from orchestrator.sweep import run_config, trial_name, trial_resources
from orchestrator.tune_config import CONFIG_KEY
from trainables.contract import TrialConfig, UsageError
from trainables.registry import resolve
from trainables.schedule import Ramp, micro_batch_size

EXPERIMENT = "range_test"


def range_configs(study: Study) -> list[TrialConfig]:
    """The range-test trial of every batch size."""
    lr = study.search.lr
    assert isinstance(lr, LrRangeTest)
    rt, out = lr.range_test, []
    for b in study.search.batch_sizes:
        micro = micro_batch_size(b // study.resources.workers_per_trial, study.budget.max_micro_batch)
        point = TrialPoint(b, micro, rt.max, 0, max(study.search.train_fraction))
        cfg = trial_config(study, point)
        ramp = Ramp(lr="range_test", range_min=rt.min, max_micro_batch=study.budget.max_micro_batch)
        out.append(
            dataclasses.replace(
                cfg, schedule=ramp, max_steps=rt.steps, max_examples=None, stop_at_target=False, warmup_examples=0
            )
        )
    return out


def centred(study: Study, run_dir: Path, *, resume: bool = False, checkpoint_every_s: float = 60.0) -> Study:
    """The study with ``search.lr.centres`` set from its range tests (run here, or read back
    from a run that had them); the study itself for another LR form."""
    lr = study.search.lr
    if not isinstance(lr, LrRangeTest) or lr.centres is not None:
        return study
    out = Path(run_dir) / RANGE_TEST_DIR
    picks = read_picks(run_dir)
    if picks is None:
        _run(study, out, resume=resume, checkpoint_every_s=checkpoint_every_s)
        curves = range_curves(run_dir)
        picks = suggestions(curves) if curves is not None else {}
        write_picks(run_dir, picks)
    missing = [b for b in study.search.batch_sizes if picks.get(b) is None or picks[b].pick is None]
    if missing:
        why = "; ".join(f"B={b}: {picks[b].note}" if b in picks else f"B={b}: no curve" for b in missing)
        raise UsageError(f"search.lr.range_test: no LR to centre on ({why}); widen min and max")
    centres = {b: float(picks[b].pick or 0.0) for b in study.search.batch_sizes}
    for b in study.search.batch_sizes:
        note = f" ({picks[b].note})" if picks[b].note else ""
        print(f"range test: B={b} centred on lr {centres[b]:.3g}{note}", file=sys.stderr, flush=True)
    search = study.search.model_copy(update={"lr": lr.model_copy(update={"centres": centres})})
    return study.model_copy(update={"search": search})


def _run(study: Study, out: Path, *, resume: bool, checkpoint_every_s: float) -> None:
    if (out / "trials.parquet").is_file():
        return
    trainable = tune.with_resources(
        tune_trainable(resolve(study.trainable), checkpoint_every_s), trial_resources(study.resources)
    )
    path = out / "tune" / EXPERIMENT
    configs = range_configs(study)
    if resume and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        print(f"range test: {len(configs)} trials before the sweep", file=sys.stderr, flush=True)
        tuner = tune.Tuner(
            trainable,
            param_space={CONFIG_KEY: tune.grid_search([c.to_dict() for c in configs])},
            tune_config=tune.TuneConfig(
                num_samples=1, reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_name
            ),
            run_config=run_config(EXPERIMENT, out / "tune", [ParquetSink(out, study.name)]),
        )
    tuner.fit()
    if not (out / "trials.parquet").is_file():
        raise SweepInterrupted(f"the range test stopped before it finished; continue it with --resume {out.parent}")


def format_range_test(study: Study) -> str:
    """The dry run's line on the range tests."""
    lr = study.search.lr
    assert isinstance(lr, LrRangeTest)
    rt = lr.range_test
    if lr.centres is not None:
        return "range test: skipped, the study gives the centres"
    examples = sum(b * rt.steps for b in study.search.batch_sizes)
    return (
        f"range test: {len(study.search.batch_sizes)} trials before the sweep, one per batch size, each "
        f"{rt.steps} updates with the LR from {rt.min:g} to {rt.max:g} ({examples:,} examples in all); "
        "each grid is centred on its test's LR at the smoothed loss's minimum / 10 (analysis.range_test)"
    )
