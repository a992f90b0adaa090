"""What the README promises of the trial grid and of ``--dry-run``, checked through the
real entry points: the rule-centred LR grid, ``--budget smoke``'s caps, and the Slurm
resource lines of the sbatch script."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from orchestrator import smoke
from orchestrator.grid import lr_values, start_order, trial_config, trial_grid
from orchestrator.launch import main
from orchestrator.study import load_study, validate
from support import launch
from trainables.contract import step_cap

RULE = "search.lr={rule='%s', base_batch=128, base_lr=0.1, decades=1.0, points=7}"


def rule_grid(rule: str, b: int, base_batch: int, base_lr: float, decades: float, points: int) -> list[float]:
    """The README's rule: centre base_lr * (B/base_batch)^(1 or 1/2), points log-spaced over
    ± decades around it."""
    centre = base_lr * (b / base_batch) ** (1.0 if rule == "linear" else 0.5)
    return [centre * 10 ** (decades * (2 * i / (points - 1) - 1)) for i in range(points)]


def dry_run_lrs(text: str) -> dict[int, list[float]]:
    """The learning rates per batch size of a ``--dry-run`` listing."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 3 and all(re.fullmatch(r"\d+", p) for p in parts[:3]):
            out[int(parts[0])] = [float(x) for x in parts[3:]]
    return out


# --------------------------------------------------------------------------- LR rules


@pytest.mark.parametrize("rule", ["sqrt", "linear"])
def test_rule_centred_lr_grid_from_set(rule: str) -> None:
    study = load_study("fashion-mnist", overrides=[RULE % rule])
    for b in study.search.batch_sizes:
        expect = rule_grid(rule, b, 128, 0.1, 1.0, 7)
        assert lr_values(study, b) == pytest.approx(expect, rel=1e-5), b
    assert lr_values(study, 128)[3] == pytest.approx(0.1, rel=1e-9)  # the centre at base_batch is base_lr
    # the rules differ where they should: 4x the batch is 4x (linear) or 2x (sqrt) the LR
    assert lr_values(study, 512)[3] == pytest.approx(0.4 if rule == "linear" else 0.2, rel=1e-5)
    # and every trial of the sweep gets exactly these LRs
    grid = trial_grid(study)
    assert len(grid) == 9 * 7
    for b in study.search.batch_sizes:
        assert sorted(p.lr for p in grid if p.batch_size == b) == lr_values(study, b)
    point = next(p for p in grid if p.batch_size == 4096)
    assert trial_config(study, point).lr == point.lr


def test_rule_centred_lr_grid_from_a_study_dict_and_the_dry_run(tmp_path: Path, capsys) -> None:
    study = validate(
        {
            "name": "rule",
            "trainable": "nqm",
            "trainable_config": {"dim": 10},
            "search": {
                "batch_sizes": [8, 32, 2048],
                "lr": {"rule": "linear", "base_batch": 32, "base_lr": 0.05, "decades": 0.5, "points": 5},
            },
            "budget": {"max_steps": 10},
            "target": {"metric": "val_loss", "mode": "min", "value": 0.1},
        }
    )
    for b in (8, 32, 2048):
        assert lr_values(study, b) == pytest.approx(rule_grid("linear", b, 32, 0.05, 0.5, 5), rel=1e-5)
    # points = 1: the rule's prediction itself
    one = validate(
        {
            **study.model_dump(exclude_none=True),
            "search": {
                **study.search.model_dump(),
                "lr": {"rule": "sqrt", "base_batch": 32, "base_lr": 0.05, "points": 1},
            },
        }
    )
    assert lr_values(one, 2048) == [pytest.approx(0.05 * 8.0)]

    # the launcher's dry run lists the same grid per batch size (3 significant digits)
    out = tmp_path / "run"
    assert main(["--dry-run", "--out", str(out), "--set", RULE % "sqrt"]) == 0
    listed = dry_run_lrs(capsys.readouterr().out)
    assert sorted(listed) == [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    for b, lrs in listed.items():
        assert lrs == pytest.approx(rule_grid("sqrt", b, 128, 0.1, 1.0, 7), rel=5e-3), b
    assert not out.exists()


# --------------------------------------------------------------------------- --budget smoke


def test_smoke_constants_are_the_documented_caps() -> None:
    # README and orchestrator/smoke.py: 3 batch sizes, 3 LRs, 1 seed, <= 20,000 examples,
    # <= 150 steps, ASHA grace <= 5,000 examples
    assert (
        smoke.SMOKE_BATCH_SIZES,
        smoke.SMOKE_LRS,
        smoke.SMOKE_MAX_EXAMPLES,
        smoke.SMOKE_MAX_STEPS,
        smoke.SMOKE_GRACE_EXAMPLES,
    ) == (3, 3, 20_000, 150, 5_000)


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("fashion-mnist", []),
        ("fashion-mnist", ["search.seeds=3", "budget.max_examples=100000000"]),
        ("fashion-mnist", [RULE % "sqrt"]),
        ("nqm", []),
    ],
)
def test_budget_smoke_shrinks_to_the_caps(name: str, overrides: list[str]) -> None:
    full = load_study(name, overrides)
    small = load_study(name, overrides, budget="smoke")
    sizes = small.search.batch_sizes
    assert len(sizes) == 3 and set(sizes) <= set(full.search.batch_sizes)
    assert max(sizes) <= full.search.batch_sizes[len(full.search.batch_sizes) // 2]  # the lower half
    assert small.search.seeds == 1
    for b in sizes:
        lrs = lr_values(small, b)
        assert len(lrs) == 3
        full_lrs = lr_values(full, b)
        assert min(full_lrs) <= min(lrs) and max(lrs) <= max(full_lrs)
        if "rule" not in small.search.lr.model_dump():
            mid = len(full_lrs) // 2
            assert lrs == full_lrs[mid - 1 : mid + 2]  # the three central LRs
        else:
            assert lrs[1] == pytest.approx(full_lrs[len(full_lrs) // 2], rel=1e-5)  # same centre
            assert lrs[-1] / lrs[0] <= 10.0 * (1 + 1e-9)  # at most ± half a decade
        cap = step_cap(b, small.budget.max_steps, small.budget.max_examples)
        assert cap <= 150 and cap * b <= 20_000 and small.budget.examples_cap(b) <= 20_000
    assert small.budget.max_examples <= 20_000 and small.budget.max_steps <= 150
    assert small.early_stopping.grace_examples <= 5_000
    assert small.early_stopping.scheduler == full.early_stopping.scheduler
    assert small.target == full.target and small.trainable == full.trainable
    assert len(trial_grid(small)) == 9


def test_budget_smoke_keeps_what_is_already_small() -> None:
    small = load_study(
        "fashion-mnist",
        [
            "search.batch_sizes=[32, 64]",
            "budget.max_examples=5000",
            "search.lr={min=0.01, max=0.1, points=2}",
            "early_stopping.grace_examples=1000",
        ],
        budget="smoke",
    )
    assert small.search.batch_sizes == [32, 64]
    assert lr_values(small, 32) == [0.01, 0.1]
    assert small.budget.max_examples == 5000 and small.early_stopping.grace_examples == 1000


def test_budget_smoke_dry_run_through_the_launcher(tmp_path: Path) -> None:
    for study, sizes in (("fashion-mnist", [16, 64, 256]), ("nqm", [1, 16, 256])):
        r = launch("--study", study, "--budget", "smoke", "--dry-run", "--out", str(tmp_path / study))
        assert r.returncode == 0, r.stderr
        listed = dry_run_lrs(r.stdout)
        assert sorted(listed) == sizes and all(len(v) == 3 for v in listed.values())
        assert "9 trials (3 batch sizes)" in r.stdout
        assert not (tmp_path / study).exists()


# --------------------------------------------------------------------------- Slurm resources


@pytest.fixture
def no_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with an ``sbatch`` that only records that it was called: a dry run must not."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "sbatch-called"
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return marker


def sbatch_lines(stdout: str) -> set[str]:
    return {ln.strip() for ln in stdout.splitlines() if ln.startswith("#SBATCH")}


def test_slurm_dry_run_gpus_and_cpus_per_node(tmp_path: Path, no_sbatch: Path) -> None:
    out = tmp_path / "run"
    r = launch(
        "--cluster",
        "slurm",
        "--dry-run",
        "--gpus-per-node",
        "2",
        "--cpus-per-node",
        "4",
        "--set",
        "resources.gpus_per_trial=0.5",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    lines = sbatch_lines(r.stdout)
    assert {
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
    } <= lines, lines
    assert "81 trials (9 batch sizes)" in r.stdout
    assert not no_sbatch.exists() and not out.exists()  # nothing submitted, nothing written


@pytest.mark.parametrize(
    "sets,flags,gpus,cpus",
    [
        # 0.5 GPU per trial on 2 GPUs: 4 trials per node, each with its cpus_per_trial
        (["resources.gpus_per_trial=0.5"], ["--gpus-per-node", "2"], 2, 4),
        (["resources.gpus_per_trial=0.5", "resources.cpus_per_trial=1.5"], ["--gpus-per-node", "2"], 2, 6),
        (["resources.gpus_per_trial=0.25", "resources.cpus_per_trial=2"], ["--gpus-per-node", "1"], 1, 8),
        # no --gpus-per-node: enough GPUs for one trial, and CPUs for the trials they hold
        (["resources.gpus_per_trial=0.5", "resources.cpus_per_trial=3"], [], 1, 6),
        (["resources.gpus_per_trial=2"], [], 2, 1),
        # a CPU-only study: no GPU line, one trial's CPUs
        (["resources.cpus_per_trial=3"], [], 0, 3),
    ],
)
def test_slurm_dry_run_default_cpus_follow_the_trials_per_node(
    sets: list[str], flags: list[str], gpus: int, cpus: int, tmp_path: Path, no_sbatch: Path, capsys
) -> None:
    args = ["--cluster", "slurm", "--dry-run", *flags, "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    lines = sbatch_lines(capsys.readouterr().out)
    assert f"#SBATCH --cpus-per-task={cpus}" in lines, lines
    gpu_lines = {ln for ln in lines if "gpu" in ln}
    assert gpu_lines == ({f"#SBATCH --gpus-per-node={gpus}"} if gpus else set()), lines
    assert not no_sbatch.exists()


def test_lr_policies_run_each_rule_lr_once_beside_the_tuned_grid() -> None:
    study = load_study("lr-policies")
    tuned = [0.003 * 1000 ** (i / 6) for i in range(7)]  # the study's {min 0.003, max 3, points 7}
    for b in study.search.batch_sizes:
        rules = {0.01, 0.01 * (b / 32) ** 0.5, 0.01 * b / 32}  # constant, sqrt, linear from 0.01 at B=32
        got = lr_values(study, b)
        assert got == sorted(got) and len(got) == len(set(got))
        assert len(got) == len({round(x, 9) for x in [*tuned, *rules]})
        for x in [*tuned, *rules]:
            assert any(abs(g - x) <= 1e-5 * x for g in got), (b, x, got)
    assert lr_values(study, 32).count(0.01) == 1  # at base_batch the three rules are one trial
    points = trial_grid(study)
    assert len(points) == 3 * sum(len(lr_values(study, b)) for b in study.search.batch_sizes)
    config = trial_config(study, points[0])
    assert config.stop_at_target is False and config.max_steps is None and config.max_examples == 110_000
    assert config.step_cap * config.batch_size <= 110_000  # the same examples at every batch size
    assert study.budget.max_epochs == 2  # 2 epochs of the 55,000 training images, resolved


def test_training_fractions_cross_every_trial_and_take_turns_in_the_start_order() -> None:
    study = load_study("curvature-forgetting")
    points = trial_grid(study)
    fractions = study.search.train_fraction
    by_trial: dict[tuple[int, float, int], list[float]] = {}
    for p in points:
        by_trial.setdefault((p.batch_size, p.lr, p.seed), []).append(p.train_fraction)
    assert all(sorted(v) == fractions for v in by_trial.values())  # every (B, LR, seed) on every subset
    assert {trial_config(study, p).train_fraction for p in points} == set(fractions)
    first = start_order(study)[: 2 * len(fractions)]
    assert {(p.batch_size, p.train_fraction) for p in first} == {(b, f) for b in (128, 512) for f in fractions}


def test_smoke_keeps_a_fixed_budget_fixed_and_two_fractions() -> None:
    lrp = load_study("lr-policies", budget="smoke")
    assert lrp.budget.max_steps is None and lrp.budget.max_examples == smoke.SMOKE_MAX_EXAMPLES
    assert lrp.search.lr.tuned is not None and lrp.search.lr.tuned.points == smoke.SMOKE_LRS
    assert load_study("curvature-forgetting", budget="smoke").search.train_fraction == [0.125, 1.0]
