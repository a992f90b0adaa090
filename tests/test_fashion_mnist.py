"""The fashion_mnist trainable: averaged accumulation, determinism, resume, divergence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from support import trial, write_tiny_fashion_mnist
from trainables import get
from trainables.schedule import eval_steps


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_tiny_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def config(data_dir: Path, **kw: Any) -> dict[str, Any]:
    return {"batch_size": 256, "micro_batch_size": 256, "lr": 0.05, "seed": 3, "optimizer": "sgd",
            "momentum": 0.9, "weight_decay": 0.0, "warmup_examples": 0, "max_steps": 20,
            "data_dir": str(data_dir), "val_size": 200, **kw}


def run(cfg: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    rows, ckpts = [], []

    def report(metrics: dict, checkpoint: dict | None = None) -> None:
        rows.append(dict(metrics))
        ckpts.append(checkpoint)

    get("fashion_mnist")(trial(cfg), report)
    return rows, ckpts


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adamw", 0.001), ("lars", 0.5)])
def test_accumulation_averages_gradients(data_dir: Path, optimizer: str, lr: float) -> None:
    """Batch 256 as 8 micro-batches of 32 makes the same updates as one pass of 256."""
    one_rows, one_ck = run(config(data_dir, optimizer=optimizer, lr=lr))
    acc_rows, acc_ck = run(config(data_dir, optimizer=optimizer, lr=lr, micro_batch_size=32))
    assert [r["step"] for r in one_rows] == [r["step"] for r in acc_rows]
    assert one_rows[-1]["step"] == 20
    for a, b in zip(one_rows, acc_rows):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5, abs=1e-6)
    for name, p in one_ck[-1]["model"].items():
        torch.testing.assert_close(p, acc_ck[-1]["model"][name], rtol=1e-4, atol=1e-6)


def test_same_seed_same_curve_other_seed_other_curve(data_dir: Path) -> None:
    a, _ = run(config(data_dir))
    b, _ = run(config(data_dir))
    c, _ = run(config(data_dir, seed=4))
    strip = lambda rows: [(r["step"], r["train_loss"], r["val_loss"]) for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_resume_continues_the_same_curve(data_dir: Path) -> None:
    full, ckpts = run(config(data_dir, max_steps=60))
    k = len(full) // 2
    resumed, _ = run(config(data_dir, max_steps=60, _checkpoint=ckpts[k - 1]))
    assert resumed[0]["step"] == full[k]["step"]
    for a, b in zip(full[k:], resumed):
        assert (a["step"], a["examples_seen"]) == (b["step"], b["examples_seen"])
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)


def test_divergence_stops_at_once(data_dir: Path) -> None:
    rows, _ = run(config(data_dir, lr=50.0, max_steps=200))
    assert rows[-1].get("diverged") is True
    assert rows[-1]["step"] < 200
    assert not any(r.get("diverged") for r in rows[:-1])


def test_stops_at_target_and_reports_the_contract_columns(data_dir: Path) -> None:
    rows, _ = run(config(data_dir, lr=0.1, batch_size=32, micro_batch_size=32, max_steps=400,
                         target_metric="val_accuracy", target_mode="max", target_value=0.6))
    assert rows[-1]["val_accuracy"] >= 0.6
    assert all(r["val_accuracy"] < 0.6 for r in rows[:-1])
    assert rows[-1]["step"] < 400
    r = rows[-1]
    assert r["examples_seen"] == r["step"] * 32
    assert r["epoch"] == pytest.approx(r["examples_seen"] / 1000)  # 1200 examples - 200 validation
    for col in ("wall_time_s", "train_loss", "val_loss", "lr_current"):
        assert isinstance(r[col], float)


def test_eval_steps_place_a_crossing_within_five_percent() -> None:
    steps = eval_steps(100_000)
    assert steps[0] == 1 and steps[-1] == 100_000
    assert all(b / a <= 1.05 or b - a == 1 for a, b in zip(steps, steps[1:]))
    assert len(steps) < 300


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        run(config(tmp_path))


def test_noise_scale_finite_positive_and_grows_as_loss_falls() -> None:
    """McCandlish et al.: B_simple grows as training progresses (real Fashion-MNIST)."""
    from trainables.fashion_mnist import DEFAULT_DATA_DIR

    rows, _ = run({"batch_size": 128, "micro_batch_size": 32, "lr": 0.05, "seed": 0, "optimizer": "sgd",
                   "momentum": 0.9, "max_steps": 1500, "data_dir": DEFAULT_DATA_DIR,
                   "noise_scale_every": 5, "sharpness_examples": 0})
    measured = [(r["step"], r["val_loss"], r["grad_noise_scale"]) for r in rows if r["step"] >= 100]
    assert all(b is not None and 0 < b < float("inf") for _, _, b in measured)
    early = [b for s, _, b in measured if s <= 200]
    late = [b for s, _, b in measured if s >= 1000]
    assert measured[-1][1] < measured[0][1]  # the loss fell
    assert min(late) > 2 * max(early), (early, late)


def test_sharpness_reported_on_the_last_evaluation(data_dir: Path) -> None:
    rows, _ = run(config(data_dir, max_steps=30, sharpness_examples=256))
    assert "sharpness" not in rows[0]
    assert rows[-1]["sharpness"] > 0
    rows_off, _ = run(config(data_dir, max_steps=30, sharpness_examples=0))
    assert rows_off[-1]["sharpness"] is None
