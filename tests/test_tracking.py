"""The study's [tracking] trackers, read back with each tracker's own reader: MLflow's
MlflowClient on the file store, TensorBoard's EventAccumulator (and tbparse for hparams),
W&B's `wandb leet inspect` on its offline files. One smoke run (tests/shared_smoke.py) with
every tracker on; each trial must be one run tagged with batch size, LR, seed and status,
its curves the run's metrics stepped by `step`, and the fits a study run's metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from shared_smoke import smoke_run

from orchestrator.study import load_study
from orchestrator.tracking import flatten_fits
from orchestrator.tracking.common import TrialWatch
from support import launch
from trainables.contract import UsageError, read_curves


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_run(tmp_path_factory)


@pytest.fixture(scope="module")
def trials(run_dir: Path) -> pd.DataFrame:
    return pq.read_table(run_dir / "trials.parquet").to_pandas().set_index("trial_id")


@pytest.fixture(scope="module")
def curves(run_dir: Path) -> pd.DataFrame:
    return read_curves(run_dir / "curves").to_pandas().sort_values(["trial_id", "step"])


@pytest.fixture(scope="module")
def fits(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "report" / "fits.json").read_text())


def _curve(curves: pd.DataFrame, trial_id: str, metric: str = "val_loss") -> list[tuple[int, float]]:
    c = curves[(curves.trial_id == trial_id) & curves[metric].notna()]
    return list(zip(c.step.astype(int), c[metric].astype(float)))


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]], rel: float = 1e-9) -> bool:
    """The same steps, and values equal to ``rel`` (TensorBoard's event files hold float32)."""
    return [s for s, _ in got] == [s for s, _ in want] and [v for _, v in got] == pytest.approx(
        [v for _, v in want], rel=rel
    )


# --------------------------------------------------------------------------- MLflow


def test_mlflow_every_trial_a_run_with_its_tags_and_curves(
    run_dir: Path, trials: pd.DataFrame, curves: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to read a file store
    from mlflow.tracking import MlflowClient

    client = MlflowClient((run_dir / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("nqm")
    assert exp is not None
    parent = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["run_id"]
    children = [r for r in client.search_runs([exp.experiment_id], max_results=1000) if r.info.run_id != parent]
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(trials.index)
    for r in children:
        t = trials.loc[r.data.tags["trial_id"]]
        tags = r.data.tags
        assert (int(tags["batch_size"]), float(tags["lr"]), int(tags["seed"])) == (
            t.batch_size,
            pytest.approx(t.lr),
            t.seed,
        )
        assert tags["status"] == t.status and tags["mlflow.parentRunId"] == parent
        assert r.info.status == "FINISHED" and r.data.params["batch_size"] == str(t.batch_size)
        # the whole curve, each evaluation once, with the trial's step as MLflow's step
        history = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "val_loss"))
        assert _same(history, _curve(curves, tags["trial_id"]))
    examples = client.get_metric_history(children[0].info.run_id, "examples_seen")
    assert sorted((m.step, m.value) for m in examples) == _curve(
        curves, children[0].data.tags["trial_id"], "examples_seen"
    )


def test_mlflow_study_run_holds_the_fits(run_dir: Path, fits: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient((run_dir / "mlruns").resolve().as_uri())
    study = client.get_run(json.loads((run_dir / "tracking.json").read_text())["mlflow"]["run_id"])
    assert study.info.status == "FINISHED" and study.data.tags["kind"] == "study"
    crit = fits["critical_batch"]
    assert crit["b_crit"] is not None
    assert study.data.metrics["critical_batch.b_crit"] == pytest.approx(crit["b_crit"])
    assert study.data.metrics["critical_batch.b_crit_ci95_low"] == pytest.approx(crit["b_crit_ci95"][0])
    per_batch = client.get_metric_history(study.info.run_id, "per_batch.steps_to_target")
    assert _same(
        sorted((m.step, m.value) for m in per_batch),
        [(p["batch_size"], p["steps_to_target"]) for p in fits["per_batch"] if p["steps_to_target"] is not None],
    )
    assert {"fits.json", "report.pdf"} <= {a.path for a in client.list_artifacts(study.info.run_id)}


# --------------------------------------------------------------------------- TensorBoard


def _tb_trial(name: str) -> str:
    """The trial id of a TensorBoard run: batch_size=B/lr=..._seed=S_<trial_id>."""
    return name.split("_seed=")[1].split("_", 1)[1]


def test_tensorboard_every_trial_a_run_of_its_curves(run_dir: Path, trials: pd.DataFrame, curves: pd.DataFrame) -> None:
    from tbparse import SummaryReader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted((run_dir / "tensorboard").glob("batch_size=*/*"))
    ids = {_tb_trial(d.name): d for d in runs}
    assert sorted(ids) == sorted(trials.index)
    for tid, d in ids.items():
        assert d.parent.name == f"batch_size={trials.loc[tid].batch_size}"
        acc = EventAccumulator(str(d)).Reload()
        got = [(e.step, e.value) for e in acc.Scalars("val_loss")]
        assert _same(got, _curve(curves, tid), rel=1e-6)
    hp = SummaryReader(str(run_dir / "tensorboard"), extra_columns={"dir_name"}).hparams
    hp = hp.pivot(index="dir_name", columns="tag", values="value")
    assert len(hp) == len(trials)
    for dir_name, row in hp.iterrows():
        t = trials.loc[_tb_trial(str(dir_name))]
        assert (int(row.batch_size), float(row.lr), int(row.seed), row.status) == (
            t.batch_size,
            pytest.approx(t.lr),
            t.seed,
            t.status,
        )


def test_tensorboard_study_run_holds_the_fits(run_dir: Path, fits: dict[str, Any]) -> None:
    from tbparse import SummaryReader

    s = SummaryReader(str(run_dir / "tensorboard" / "study")).scalars
    b_crit = s[s.tag == "critical_batch.b_crit"]
    assert list(b_crit.step) == [0] and b_crit.value.iloc[0] == pytest.approx(
        fits["critical_batch"]["b_crit"], rel=1e-6
    )
    steps = s[s.tag == "per_batch.steps_to_target"].sort_values("step")
    assert _same(
        list(zip(steps.step, steps.value)),
        [(p["batch_size"], p["steps_to_target"]) for p in fits["per_batch"] if p["steps_to_target"] is not None],
        rel=1e-6,
    )


# --------------------------------------------------------------------------- W&B


def _inspect(path: Path, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *args, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_wandb_offline_every_trial_a_run_of_its_curves(
    run_dir: Path, trials: pd.DataFrame, curves: pd.DataFrame, fits: dict[str, Any]
) -> None:
    runs = sorted((run_dir / "wandb").glob("*run-*"))
    assert runs and all(d.name.startswith("offline-run-") for d in runs)  # never online unless asked
    with ThreadPoolExecutor(4) as pool:  # one reader process per run, a few at a time
        summaries = dict(zip(runs, pool.map(lambda d: json.loads(_inspect(d, "--summary")), runs)))
    by_name = {s["config"].get("trial_id", s["name"]): (d, s) for d, s in summaries.items()}
    assert sorted(by_name) == sorted([*trials.index, "study"])
    for tid, (_d, s) in by_name.items():
        assert s["state"] == "finished" and s["project"] == "nqm"
        if tid == "study":
            assert s["summary"]["critical_batch.b_crit"] == pytest.approx(fits["critical_batch"]["b_crit"])
            continue
        t, cfg = trials.loc[tid], s["config"]
        assert s["run_id"] == tid
        assert (cfg["batch_size"], cfg["lr"], cfg["seed"], cfg["status"]) == (
            t.batch_size,
            pytest.approx(t.lr),
            t.seed,
            t.status,
        )
        assert s["summary"]["val_loss"] == pytest.approx(_curve(curves, tid)[-1][1])
    # one trial's whole curve from its history records, stepped by the trial's step
    tid = trials.index[0]
    records = [json.loads(line) for line in _inspect(by_name[tid][0]).splitlines() if line.strip()]
    history = [r["history"]["item"] for r in records if r.get("type") == "history"]
    got = sorted((int(h["_step"]), float(h["val_loss"])) for h in history if "val_loss" in h)
    assert _same(got, _curve(curves, tid))


# --------------------------------------------------------------------------- at launch, and the rules


def test_a_tracker_not_installed_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    # the launcher's Python as it would be without mlflow: its import system finds no such package
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'mlflow' or name.startswith('mlflow.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    out = tmp_path / "run"
    r = launch(
        "--study",
        "nqm",
        "--budget",
        "smoke",
        "--set",
        "tracking.mlflow=true",
        "--out",
        str(out),
        env={"PYTHONPATH": str(hide)},
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tracking.mlflow: mlflow is not installed")
    assert "pip install 'batchscale[mlflow]'" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("key", "value", "extra"),
    [("tracking.tensorboard", "true", "tensorboard"), ("tracking.wandb", '"offline"', "wandb")],
)
def test_every_tracker_names_its_extra(key: str, value: str, extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator.tracking_spec as spec_mod

    monkeypatch.setattr(spec_mod, "_installed", lambda module: False)
    with pytest.raises(UsageError, match=rf"^{key}: .* is not installed: pip install 'batchscale\[{extra}\]'"):
        load_study("nqm", [f"{key}={value}"], budget="smoke")


def test_wandb_is_offline_or_online_only_when_named() -> None:
    with pytest.raises(UsageError, match=r"^tracking.wandb: "):
        load_study("nqm", ["tracking.wandb=true"], budget="smoke")
    assert load_study("nqm", budget="smoke").tracking.wandb is False


def test_status_rule_and_each_step_once() -> None:
    early: set[str] = set()
    w = TrialWatch(early)
    assert w.observe("a", {"step": 1, "val_loss": 2.0, "train_loss": float("nan")}) == (1, {"val_loss": 2.0})
    assert w.observe("a", {"step": 1, "val_loss": 2.0}) is None  # a resumed trial reporting a step again
    assert w.observe("a", {"done": True}) is None
    assert w.status("a") == "completed"
    early.add("a")
    assert w.status("a") == "early_stopped"  # the scheduler's set, shared as the sink's
    w.observe("b", {"step": 3, "diverged": True, "val_loss": float("inf")})
    assert w.status("b") == "diverged" and w.status("c", failed=True) == "failed"
    restored = TrialWatch(early)
    restored.load(json.loads(json.dumps(w.state())))
    assert restored.observe("a", {"step": 1, "val_loss": 2.0}) is None and restored.status("b") == "diverged"


def test_fits_flatten_to_metrics() -> None:
    scalars, per_batch, labels = flatten_fits(
        {
            "per_batch": [{"batch_size": 64, "best_lr": 0.2, "lr_on_edge": False}, {"batch_size": 16, "best_lr": 0.1}],
            "critical_batch": {"b_crit": 700.0, "b_crit_ci95": [500.0, 900.0], "s_min": None, "ci_method": "bootstrap"},
            "lr_scaling": {"consistent": {"sqrt": True}},
        }
    )
    assert scalars == {
        "critical_batch.b_crit": 700.0,
        "critical_batch.b_crit_ci95_low": 500.0,
        "critical_batch.b_crit_ci95_high": 900.0,
    }
    assert per_batch == {"per_batch.best_lr": [(16, 0.1), (64, 0.2)]}
    assert labels == {"critical_batch.ci_method": "bootstrap", "lr_scaling.consistent.sqrt": "true"}
