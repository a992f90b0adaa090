"""Bad study input and flags: exit 2, one line naming the key, nothing started or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.launch import main
from support import launch

BAD_SETS = [
    ("search.lr.min=-1", "search.lr.min"),
    ("search.lr.max=0.0000001", "search.lr"),
    ("search.lr={rule='cubic',base_batch=128,base_lr=0.1}", "search.lr.rule"),
    ("search.lr={rule='sqrt',base_batch=128}", "search.lr.base_lr"),
    ("search.batch_sizes=[16,16]", "search.batch_sizes"),
    ("search.batch_sizes=[0,16]", "search.batch_sizes.0"),
    ("search.batch_sizes=[]", "search.batch_sizes"),
    ("search.seeds=0", "search.seeds"),
    ("search.optimizer='rmsprop'", "search.optimizer"),
    ("search.momentum=1.5", "search.momentum"),
    ("search.colour=3", "search.colour"),
    ("budget={stop_at_target=true}", "budget"),
    ("target.mode=up", "target.mode"),
    ("target.metric=val_acc", "target.metric"),
    ("early_stopping.metric=loss", "early_stopping.metric"),
    ("early_stopping.reduction_factor=1", "early_stopping.reduction_factor"),
    ("early_stopping.scheduler='hyperband'", "early_stopping.scheduler"),
    ("resources.cpus_per_trial=0", "resources.cpus_per_trial"),
    ("name='two words'", "name"),
    ("trainable=resnet9000", "trainable"),
    ("trainable_config.model=rnn", "trainable_config.model"),
    ("trainable_config.depth=3", "trainable_config.depth"),
    ("trainable_config.data_dir=/nonexistent", "trainable_config.data_dir"),
    ("protocol.kind=fixed_budget", "budget.stop_at_target"),  # the built-in study stops at its target
    ("protocol.kind=epochs", "protocol.kind"),
    ("budget.max_epochs=2", "budget.max_examples"),  # 2 epochs are not the study's 1,000,000 examples
    ("budget.max_epochs=0", "budget.max_epochs"),
    ("search.train_fraction=[0,1]", "search.train_fraction.0"),
    ("search.train_fraction=[0.5,1.5]", "search.train_fraction.1"),
    ("search.train_fraction=[0.5,0.5]", "search.train_fraction"),
    ("search.lr={policies=['linear','tuned'],base_batch=32,base_lr=0.01}", "search.lr"),
    ("search.lr={policies=['linear'],base_batch=32,base_lr=0.01,tuned={min=0.1,max=1}}", "search.lr"),
    ("search.lr={policies=['cubic'],base_batch=32,base_lr=0.01}", "search.lr.policies.0"),
    ("search.lr={policies=['linear'],base_batch=32}", "search.lr.base_lr"),
    ("search", "--set"),
    ("search..lr=1", "--set"),
]

BAD_FLAGS = [
    (["--cluster", "aws"], "--cluster"),
    (["--budget", "tiny"], "--budget"),
    (["--study", "no-such-study"], "--study"),
    (["--study", "/nonexistent/study.toml"], "--study"),
    (["--nodes", "2"], "--nodes"),
    (["--follow"], "--follow"),
    (["--cluster", "slurm", "--gpus-per-node", "-1"], "--gpus-per-node"),
    (["--cluster", "slurm", "--time", "8h"], "--time"),
    (["--frobnicate"], "--frobnicate"),
    (["--resume"], "--resume"),  # RUN_DIR: an empty directory, not a run
]


@pytest.mark.parametrize("assignment,key", BAD_SETS)
def test_bad_set_exits_2_naming_the_key(assignment: str, key: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["--set", assignment, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"error: {key}"), err
    assert not out.exists()


@pytest.mark.parametrize("flags,key", BAD_FLAGS)
def test_bad_flag_exits_2_naming_the_flag(flags: list[str], key: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    if flags == ["--resume"]:
        out.mkdir()
        args = ["--resume", str(out)]
    else:
        args = [*flags, "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert key in err, err
    assert (list(out.iterdir()) == []) if flags == ["--resume"] else not out.exists()


@pytest.mark.parametrize(
    "study,sets,message",
    [
        ("lr-policies", ["budget.max_steps=100"], "error: budget.max_steps: a fixed_budget study gives every batch"),
        ("lr-policies", ["budget.stop_at_target=true"], "error: budget.stop_at_target: a fixed_budget study trains"),
        ("nqm", ["search.train_fraction=[0.5,1.0]"], "error: search.train_fraction: trainable nqm does not train on"),
        ("nqm", ["budget.max_epochs=1"], "error: budget.max_epochs: trainable nqm does not say how large"),
        (
            "fashion-mnist",
            ["search.strategy=adaptive", "search.train_fraction=[0.5,1.0]"],
            "error: search.strategy: the adaptive search tunes one LR grid",
        ),
    ],
)
def test_protocol_and_subset_conflicts_exit_2(
    study: str, sets: list[str], message: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert main(["--study", study, *(a for s in sets for a in ("--set", s)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and err.count("\n") == 0, err
    assert not out.exists()


def test_bad_toml_file_names_file_and_line(tmp_path: Path, capsys) -> None:
    study = tmp_path / "broken.toml"
    study.write_text('name = "x"\ntrainable = \n')
    assert main(["--study", str(study), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(study) in err and "line 2" in err


def test_out_dir_not_empty_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["--out", str(tmp_path), "--budget", "smoke"]) == 2
    assert "--out" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_exit_code_in_a_real_process(tmp_path: Path) -> None:
    r = launch("--set", "search.lr.min=-1", "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert r.stderr.strip() == "error: search.lr.min: Input should be greater than 0 (got -1)"
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_grid_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert (
        main(
            [
                "--dry-run",
                "--out",
                str(out),
                "--set",
                "search.seeds=2",
                "--set",
                "search.batch_sizes=[32, 8192]",
                "--set",
                "budget.max_micro_batch=2048",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "8192    2048" in text  # micro-batch: gradient accumulation over 4 passes
    assert "36 trials (2 batch sizes)" in text  # 2 batch sizes x 9 LRs x 2 seeds
    assert not out.exists()


def test_resume_refuses_a_live_lease_and_takes_over_a_stale_one(tmp_path: Path, capsys) -> None:
    """A driver holding the run's lease (this very process) blocks a second driver; once
    its heartbeat is old the lease is stale, and a released one is no claim at all."""
    import dataclasses

    from cluster import lease
    from cluster.local import LocalBackend
    from orchestrator import rundir
    from orchestrator.study import load_study

    run = rundir.create(tmp_path / "run", load_study(budget="smoke"))
    with lease.held(run, backend="local") as mine:
        assert main(["--resume", str(run)]) == 2
        assert f"still running: pid {mine.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == ["lease.json", "manifest.json", "study.toml"]
        assert LocalBackend().is_alive(lease.read(run))
        stale = dataclasses.replace(mine, heartbeat=mine.heartbeat - lease.STALE_AFTER_S - 1)
        assert not LocalBackend().is_alive(stale)
        dead = dataclasses.replace(mine, pid=2**22 + 1)  # above pid_max: never a live process
        assert not LocalBackend().is_alive(dead)
    assert lease.read(run).released and not LocalBackend().is_alive(lease.read(run))


def test_resume_refuses_other_code_or_settings_unless_forced(tmp_path: Path, capsys) -> None:
    """A run made by another version (here: its manifest says torch 1.0 and other code) or
    whose frozen study was edited is refused with what differs; --force takes it anyway."""
    import json

    from orchestrator import rundir
    from orchestrator.launch import _resolve, build_parser
    from orchestrator.study import load_study

    run = rundir.create(tmp_path / "run", load_study(budget="smoke"))
    assert _resolve(build_parser().parse_args(["--resume", str(run)]))[1] == run  # unchanged: fine
    m = json.loads((run / "manifest.json").read_text())
    m["packages"]["torch"], m["code_sha256"] = "1.0", "0" * 64
    (run / "manifest.json").write_text(json.dumps(m))
    study = (run / "study.toml").read_text()
    (run / "study.toml").write_text(study.replace("hidden = 256", "hidden = 128"))
    assert main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "other code or settings" in err, err
    assert "code: commit" in err and "torch: 1.0 -> " in err
    assert "study.trainable_config.hidden: 256 -> 128" in err
    study_now, resumed = _resolve(build_parser().parse_args(["--resume", str(run), "--force"]))
    assert resumed == run and study_now.trainable_config["hidden"] == 128
    assert main(["--force", "--budget", "smoke", "--dry-run"]) == 2
    assert "--force: only with --resume" in capsys.readouterr().err
