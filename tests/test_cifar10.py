"""The cifar10 trainable on a tiny stand-in written in CIFAR-10's own format (pickled python
batches): the contract's rows, averaged accumulation under ghost BN, resume, and bad data
directories refused at launch (exit 2, naming the path and what is missing)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from orchestrator.launch import main
from support import run_trainable, trial
from trainables import cifar10
from trainables.cifar10 import FILES, TrainableConfig, preflight
from trainables.schedule import eval_steps
from trainables.subsets import train_subset

ROW = {
    "step",
    "examples_seen",
    "epoch",
    "wall_time_s",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "lr_current",
    "train_eval_loss",
    "train_eval_accuracy",
}


def write_cifar(directory: Path, per_batch: int = 32, test: int = 64, seed: int = 0) -> Path:
    """Five training batches and a test batch as CIFAR-10 ships them: class k brightens a band."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        n = test if name == "test_batch" else per_batch
        labels = rng.integers(0, 10, n)
        x = rng.integers(0, 100, (n, 3, 32, 32), dtype=np.uint8)
        for k in range(10):
            x[labels == k, k % 3, 3 * k : 3 * k + 5, :] += 150
        with (directory / name).open("wb") as f:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels.tolist(),
                    b"data": x.reshape(n, 3072),
                    b"filenames": [b"x.png"] * n,
                },
                f,
            )
    return directory


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("cifar"))


def config(data_dir: Path, **kw: Any) -> dict[str, Any]:
    return {
        "batch_size": 32,
        "lr": 0.2,
        "momentum": 0.85,
        "max_steps": 6,
        "warmup_examples": 64,
        "data_dir": str(data_dir),
        "widths": [4, 8, 8],
        "tta": 0,
        "eval_ratio": 2.0,
        **kw,
    }


def run(cfg: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    return run_trainable("cifar10", cfg)


def test_trains_and_reports_the_contract_columns(data_dir: Path) -> None:
    rows, ckpts = run(config(data_dir, tta=1))
    assert [r["step"] for r in rows] == eval_steps(6, 2.0)
    for r in rows:
        assert set(r) >= ROW and r["examples_seen"] == 32 * r["step"]
        assert r["epoch"] == pytest.approx(r["step"] * 32 / 160)
        assert all(np.isfinite(r[k]) for k in ROW)
        assert 0 <= r["val_accuracy"] <= 1
    assert rows[0]["lr_current"] == pytest.approx(0.2 * 32 / 64)  # warmup in examples
    assert rows[-1]["lr_current"] < 0.2  # linear decay towards 0 at the cap
    assert {"model", "optimizer", "step"} <= set(ckpts[-1]) and ckpts[-1]["step"] == 6


def test_a_subset_trial_trains_on_its_subset_only(data_dir: Path) -> None:
    """train_fraction 0.5 of the 160 training images: epochs count 80, and the 80 images
    outside the subset never reach the model (a label of no class there would fail the loss)."""
    rows, _ = run(config(data_dir, train_fraction=0.5))
    assert rows[-1]["epoch"] == pytest.approx(6 * 32 / 80)
    data = cifar10.load_data(str(data_dir))
    keep = train_subset(len(data.y_train), 0.5).numpy()
    poisoned = data.y_train.copy()
    poisoned[np.setdiff1d(np.arange(len(poisoned)), keep)] = 10  # no such class: cross-entropy raises on it
    bad = cifar10.Arrays(data.x_train, poisoned, data.x_val, data.y_val)
    out: list[dict] = []
    cifar10.train_on(trial(config(data_dir, train_fraction=0.5)), lambda m, checkpoint=None: out.append(m), bad)
    assert len(out) == len(rows) and all(np.isfinite(r["train_loss"]) for r in out)
    with pytest.raises((IndexError, RuntimeError)):  # the control: all the data meets the bad labels
        cifar10.train_on(trial(config(data_dir)), lambda m, checkpoint=None: None, bad)


def test_accumulation_4x16_equals_1x64_with_ghost_bn_of_the_micro_size(data_dir: Path) -> None:
    one_rows, one = run(config(data_dir, batch_size=64, max_steps=3, ghost_batch=16))
    acc_rows, acc = run(config(data_dir, batch_size=64, micro_batch_size=16, max_steps=3, ghost_batch=16))
    for a, b in zip(one_rows, acc_rows, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    for name, p in one[-1]["model"].items():
        torch.testing.assert_close(p, acc[-1]["model"][name], rtol=1e-3, atol=1e-5)


def test_resume_continues_the_same_curve(data_dir: Path) -> None:
    full, ckpts = run(config(data_dir, max_steps=8))
    k = [r["step"] for r in full].index(4)
    rest, rest_ckpts = run({**config(data_dir, max_steps=8), "_checkpoint": ckpts[k]})
    assert [r["step"] for r in rest] == [r["step"] for r in full[k + 1 :]]
    for a, b in zip(full[k + 1 :], rest):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_accuracy"] == b["val_accuracy"]
        assert a["weight_distance"] == pytest.approx(b["weight_distance"], rel=1e-5)
    for name, p in ckpts[-1]["model"].items():
        torch.testing.assert_close(p, rest_ckpts[-1]["model"][name])


def test_preflight_accepts_the_real_format(data_dir: Path) -> None:
    preflight(TrainableConfig(data_dir=str(data_dir)))


def _launch(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> str:
    out = tmp_path / "run"
    assert main(["--study", "cifar10-resnet", "--set", f"trainable_config.data_dir={data}", "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_missing_or_malformed_data_is_exit_2_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _launch(tmp_path, tmp_path / "nowhere", capsys)
    assert str(tmp_path / "nowhere") in err and "data_batch_1" in err and "test_batch" in err
    partial = write_cifar(tmp_path / "partial", per_batch=4, test=4)
    (partial / "data_batch_3").unlink()
    err = _launch(tmp_path, partial, capsys)
    assert "data_batch_3" in err and "data_batch_1" not in err
    broken = write_cifar(tmp_path / "broken", per_batch=4, test=4)
    (broken / "data_batch_2").write_bytes(b"not a pickle")
    err = _launch(tmp_path, broken, capsys)
    assert str(broken / "data_batch_2") in err and "b'data'" in err
    with (broken / "data_batch_2").open("wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f)
    assert "N×3072" in _launch(tmp_path, broken, capsys)
