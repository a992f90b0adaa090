"""The fashion_mnist trainable: averaged accumulation, determinism, resume, divergence."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from support import trial, write_tiny_fashion_mnist
from trainables import classifier, get
from trainables.contract import FINAL_COLUMNS, METRIC_COLUMNS
from trainables.fashion_mnist import TrainableConfig, build_model, load_data
from trainables.forgetting import probe_windows
from trainables.schedule import eval_steps, lr_at
from trainables.sharpness import fixed_subset, top_hessian_eigenvalue
from trainables.subsets import train_subset

# What every evaluation row reports (contract "curves/ columns"); the last one adds sharpness.
ROW_KEYS = {"step", "examples_seen", *METRIC_COLUMNS}
assert {
    "step",
    "examples_seen",
    "epoch",
    "wall_time_s",
    "train_loss",
    "train_eval_loss",
    "train_eval_accuracy",
    "val_loss",
    "val_accuracy",
    "lr_current",
    "batch_size_current",
    "momentum_current",
    "grad_noise_scale",
    "weight_distance",
} == ROW_KEYS


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_tiny_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def config(data_dir: Path, **kw: Any) -> dict[str, Any]:
    return {
        "batch_size": 256,
        "micro_batch_size": 256,
        "lr": 0.05,
        "seed": 3,
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 0.0,
        "warmup_examples": 0,
        "max_steps": 20,
        "data_dir": str(data_dir),
        "val_size": 200,
        **kw,
    }


def run(cfg: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    rows, ckpts = [], []

    def report(metrics: dict, checkpoint: dict | None = None) -> None:
        rows.append(dict(metrics))
        ckpts.append(checkpoint)

    get("fashion_mnist")(trial(cfg), report)
    return rows, ckpts


def model_of(data_dir: Path, state: dict | None = None, seed: int = 3, **settings: Any) -> torch.nn.Module:
    """The trainable's model: its initial weights under ``seed`` (as a trial draws them), or ``state``."""
    torch.manual_seed(seed)
    model = build_model(TrainableConfig(data_dir=str(data_dir), val_size=200, **settings))
    if state is not None:
        model.load_state_dict(state)
    return model


def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in state.values()])


def first_update(data_dir: Path, **kw: Any) -> torch.Tensor:
    """The parameter change of a trial's first optimizer step (weights after step 1 - initial)."""
    _, ckpts = run(config(data_dir, max_steps=1, sharpness_examples=0, **kw))
    return flat(ckpts[0]["model"]) - flat(model_of(data_dir).state_dict())


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
    assert len(resumed) == len(full) - k  # the resumed run reaches the same end, no row more or less
    for a, b in zip(full[k:], resumed, strict=True):
        assert (a["step"], a["examples_seen"]) == (b["step"], b["examples_seen"])
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        # θ₀ is rebuilt from the seed on resume: the distance goes on as if never interrupted
        assert a["weight_distance"] == pytest.approx(b["weight_distance"], rel=1e-6)


@pytest.mark.parametrize("micro", [256, 64])
def test_weight_distance_is_the_norm_from_the_seeded_initial_weights(data_dir: Path, micro: int) -> None:
    """Each row's ``weight_distance`` against ‖θ − θ₀‖₂ computed here from that row's
    checkpoint and the model the seed draws; it starts above 0 and grows under a small LR."""
    rows, ckpts = run(config(data_dir, max_steps=30, micro_batch_size=micro, lr=0.01))
    theta0 = torch.cat([p.detach().reshape(-1).double() for p in model_of(data_dir).parameters()])
    for row, ckpt in zip(rows, ckpts, strict=True):
        theta = torch.cat([p.detach().reshape(-1).double() for p in model_of(data_dir, ckpt["model"]).parameters()])
        assert row["weight_distance"] == pytest.approx(float(torch.linalg.vector_norm(theta - theta0)), rel=1e-5)
    distances = [r["weight_distance"] for r in rows]
    assert distances[0] > 0 and distances == sorted(distances)


def test_divergence_stops_at_once(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trial stops on the first update whose loss is non-finite or > divergence_factor
    (10) x the first loss, and reports that step's loss: no evaluation, no step after it."""
    losses: list[float] = []  # the training loss of every update, in order
    accumulate = classifier.accumulate_gradients

    def spy(*args: Any, **kwargs: Any) -> float:
        losses.append(accumulate(*args, **kwargs))
        return losses[-1]

    monkeypatch.setattr(classifier, "accumulate_gradients", spy)
    rows, _ = run(config(data_dir, lr=50.0, max_steps=200))
    last, first = rows[-1], losses[0]
    assert last.get("diverged") is True
    assert not any(r.get("diverged") for r in rows[:-1])
    bad = [i + 1 for i, x in enumerate(losses) if not math.isfinite(x) or x > 10 * first]
    assert bad, losses
    assert last["step"] == bad[0] == len(losses) < 200  # the first bad update, and the last one run
    assert last["train_loss"] == losses[-1] or not (math.isfinite(last["train_loss"]) or math.isfinite(losses[-1]))
    assert not math.isfinite(last["train_loss"]) or last["train_loss"] > 10 * first
    assert "val_loss" not in last  # the blown-up weights are not evaluated
    # the evaluations before it are of finite losses below the factor
    assert rows[0]["step"] == 1 and rows[0]["train_loss"] == first
    assert all(math.isfinite(r["train_loss"]) and r["train_loss"] <= 10 * first for r in rows[:-1])


def test_stops_at_target_and_reports_the_contract_columns(data_dir: Path) -> None:
    rows, ckpts = run(
        config(
            data_dir,
            lr=0.1,
            batch_size=32,
            micro_batch_size=32,
            max_steps=400,
            target_metric="val_accuracy",
            target_mode="max",
            target_value=0.6,
        )
    )
    assert rows[-1]["val_accuracy"] >= 0.6
    assert all(r["val_accuracy"] < 0.6 for r in rows[:-1])
    assert rows[-1]["step"] < 400
    # every evaluation of the schedule up to the target, each with exactly the contract's columns
    assert [r["step"] for r in rows] == [s for s in eval_steps(400) if s <= rows[-1]["step"]]
    assert all(set(r) == ROW_KEYS for r in rows[:-1])
    assert set(rows[-1]) == ROW_KEYS | set(FINAL_COLUMNS)  # the last adds the sharpness and the probe
    for r in rows:
        assert r["examples_seen"] == r["step"] * 32
        assert r["epoch"] == pytest.approx(r["examples_seen"] / 1000)  # 1200 examples - 200 validation
        assert r["lr_current"] == lr_at(0.1, r["step"] * 32, 0)
        assert 0.0 <= r["val_accuracy"] <= 1.0
        for col in ("wall_time_s", "train_loss", "val_loss"):
            assert isinstance(r[col], float) and math.isfinite(r[col]) and r[col] > 0, (col, r)
        assert r["grad_noise_scale"] is None or isinstance(r["grad_noise_scale"], float)
    assert [r["wall_time_s"] for r in rows] == sorted(r["wall_time_s"] for r in rows)
    assert isinstance(rows[-1]["sharpness"], float) and rows[-1]["sharpness"] > 0
    # the reported validation metrics are those of the weights at that step
    data = load_data(str(data_dir), 200)
    for r, ck in ((rows[0], ckpts[0]), (rows[-1], ckpts[-1])):
        loss, acc = classifier.evaluate(model_of(data_dir, ck["model"]), data.x_val, data.y_val)
        assert (r["val_loss"], r["val_accuracy"]) == (pytest.approx(loss, rel=1e-6), acc)
        # and train_eval_* those of the same weights on a fixed training subset of 200
        sub = fixed_subset(len(data.x_train), 200, seed=1)
        loss, acc = classifier.evaluate(model_of(data_dir, ck["model"]), data.x_train[sub], data.y_train[sub])
        assert (r["train_eval_loss"], r["train_eval_accuracy"]) == (pytest.approx(loss, rel=1e-6), acc)


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

    rows, _ = run(
        {
            "batch_size": 128,
            "micro_batch_size": 32,
            "lr": 0.05,
            "seed": 0,
            "optimizer": "sgd",
            "momentum": 0.9,
            "max_steps": 1500,
            "data_dir": DEFAULT_DATA_DIR,
            "noise_scale_every": 5,
            "sharpness_examples": 0,
        }
    )
    measured = [(r["step"], r["val_loss"], r["grad_noise_scale"]) for r in rows if r["step"] >= 100]
    assert all(b is not None and 0 < b < float("inf") for _, _, b in measured)
    early = [b for s, _, b in measured if s <= 200]
    late = [b for s, _, b in measured if s >= 1000]
    assert measured[-1][1] < measured[0][1]  # the loss fell
    assert min(late) > 2 * max(early), (early, late)


def test_sharpness_reported_on_the_last_evaluation(data_dir: Path) -> None:
    rows, ckpts = run(config(data_dir, max_steps=30, sharpness_examples=256))
    assert all("sharpness" not in r for r in rows[:-1])
    assert rows[-1]["step"] == 30 and rows[-1]["sharpness"] > 0

    # it is the top Hessian eigenvalue of the final weights on the fixed 256-example subset,
    # recomputed here the same way (same subset, same 20 power iterations)
    data = load_data(str(data_dir), 200)
    idx = fixed_subset(len(data.x_train), 256)
    x, y = data.x_train[idx], data.y_train[idx]

    def sharpness_of(state: dict) -> float:
        model = model_of(data_dir, state)
        return top_hessian_eigenvalue(lambda: F.cross_entropy(model(x), y), list(model.parameters()), max_iter=20)

    assert rows[-1]["sharpness"] == pytest.approx(sharpness_of(ckpts[-1]["model"]), rel=1e-5)
    # which the check can tell apart from other weights' (the first evaluation's) and another subset's
    assert rows[-1]["sharpness"] != pytest.approx(sharpness_of(ckpts[0]["model"]), rel=1e-2)
    other = fixed_subset(len(data.x_train), 256, seed=1)
    model = model_of(data_dir, ckpts[-1]["model"])
    on_other = top_hessian_eigenvalue(
        lambda: F.cross_entropy(model(data.x_train[other]), data.y_train[other]), list(model.parameters()), max_iter=20
    )
    assert rows[-1]["sharpness"] != pytest.approx(on_other, rel=1e-4)

    rows_off, _ = run(config(data_dir, max_steps=30, sharpness_examples=0))
    assert rows_off[-1]["sharpness"] is None


def test_warmup_ramps_the_learning_rate_linearly(data_dir: Path) -> None:
    """warmup_examples = 10 batches: lr_current = lr * examples / warmup, then constant, and
    the optimizer really steps with it (the first update is a tenth of the unwarmed one)."""
    rows, _ = run(config(data_dir, warmup_examples=2560, max_steps=15, sharpness_examples=0))
    assert [r["lr_current"] for r in rows] == [lr_at(0.05, r["step"] * 256, 2560) for r in rows]
    assert rows[0]["lr_current"] == pytest.approx(0.005)
    assert [r["lr_current"] for r in rows if r["step"] >= 10] == [0.05] * len([r for r in rows if r["step"] >= 10])
    assert [r["lr_current"] for r in rows if r["step"] < 10] == pytest.approx([0.005 * r["step"] for r in rows[:9]])
    warm, plain = first_update(data_dir, warmup_examples=2560), first_update(data_dir)
    assert float(warm @ plain / (plain @ plain)) == pytest.approx(0.1, rel=1e-3)
    assert float((warm - 0.1 * plain).norm() / warm.norm()) < 1e-2


def test_weight_decay_is_applied(data_dir: Path) -> None:
    """SGD's L2 weight decay adds wd * w to the gradient: the first update differs from the
    one without by exactly -lr * wd * w0, and the curve changes."""
    wd, lr = 0.1, 0.05
    decayed, plain = first_update(data_dir, weight_decay=wd), first_update(data_dir)
    w0 = flat(model_of(data_dir).state_dict())
    torch.testing.assert_close(decayed - plain, -lr * wd * w0, rtol=1e-2, atol=1e-7)
    with_wd, _ = run(config(data_dir, weight_decay=wd, sharpness_examples=0))
    without, _ = run(config(data_dir, sharpness_examples=0))
    assert [r["step"] for r in with_wd] == [r["step"] for r in without]
    assert with_wd[-1]["train_loss"] != pytest.approx(without[-1]["train_loss"], rel=1e-4)


def test_cnn_trains_and_reports_the_contract_columns(data_dir: Path) -> None:
    rows, ckpts = run(config(data_dir, model="cnn", hidden=64, max_steps=30, sharpness_examples=128))
    assert ckpts[-1]["model"]["0.weight"].shape == (4, 1, 3, 3)  # a conv layer: it is the CNN
    assert [r["step"] for r in rows] == eval_steps(30)
    assert all(set(r) == ROW_KEYS for r in rows[:-1]) and set(rows[-1]) == ROW_KEYS | set(FINAL_COLUMNS)
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]  # it learns
    assert math.isfinite(rows[-1]["sharpness"])
    # gradient accumulation averages for the CNN too
    acc, _ = run(config(data_dir, model="cnn", hidden=64, max_steps=30, sharpness_examples=128, micro_batch_size=64))
    assert [r["val_loss"] for r in acc] == pytest.approx([r["val_loss"] for r in rows], rel=1e-4, abs=1e-6)


def test_probe_windows_are_the_last_updates_and_the_start_of_their_epoch() -> None:
    w = probe_windows(steps=40, batch=64, n_train=1000, examples=256)  # 2.56 epochs, k = 4
    assert (w.recent, w.early) == (range(36, 40), range(32, 36))  # epoch 2 starts in update 32
    assert w.early_age_epochs == pytest.approx(8 * 64 / 1000)
    w = probe_windows(steps=34, batch=64, n_train=1000, examples=256)  # epoch 2's start overlaps
    assert (w.recent, w.early) == (range(30, 34), range(16, 20))  # so epoch 1's start
    assert w.early_age_epochs == pytest.approx(18 * 64 / 1000)
    w = probe_windows(steps=5, batch=64, n_train=1000, examples=256)  # no room for two windows
    assert (w.recent, w.early, w.early_age_epochs) == (range(1, 5), None, None)
    assert probe_windows(steps=10, batch=4096, n_train=1000, examples=256).recent == range(9, 10)


@pytest.mark.parametrize("steps", [40, 34])
def test_forgetting_probe_measures_the_batches_it_claims(data_dir: Path, steps: int) -> None:
    """The probe's losses against the final checkpoint's losses on the batches the trial
    really drew (the loop's own data stream, replayed), and the held-out loss against the
    last val_loss."""
    rows, ckpts = run(config(data_dir, batch_size=64, micro_batch_size=32, max_steps=steps, probe_examples=256))
    last = rows[-1]
    drawn = classifier._BatchStream(1000, 3)  # n_train = 1200 - 200 held out; seed 3
    batches = [drawn.next(64) for _ in range(steps)]
    data = load_data(str(data_dir), 200)
    model = model_of(data_dir, ckpts[-1]["model"]).eval()
    w = probe_windows(steps, 64, 1000, 256)
    assert w.early is not None
    for column, updates in (("probe_recent_loss", w.recent), ("probe_early_loss", w.early)):
        idx = torch.cat([batches[j] for j in updates])
        with torch.no_grad():
            expect = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).item()
        assert last[column] == pytest.approx(expect, rel=1e-5), column
    assert last["probe_early_age_epochs"] == pytest.approx(w.early_age_epochs)
    assert last["probe_heldout_loss"] == last["val_loss"]
    assert all(not any(k.startswith("probe_") for k in r) for r in rows[:-1])  # the last row only


def test_subsets_are_nested_seeded_and_the_same_for_every_trial() -> None:
    subsets = {f: train_subset(1000, f) for f in (0.125, 0.25, 0.5, 1.0)}
    assert [len(v) for v in subsets.values()] == [125, 250, 500, 1000]
    for small, big in ((0.125, 0.25), (0.25, 0.5), (0.5, 1.0)):
        assert set(subsets[small].tolist()) <= set(subsets[big].tolist())  # nested
    assert all(torch.equal(v, v.sort().values) for v in subsets.values())
    # a function of (n, fraction) alone: no batch size, LR or trial seed can move it
    assert torch.equal(train_subset(1000, 0.25), subsets[0.25])
    assert len(set(subsets[0.5].tolist()) & set(range(500))) < 300  # drawn, not the first half


def test_a_subset_trial_trains_and_probes_only_its_subset(data_dir: Path) -> None:
    """train_fraction 0.5: the data stream runs over the 500-example subset (epoch counts
    it), the probe's batches are the subset's, and the examples outside it are never
    touched (NaN there would make the loss NaN)."""
    steps = 34
    rows, ckpts = run(
        config(data_dir, batch_size=64, micro_batch_size=32, max_steps=steps, probe_examples=256, train_fraction=0.5)
    )
    keep = train_subset(1000, 0.5)
    assert rows[-1]["epoch"] == pytest.approx(steps * 64 / 500)
    drawn = classifier._BatchStream(500, 3)
    batches = [keep[drawn.next(64)] for _ in range(steps)]  # positions in the subset -> examples
    data = load_data(str(data_dir), 200)
    model = model_of(data_dir, ckpts[-1]["model"]).eval()
    w = probe_windows(steps, 64, 500, 256)
    idx = torch.cat([batches[j] for j in w.recent])
    with torch.no_grad():
        expect = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).item()
    assert rows[-1]["probe_recent_loss"] == pytest.approx(expect, rel=1e-5)

    poisoned = classifier.ClassificationData(data.x_train.clone(), data.y_train, data.x_val, data.y_val)
    outside = torch.ones(len(poisoned.x_train), dtype=torch.bool)
    outside[keep] = False
    poisoned.x_train[outside] = float("nan")
    out: list[dict] = []
    settings = classifier.LoopSettings(noise_scale_every=0, sharpness_examples=0, probe_examples=0)
    for fraction in (0.5, 1.0):
        out.clear()
        cfg = trial(config(data_dir, batch_size=64, micro_batch_size=64, max_steps=steps, train_fraction=fraction))
        classifier.train_classifier(
            cfg, lambda m, checkpoint=None: out.append(m), poisoned, lambda: model_of(data_dir), settings
        )
        if fraction == 0.5:
            assert len(out) > 3 and all(math.isfinite(r["train_loss"]) and not r.get("diverged") for r in out)
        else:  # the control: all of the data reaches the poison at once
            assert out[-1].get("diverged") is True and len(out) == 1


def test_a_branch_starts_from_the_base_weights_and_momentum_with_its_own_batch(data_dir: Path) -> None:
    """``init_state`` (orchestrator.branching): a branch from the base's last checkpoint
    starts where the base ended (its first loss is the base's last, not a fresh model's),
    counts examples from 0, accumulates a larger batch, and measures ‖θ − θ₀‖ from the
    branch point; a resumed branch continues its own curve."""
    base, ckpts = run(config(data_dir, max_steps=30))
    fresh, _ = run(config(data_dir, max_steps=1, seed=5))
    branch, bckpts = run(
        config(data_dir, batch_size=512, micro_batch_size=128, lr=0.1, seed=5, max_steps=4, init_state=ckpts[-1])
    )
    assert branch[-1]["examples_seen"] == 4 * 512 and branch[-1]["step"] == 4
    assert abs(branch[0]["val_loss"] - base[-1]["val_loss"]) < 0.5 * abs(fresh[0]["val_loss"] - base[-1]["val_loss"])
    assert branch[0]["weight_distance"] < 0.5 * base[-1]["weight_distance"]
    resumed, _ = run(
        config(
            data_dir,
            batch_size=512,
            micro_batch_size=128,
            lr=0.1,
            seed=5,
            max_steps=4,
            init_state=ckpts[-1],
            _checkpoint=bckpts[1],
        )
    )
    drop = lambda rows: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]
    assert drop(resumed) == drop(branch[2:])
