"""Branched local critical batch size (Merrill et al. 2025): the rule, the study table, the
NQM's warm start, and the whole measurement through the launcher on the NQM, as a job on
the dev Slurm cluster, whose analytic B_noise = tr(HΣ)/E[GᵀHG] it must recover within a
factor of 2, and its resume."""

from __future__ import annotations

import math
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.branching import local_critical
from orchestrator.branching import leg_config, phases, state_file
from orchestrator.study import load_study, validate
from support import launch, run_trainable
from trainables import nqm
from trainables.contract import UsageError


def test_the_rule_keeps_the_largest_k_up_to_which_every_branch_keeps_up() -> None:
    tol = 0.02
    assert local_critical({1: 1.0, 2: 1.0, 4: 1.01, 8: 1.03, 16: 1.0}, tol).multiplier == 4  # 8 breaks the run
    # against every smaller k, not the reference alone: 8 is within 2% of k = 1, not of k = 4
    assert local_critical({1: 1.0, 2: 0.98, 4: 0.97, 8: 0.995}, tol).multiplier == 4
    assert local_critical({1: 1.0, 2: 1.1}, tol).censored == "below"
    assert local_critical({1: 1.0, 2: 1.0, 4: 1.0}, tol).censored == "above"
    assert local_critical({1: 1.0, 2: 1.0, 4: math.inf, 8: 1.0}, tol).multiplier == 2  # diverged
    assert local_critical({1: 1.0, 2: 1.0, 4: 1.0, 8: 2.0}, tol).censored is None
    with pytest.raises(ValueError, match="reference"):
        local_critical({1: math.nan, 2: 1.0}, tol)


STUDY = {
    "name": "b",
    "trainable": "nqm",
    "trainable_config": {"dim": 100},
    "search": {"batch_sizes": [1, 4], "lr": {"min": 0.01, "max": 0.1, "points": 2}},
    "budget": {"max_steps": 100},
    "target": {"metric": "val_loss", "mode": "min", "value": 0.05},
    "branching": {"base_batch": 2, "base_lr": 0.01, "checkpoints": [64, 128], "multipliers": [2, 4], "window": 32},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"checkpoints": [128, 64]}, "branching.checkpoints: must be strictly increasing"),
        ({"checkpoints": [63]}, "branching: checkpoints: 63 is not a multiple of base_batch 2"),
        ({"multipliers": [1, 2]}, "branching.multipliers.0: "),
        ({"multipliers": [4, 2]}, "branching.multipliers: must be strictly increasing"),
        (
            {"window": 20},
            "branching: window: 20 is not a multiple of every k·base_batch (their least common multiple is 8); try 16",
        ),
        ({"multipliers": [2, 3], "window": 20}, "(their least common multiple is 12); try 24"),
        ({"tolerance": 0}, "branching.tolerance: "),
        ({"base_lr": -1}, "branching.base_lr: "),
        ({"lr_rule": "cubic"}, "branching.lr_rule: "),
        ({"metric": "val_accuracy"}, "branching.metric: 'val_accuracy' is not reported by trainable nqm"),
        ({"windows": 32}, "branching.windows: unknown key"),
    ],
)
def test_bad_branching_tables_name_the_key(change: dict, message: str) -> None:
    raw = {**STUDY, "branching": {**STUDY["branching"], **change}}
    with pytest.raises(UsageError) as e:
        validate(raw)
    assert message in str(e.value), str(e.value)


def test_branching_needs_a_trainable_that_starts_from_a_state_and_no_warmup_past_the_first_checkpoint() -> None:
    with pytest.raises(UsageError, match=r"branching: trainable cifar10 cannot start from another trial"):
        validate(
            {
                **STUDY,
                "trainable": "cifar10",
                "trainable_config": {},
                "target": {"metric": "val_accuracy", "value": 0.8},
            }
        )
    with pytest.raises(
        UsageError, match=r"branching.checkpoints: the first \(64\) falls inside search.warmup_examples"
    ):
        validate({**STUDY, "search": {**STUDY["search"], "warmup_examples": 100}})


def test_the_plan_runs_each_checkpoint_once_the_base_has_reached_it() -> None:
    b = validate(STUDY).branching
    assert b is not None
    plan = phases(b)
    assert [[leg.name for leg in p] for p in plan] == [
        ["base0"],
        ["c0-k1", "c0-k2", "c0-k4", "base1"],
        ["c1-k1", "c1-k2", "c1-k4"],
    ]
    assert sum(leg.examples for p in plan for leg in p if leg.role == "base") == 128
    assert {leg.examples for p in plan for leg in p if leg.role == "branch"} == {32}
    # replicas: each its own data order, shared across k at one checkpoint; the base goes on with r = 0's
    study = validate({**STUDY, "branching": {**STUDY["branching"], "seeds": 2}})
    assert study.branching is not None
    seeds = {leg.name: leg_config(study, leg).seed for p in phases(study.branching) for leg in p}
    assert seeds["base0"] == 0 and seeds["c0-k1"] == seeds["c0-k4"] == seeds["base1"] == 1
    assert seeds["c0-k1-r1"] == seeds["c0-k2-r1"] == 3 and seeds["c1-k1"] == 2 and seeds["c1-k4-r1"] == 4
    assert leg_config(study, phases(study.branching)[1][2]).warmup_examples == 0


@pytest.mark.parametrize("extra", [{}, {"momentum": 0.9}, {"mode": "sampled"}])
def test_an_nqm_branch_at_k_1_continues_the_base_exactly(extra: dict) -> None:
    """A warm start from the state at step 500 with the same B and LR is the base run itself
    (expected mode: exactly; sampled: the same distribution, a different noise stream)."""
    cfg = {"batch_size": 8, "lr": 0.05, "dim": 300, "noise_scale_every": 0, **extra}
    full, _ = run_trainable("nqm", {**cfg, "max_steps": 1000})
    head, ckpts = run_trainable("nqm", {**cfg, "max_steps": 500})
    tail, _ = run_trainable("nqm", {**cfg, "max_steps": 500, "init_state": ckpts[-1]})
    assert tail[0]["step"] == 1 and tail[-1]["examples_seen"] == 500 * 8  # counted from the branch point
    if extra.get("mode") == "sampled":
        assert tail[-1]["val_loss"] == pytest.approx(full[-1]["val_loss"], rel=0.3)
    else:
        assert tail[-1]["val_loss"] == pytest.approx(full[-1]["val_loss"], rel=1e-12)
    # a branch at 4B with 4x the LR trains the same examples in a quarter of the updates
    big, _ = run_trainable("nqm", {**cfg, "batch_size": 32, "lr": 0.2, "max_steps": 125, "init_state": ckpts[-1]})
    assert big[-1]["examples_seen"] == 500 * 8 and big[-1]["step"] == 125
    with pytest.raises(ValueError, match="same model"):
        run_trainable("nqm", {**cfg, "dim": 200, "max_steps": 10, "init_state": ckpts[-1]})
    if not extra:
        with pytest.raises(ValueError, match="momentum"):
            run_trainable("nqm", {**cfg, "momentum": 0.5, "max_steps": 10, "init_state": ckpts[-1]})


# A CI-sized run: three batch sizes for the sweep's McCandlish fit, three checkpoints, and
# the study's multipliers thinned to the ones around the answer (the rule walks k upwards).
GRID = ["search.batch_sizes=[1, 64, 4096]", "search.lr.points=10"]
CHECKPOINTS = "branching.checkpoints=[1024, 16384, 262144]"
MULTIPLIERS = "branching.multipliers=[16, 64, 192, 256]"


SLURM = ["--cluster", "slurm", "--nodes", "2", "--cpus-per-node", "1", "--time", "00:15:00", "--follow"]


def job_log(run: Path, job: str) -> str:
    """What the job's driver (task 0) printed to stderr: the branching phases it ran."""
    return (run / "slurm" / f"{job}_0_log.err").read_text()


@pytest.fixture(scope="module")
def branched_run(devslurm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CI-sized study as one job on the dev Slurm cluster's two nodes: the sweep, then the
    branches, each starting from the state a base leg on either node left in RUN_DIR."""
    from test_slurm_launch import assert_nothing_left, job_id_of

    run = tmp_path_factory.mktemp("nqm-branching") / "run"
    args = [a for o in [*GRID, CHECKPOINTS, MULTIPLIERS] for a in ("--set", o)]
    with pytest.MonkeyPatch.context() as env:  # slurm_env's setting, for this module's run
        for key, value in devslurm.env.items():
            env.setenv(key, value)
        r = launch(*SLURM, "--study", "nqm-branching", *args, "--out", str(run))
        assert r.returncode == 0, r.stderr[-3000:]
        job = job_id_of(r.stdout)
        assert_nothing_left(job)
    assert "branching: phase3 of 4 (new), 5 trials" in job_log(run, job)
    return run


@pytest.mark.slurm
def test_branching_on_the_nqm_recovers_the_analytic_critical_batch_within_a_factor_of_2(branched_run: Path) -> None:
    """At every checkpoint the local critical batch size (the study's documented tolerance,
    0.02) lies within a factor of 2 of B_noise = tr(HΣ)/E[GᵀHG] = Σh²/Σh³E[x²] of the base
    run's state there (Σ = H per example, G = Hx: McCandlish et al.'s B_noise, exact here)."""
    import pandas as pd

    study = load_study("nqm-branching", overrides=[*GRID, CHECKPOINTS, MULTIPLIERS])
    assert study.branching is not None and study.branching.tolerance == 0.02
    table = pd.read_csv(branched_run / "report" / "tables" / "branching.csv")
    h = nqm.curvatures(study.trainable_settings().dim)  # type: ignore[attr-defined]
    assert list(table["examples_seen"]) == study.branching.checkpoints
    for i, row in table.iterrows():
        s = torch.load(state_file(branched_run, int(i)), weights_only=False)["state"]["s"]
        b_noise = float((h**2).sum() / (h**3 @ s))
        assert isinstance(row["censored"], float) and np.isnan(row["censored"])  # neither edge
        assert 0.5 <= row["local_critical_batch"] / b_noise <= 2.0, (
            row["examples_seen"],
            row["local_critical_batch"],
            b_noise,
        )
    report = (branched_run / "report" / "report.md").read_text()
    assert "## Branched critical batch size" in report
    assert "The sweep's McCandlish B_crit (to the target):" in report
    assert (branched_run / "report" / "figures" / "branching.png").is_file()


@pytest.mark.slurm
def test_a_resumed_branching_runs_only_what_is_missing_and_gives_the_same_answer(branched_run: Path, slurm_env) -> None:
    """As if the run was killed after phase1's trials ended but before its table was
    written, and before the later phases began: --resume restores phase1 from Tune's state
    (no trial runs again), runs phase2 and phase3, and the report's table is the same.
    It works on the module's run itself (last in this file): Tune's restored callbacks
    write to the run directory they were created in, so a copy would not do."""
    import pandas as pd
    import pyarrow.parquet as pq

    run = branched_run
    before = pd.read_csv(run / "report" / "tables" / "branching.csv")
    phase1 = pq.read_table(run / "branching" / "phase1" / "trials.parquet")
    (run / "branching" / "phase1" / "trials.parquet").unlink()
    for j in (2, 3):
        shutil.rmtree(run / "branching" / f"phase{j}")
    shutil.rmtree(run / "report")
    r = launch(*SLURM, "--resume", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    from test_slurm_launch import assert_nothing_left, job_id_of

    job = job_id_of(r.stdout)
    assert_nothing_left(job)
    again = pq.read_table(run / "branching" / "phase1" / "trials.parquet")
    assert sorted(again.column("trial_id").to_pylist()) == sorted(phase1.column("trial_id").to_pylist())
    log = job_log(run, job)
    assert "branching: phase0 " not in log  # finished: skipped
    assert "branching: phase1 of 4 (resumed), 6 trials" in log and "branching: phase3 of 4 (new)" in log
    after = pd.read_csv(run / "report" / "tables" / "branching.csv")
    pd.testing.assert_frame_equal(before, after)
    frozen = tomllib.loads((run / "study.toml").read_text())
    assert frozen["branching"]["checkpoints"] == [1024, 16384, 262144]
