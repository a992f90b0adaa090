"""Importing a sweep someone else ran: long and final-value tables, TensorBoard logs, bad input."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import load_run, per_batch_summary
from analysis.fits import analyse
from analysis.import_sweep import main
from analysis.results import fits_json
from analysis.synthetic import write_synthetic_run
from orchestrator.cli import main as batchscale

REPO = Path(__file__).resolve().parent.parent
TARGET = ["--target-metric", "val_accuracy", "--target-mode", "max", "--target-value", "0.85"]


def same(x: object, y: object, path: str = "") -> None:
    """Equal JSON values, floats up to rounding."""
    if isinstance(x, dict) and isinstance(y, dict):
        assert x.keys() == y.keys(), path
        for k in x:
            same(x[k], y[k], f"{path}.{k}")
    elif isinstance(x, list) and isinstance(y, list):
        assert len(x) == len(y), path
        for i, (u, v) in enumerate(zip(x, y)):
            same(u, v, f"{path}[{i}]")
    elif isinstance(x, float) and isinstance(y, float):
        assert x == pytest.approx(y, rel=1e-9), path
    else:
        assert x == y, path


@pytest.mark.parametrize("with_status", [True, False])
def test_round_trip_of_a_run_this_project_wrote(tmp_path: Path, with_status: bool) -> None:
    src = tmp_path / "src"
    write_synthetic_run(src, seeds=2, rng_seed=3, evals_per_trial=15, lr_grid=np.geomspace(1e-3, 10, 9))
    run = load_run(src)
    curves = run.curves.merge(run.trials[["trial_id", "status"]], on="trial_id") if with_status else run.curves
    curves.to_csv(tmp_path / "long.csv", index=False)
    assert main([str(tmp_path / "long.csv"), "--out", str(tmp_path / "imported"), *TARGET]) == 0
    imported = load_run(tmp_path / "imported")
    assert imported.trials_synthesised is not with_status
    original = fits_json(analyse(run, n_boot=100))
    again = fits_json(analyse(imported, n_boot=100))
    same(original, again)


def readme_sweep(path: Path) -> None:
    """The small CSV of the README's example: someone's sweep, in their own column names."""
    rows = []
    rng = np.random.default_rng(0)
    for bs in (64, 128, 256, 512):
        s_star = 400 * (1 + 256 / bs)  # S(B) with B_crit = 256
        for lr in (0.05, 0.1, 0.2, 0.4):
            s_trial = s_star * np.exp((np.log(lr / (0.1 * np.sqrt(bs / 64)))) ** 2 + rng.normal(0, 0.05))
            for it in np.unique(np.geomspace(10, 3 * s_star, 8).astype(int)):
                loss = 0.3 + 0.2 * np.log(s_trial / it)
                rows.append(
                    {
                        "bs": bs,
                        "learning_rate": lr,
                        "iteration": it,
                        "eval/loss": round(float(np.maximum(loss, 0.05)), 4),
                    }
                )
    pd.DataFrame(rows).to_csv(path, index=False)


README_COMMAND = (
    "python -m analysis.import_sweep sweep.csv --out runs/imported --map batch_size=bs "
    "--map lr=learning_rate --map step=iteration --map val_loss=eval/loss "
    "--target-metric val_loss --target-mode min --target-value 0.3"
)


def test_the_readme_example_imports_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Analysing a sweep you already ran" in readme
    assert README_COMMAND in readme.replace(" \\\n    ", " ")
    readme_sweep(tmp_path / "sweep.csv")
    head = (tmp_path / "sweep.csv").read_text().splitlines()[:3]
    assert "\n".join(head) in readme
    args = README_COMMAND.split()[3:]  # in-process; test_the_module_runs_from_the_shell runs the module
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == "runs/imported"
    fits = json.loads(json.dumps(fits_json(analyse(load_run("runs/imported"), n_boot=50))))
    assert fits["target"] == {"metric": "val_loss", "mode": "min", "value": 0.3}
    assert [p["batch_size"] for p in fits["per_batch"]] == [64, 128, 256, 512]
    assert fits["critical_batch"]["b_crit"] == pytest.approx(256, rel=0.5)


def test_a_mapping_file_does_what_the_flags_do(tmp_path: Path) -> None:
    readme_sweep(tmp_path / "sweep.csv")
    (tmp_path / "map.toml").write_text(
        'name = "theirs"\n[columns]\nbatch_size = "bs"\nlr = "learning_rate"\nstep = "iteration"\n'
        'val_loss = "eval/loss"\n[target]\nmetric = "val_loss"\nmode = "min"\nvalue = 0.3\n'
    )
    assert (
        batchscale(
            [
                "import",
                str(tmp_path / "sweep.csv"),
                "--out",
                str(tmp_path / "a"),
                "--mapping",
                str(tmp_path / "map.toml"),
            ]
        )
        == 0
    )
    flags = README_COMMAND.split()[6:]  # the --map and --target flags
    assert main([str(tmp_path / "sweep.csv"), "--out", str(tmp_path / "b"), *flags, "--name", "theirs"]) == 0
    a, b = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    assert a.name == b.name == "theirs" and a.target == b.target
    pd.testing.assert_frame_equal(per_batch_summary(a), per_batch_summary(b))


def test_final_values_one_row_per_trial(tmp_path: Path) -> None:
    # Final values per (batch_size, lr): steps is each trial's length; reached if acc >= 0.85.
    pd.DataFrame(
        {
            "batch_size": [64, 64, 64, 256, 256, 256, 1024, 1024, 1024],
            "lr": [0.01, 0.02, 0.04] * 3,
            "steps": [5000, 4000, 6000, 2000, 1500, 1800, 1200, 1300, 1100],
            "val_accuracy": [0.86, 0.87, 0.84, 0.9, 0.86, 0.88, 0.8, 0.85, 0.84],
        }
    ).to_csv(tmp_path / "final.csv", index=False)
    assert main([str(tmp_path / "final.csv"), "--kind", "final", "--out", str(tmp_path / "run"), *TARGET]) == 0
    s = per_batch_summary(load_run(tmp_path / "run")).set_index("batch_size")
    assert s["steps_to_target"].to_dict() == {64: 4000, 256: 1500, 1024: 1300}
    assert s["reached"].to_dict() == {64: 2, 256: 3, 1024: 1}


GOOD = "batch_size,lr,seed,step,val_accuracy\n64,0.1,0,10,0.5\n64,0.1,0,20,0.9\n128,0.1,0,10,0.6\n"


@pytest.mark.parametrize(
    "csv,extra,expect",
    [
        ("batch_size,seed,step,val_accuracy\n64,0,10,0.5\n", [], ["column 'lr' is missing"]),
        (GOOD, ["--map", "step=iteration"], ["column 'iteration'", "--map step=iteration"]),
        (GOOD.replace("64,0.1,0,20", "64,abc,0,20"), [], ["line 3", "column 'lr'", "'abc' is not a number"]),
        (GOOD.replace("0.9\n", "high\n"), [], ["line 3", "column 'val_accuracy'", "'high' is not a number"]),
        (
            GOOD.replace("val_accuracy", "acc").replace("0.9\n", "high\n"),
            ["--map", "val_accuracy=acc"],
            ["line 3", "column 'val_accuracy' (from 'acc')", "'high' is not a number"],
        ),
        (GOOD.replace("64,0.1,0,20", "64,0.1,0,10"), [], ["line 3", "repeats step 10", "first at line 2"]),
        (GOOD.replace("128,0.1", "128.5,0.1"), [], ["line 4", "column 'batch_size'", "is not an integer"]),
        (GOOD.replace("64,0.1,0,20,0.9", "64,0.1,0,,0.9"), [], ["line 3", "column 'step'", "is empty"]),
        (GOOD.replace("128,0.1", "128,-0.1"), [], ["line 4", "column 'lr'", "is not positive"]),
        (GOOD.replace(",val_accuracy", ",val_loss"), [], ["column 'val_accuracy' (the target metric) is missing"]),
        ("batch_size,lr,step,val_accuracy,status\n64,0.1,10,0.5,done\n", [], ["line 2", "column 'status'", "'done'"]),
        (GOOD, ["--kind", "final"], ["line 3", "appears again", "first at line 2"]),
        (GOOD, ["--map", "step"], ["--map expects COLUMN=SOURCE_COLUMN"]),
        (GOOD, ["--target-mode", "sideways"], ["--target-mode"]),
    ],
)
def test_bad_input_exits_2_naming_column_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], csv: str, extra: list[str], expect: list[str]
) -> None:
    (tmp_path / "in.csv").write_text(csv)
    target = TARGET[:2] + TARGET[4:] if "--target-mode" in extra else TARGET
    out = tmp_path / "run"
    assert main([str(tmp_path / "in.csv"), "--out", str(out), *target, *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for e in expect:
        assert e in err, (e, err)
    assert not out.exists() and not list(tmp_path.glob(".run.import-*"))


def test_an_existing_run_dir_is_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.csv").write_text(GOOD)
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([str(tmp_path / "in.csv"), "--out", str(out), *TARGET]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(tmp_path / "in.csv"), "--out", str(empty), *TARGET]) == 0
    assert (empty / "study.toml").is_file()


def test_parquet_source_names_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.read_csv(pd.io.common.StringIO(GOOD))
    frame.to_parquet(tmp_path / "in.parquet")
    assert main([str(tmp_path / "in.parquet"), "--out", str(tmp_path / "ok"), *TARGET]) == 0
    curves = load_run(tmp_path / "ok").curves.sort_values(["batch_size", "step"])
    assert curves["step"].tolist() == [10, 20, 10] and curves["batch_size"].tolist() == [64, 64, 128]
    frame["step"] = [10, 10, 10]
    frame.to_parquet(tmp_path / "dup.parquet")
    assert main([str(tmp_path / "dup.parquet"), "--out", str(tmp_path / "bad"), *TARGET]) == 2
    assert "row 2: trial 'b64_lr0.1_s0' repeats step 10 (first at row 1)" in capsys.readouterr().err


HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.mark.skipif(HAS_TENSORBOARD, reason="tensorboard is installed here")
def test_tensorboard_without_the_package_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "logs" / "bs64_lr0.1").mkdir(parents=True)
    (tmp_path / "logs" / "bs64_lr0.1" / "events.out.tfevents.1.host").write_bytes(b"")
    assert main([str(tmp_path / "logs"), "--out", str(tmp_path / "run"), *TARGET]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install tensorboard" in err
    assert not (tmp_path / "run").exists()


def test_tensorboard_runs_named_by_pattern(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    tbx = pytest.importorskip("tensorboardX")
    for bs, lr, s_trial in ((64, 0.1, 900), (64, 0.2, 700), (256, 0.2, 300), (256, 0.4, 260)):
        with tbx.SummaryWriter(str(tmp_path / "logs" / f"bs{bs}_lr{lr}")) as w:
            for step in (10, 100, 200, 400, 800, 1600):
                w.add_scalar("eval/acc", float(np.clip(0.85 + 0.1 * np.log(step / s_trial), 0, 1)), step)
                w.add_scalar("lr", lr, step)
    assert (
        main(
            [
                str(tmp_path / "logs"),
                "--out",
                str(tmp_path / "run"),
                "--map",
                "val_accuracy=eval/acc",
                "--run-pattern",
                r"bs(?P<batch_size>\d+)_lr(?P<lr>[0-9.e-]+)",
                *TARGET,
            ]
        )
        == 0
    )
    run = load_run(tmp_path / "run")
    assert set(run.curves["trial_id"]) == {"bs64_lr0.1", "bs64_lr0.2", "bs256_lr0.2", "bs256_lr0.4"}
    assert "lr/scalar" in run.curves.columns
    s = per_batch_summary(run).set_index("batch_size")
    assert s.loc[64, "steps_to_target"] == pytest.approx(700, rel=0.02)
    assert s.loc[256, "steps_to_target"] == pytest.approx(260, rel=0.02)


def test_tensorboard_runs_described_by_hparams(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    tbx = pytest.importorskip("tensorboardX")
    from tensorboardX.summary import hparams

    for i, (bs, lr) in enumerate(((32, 0.05), (128, 0.1))):
        with tbx.SummaryWriter(str(tmp_path / "logs" / f"run{i}")) as w:
            for summary in hparams({"batch_size": bs, "learning_rate": lr, "seed": 0}, {})[:2]:
                w.file_writer.add_summary(summary)
            for step in (10, 100, 1000):
                w.add_scalar("val_accuracy", 0.8 + 0.02 * np.log10(step) * (1 + i), step)
    assert main([str(tmp_path / "logs"), "--out", str(tmp_path / "run"), "--map", "lr=learning_rate", *TARGET]) == 0
    t = load_run(tmp_path / "run").curves.groupby("trial_id")[["batch_size", "lr", "seed"]].first()
    assert t.to_dict("index") == {
        "run0": {"batch_size": 32, "lr": 0.05, "seed": 0},
        "run1": {"batch_size": 128, "lr": 0.1, "seed": 0},
    }


def test_the_module_runs_from_the_shell(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(GOOD.replace("0.9\n", "x\n"))
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.import_sweep", "in.csv", "--out", "run", *TARGET],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and re.search(r"line 3: column 'val_accuracy'", proc.stderr)
