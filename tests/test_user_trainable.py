"""A researcher's own trainable, outside the repo: written from the template, named as a
file or as a module, run as a smoke sweep locally and on the dev Slurm cluster; and every
way to name it wrong is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from orchestrator.launch import main
from support import launch
from trainables.contract import read_curves

STUDY = """name = "mine"
trainable = "{trainable}"
[trainable_config]
features = 10
[search]
batch_sizes = [16, 64, 256]
lr = {{ min = 0.01, max = 1.0, points = 3 }}
[budget]
max_examples = 20000
[target]
metric = "val_accuracy"
value = 0.9
"""


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A directory outside the repo holding mylab/train.py, written by --new-trainable."""
    assert main(["--new-trainable", str(tmp_path / "mylab" / "train.py")]) == 0
    return tmp_path


def _study(lab: Path, trainable: str, name: str = "study.toml", **replace: str) -> Path:
    text = STUDY.format(trainable=trainable)
    for a, b in replace.items():
        text = text.replace(a, b)
    (lab / name).write_text(text)
    return lab / name


# mylab.train behind a gate: the first two trials each wait (at most 120 s) until two have
# started, so two run at once, which on one CPU per node is one on each node. Without it
# the head's reused actor can finish all nine 0.1 s trials before the other node's first
# actor is up (CI saw that once).
PAIRED = """from pathlib import Path
import time
import uuid
from mylab.train import *  # noqa: F403  (its TrainableConfig, METRICS and capabilities)
from mylab.train import train as _train

GATE = Path({gate!r})


def train(config, report):
    GATE.mkdir(exist_ok=True)
    (GATE / uuid.uuid4().hex).touch()
    deadline = time.monotonic() + 120
    while len(list(GATE.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    _train(config, report)
"""


def _assert_run(run_dir: Path) -> None:
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert len(trials) == 9 and set(trials.status) <= {"completed", "early_stopped"}
    fits = json.loads((run_dir / "report" / "fits.json").read_text())
    assert [p["batch_size"] for p in fits["per_batch"]] == [16, 64, 256]
    assert all(p["reached"] > 0 for p in fits["per_batch"])  # the template's task is learnable
    curves = read_curves(run_dir / "curves").to_pandas()  # the helper's ‖θ − θ₀‖ reaches the curves
    assert (curves.weight_distance > 0).all()


def test_the_template_as_a_file_runs_a_local_sweep(lab: Path) -> None:
    study = _study(lab, "mylab/train.py:train")  # relative to the study file
    r = launch("--study", str(study), "--budget", "smoke", "--out", str(lab / "run"), cwd=lab)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'trainable = "{lab / "mylab" / "train.py"}:train"' in (lab / "run" / "study.toml").read_text()
    _assert_run(lab / "run")


@pytest.mark.slurm
def test_the_template_as_a_module_runs_on_the_dev_slurm_cluster(lab: Path, slurm_env: dict[str, str]) -> None:
    (lab / "mylab" / "paired.py").write_text(PAIRED.format(gate=str(lab / "started")))
    study = _study(lab, "mylab.paired:train")
    dry = launch("--cluster", "slurm", "--study", str(study), "--dry-run", cwd=lab)
    assert f"# trainable: mylab.paired:train (imported from cwd {lab})" in dry.stdout
    r = launch(
        "--cluster",
        "slurm",
        "--study",
        str(study),
        "--budget",
        "smoke",
        "--nodes",
        "2",
        "--cpus-per-node",
        "1",
        "--time",
        "00:10:00",
        "--out",
        str(lab / "run"),
        "--follow",
        cwd=lab,
        env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_run(lab / "run")
    assert set(pq.read_table(lab / "run" / "trials.parquet").column("node").to_pylist()) == {"n1", "n2"}


@pytest.mark.parametrize(
    "trainable,write,says",
    [
        ("mylab/nope.py:train", None, "trainable: no such file mylab/nope.py"),
        ("mylab/train.py:trian", None, "'trian' not found in "),
        ("nomod.x:train", None, "trainable: no module 'nomod.x' importable from "),
        ("mylab/broken.py:train", "import nonexistent_pkg\n", "ModuleNotFoundError: No module named 'nonexistent_pkg'"),
        ("mylab/onearg.py:train", "def train(config):\n    pass\n", "train(config) in "),
        ("mylab/train.py", None, "is neither a built-in"),
    ],
)
def test_a_wrong_trainable_is_one_line_exit_2(
    lab: Path, capsys: pytest.CaptureFixture[str], trainable: str, write: str | None, says: str
) -> None:
    if write is not None:
        (lab / trainable.split(":")[0]).write_text(write)
    study = _study(lab, trainable)
    cwd = Path.cwd()
    os.chdir(lab)
    try:
        assert main(["--study", str(study), "--out", str(lab / "run")]) == 2
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: trainable: ") and says in err, err
    assert not (lab / "run").exists()


def test_its_own_config_model_and_metrics_are_checked(lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_key = _study(lab, "mylab/train.py:train", "a.toml", **{"features = 10": "featurez = 10"})
    assert main(["--study", str(bad_key), "--out", str(lab / "run")]) == 2
    assert capsys.readouterr().err.strip() == "error: trainable_config.featurez: unknown key"
    bad_metric = _study(lab, "mylab/train.py:train", "b.toml", **{'metric = "val_accuracy"': 'metric = "acc"'})
    assert main(["--study", str(bad_metric), "--out", str(lab / "run")]) == 2
    assert "target.metric: 'acc' is not reported by trainable" in capsys.readouterr().err
    assert main(["--new-trainable", str(lab / "mylab" / "train.py")]) == 2  # never overwrites
    assert "exists; not overwriting it" in capsys.readouterr().err
    assert not (lab / "run").exists()
