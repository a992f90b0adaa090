"""The gpt trainable on a tiny Transformer and a UTF-8 text file turned into its byte-level
token files: the contract's rows with tokens_seen, averaged accumulation, resume, two gloo
ranks (the shared loop's data-parallel path), and bad data refused at launch (exit 2,
naming the path and what is missing)."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from orchestrator.launch import main
from support import run_trainable
from trainables.gpt import TrainableConfig, build_model, preflight
from trainables.loop import LoopConfig, lr_factor
from trainables.schedule import eval_steps

ROW = {
    "step",
    "examples_seen",
    "epoch",
    "wall_time_s",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "lr_current",
    "tokens_seen",
}
TEXT = "The quick brown fox jumps over the lazy dog. Größe, naïve café — ünïcödé. " * 200


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpt")
    (root / "input.txt").write_text(TEXT, encoding="utf-8")
    return root


def config(data_dir: Path, **kw: Any) -> dict[str, Any]:
    return {
        "batch_size": 8,
        "lr": 3e-3,
        "optimizer": "adamw",
        "momentum": 0.9,
        "weight_decay": 0.1,
        "max_steps": 6,
        "warmup_examples": 16,
        "data_dir": str(data_dir / "tokens"),
        "text_file": str(data_dir / "input.txt"),
        "size": "tiny",
        "n_layer": 1,
        "n_embd": 32,
        "seq_len": 32,
        "eval_sequences": 16,
        "eval_ratio": 2.0,
        **kw,
    }


def run(cfg: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    return run_trainable("gpt", cfg)


def test_builds_tokens_once_and_reports_the_contract_columns(data_dir: Path) -> None:
    rows, ckpts = run(config(data_dir))
    raw = TEXT.encode("utf-8")
    train = np.fromfile(data_dir / "tokens" / "train.bin", dtype=np.uint16)
    val = np.fromfile(data_dir / "tokens" / "val.bin", dtype=np.uint16)
    assert bytes(np.concatenate([train, val]).astype(np.uint8)) == raw and len(val) == len(raw) - int(len(raw) * 0.9)
    assert [r["step"] for r in rows] == eval_steps(6, 2.0)
    for r in rows:
        assert set(r) >= ROW
        assert r["examples_seen"] == 8 * r["step"] and r["tokens_seen"] == 8 * 32 * r["step"]
        assert r["epoch"] == pytest.approx(r["tokens_seen"] / len(train), rel=0.01)
        assert all(np.isfinite(r[k]) for k in ROW) and 0 <= r["val_accuracy"] <= 1
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert ckpts[-1]["step"] == 6


def test_accumulation_4x2_equals_1x8(data_dir: Path) -> None:
    one_rows, one = run(config(data_dir, max_steps=3))
    acc_rows, acc = run(config(data_dir, max_steps=3, micro_batch_size=2))
    for a, b in zip(one_rows, acc_rows, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    for name, p in one[-1]["model"].items():
        torch.testing.assert_close(p, acc[-1]["model"][name], rtol=1e-4, atol=1e-6)


def test_resume_continues_the_same_curve(data_dir: Path) -> None:
    full, ckpts = run(config(data_dir, max_steps=8))
    k = [r["step"] for r in full].index(2)
    rest, rest_ckpts = run({**config(data_dir, max_steps=8), "_checkpoint": ckpts[k]})
    assert [r["step"] for r in rest] == [r["step"] for r in full[k + 1 :]]
    for a, b in zip(full[k + 1 :], rest):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["tokens_seen"] == b["tokens_seen"]
        assert a["weight_distance"] == pytest.approx(b["weight_distance"], rel=1e-5)
    for name, p in ckpts[-1]["model"].items():
        torch.testing.assert_close(p, rest_ckpts[-1]["model"][name])


def test_weight_distance_is_the_norm_from_the_seeded_initial_weights(data_dir: Path) -> None:
    """The shared loop's ``weight_distance`` against ‖θ − θ₀‖₂ computed here from each
    checkpoint and the model the trial's seed draws (tied embeddings counted once)."""
    cfg = config(data_dir, max_steps=4, eval_ratio=1.05)
    rows, ckpts = run(cfg)
    settings = TrainableConfig.model_validate({k: v for k, v in cfg.items() if k in TrainableConfig.model_fields})

    def flat(state: dict[str, Any] | None) -> torch.Tensor:
        torch.manual_seed(cfg.get("seed", 0))
        model = build_model(settings)
        if state is not None:
            model.load_state_dict(state)
        return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])

    theta0 = flat(None)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row, ckpt in zip(rows, ckpts, strict=True):
        expect = float(torch.linalg.vector_norm(flat(ckpt["model"]) - theta0))
        assert expect > 0 and row["weight_distance"] == pytest.approx(expect, rel=1e-5)


def test_schedules_and_sizes() -> None:
    cosine, wsd = LoopConfig(schedule="cosine", end_factor=0.1), LoopConfig(schedule="wsd", decay_fraction=0.2)
    assert [round(lr_factor(cosine, p), 4) for p in (0, 0.5, 1)] == [1.0, 0.55, 0.1]
    assert [lr_factor(wsd, p) for p in (0, 0.8, 0.9, 1)] == [1.0, 1.0, pytest.approx(0.5), 0.0]
    step = LoopConfig(schedule="step")
    assert [lr_factor(step, p) for p in (0.3, 0.34, 0.7, 0.9)] == pytest.approx([1, 0.1, 0.01, 0.001])
    n = sum(p.numel() for p in build_model(TrainableConfig(size="small")).parameters())
    assert 10.5e6 < n < 11e6  # nanoGPT's Shakespeare model: 10.8M with the position table


def _launch(tmp_path: Path, capsys: pytest.CaptureFixture[str], *sets: str) -> str:
    out = tmp_path / "run"
    args = ["--study", "gpt-small", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_missing_or_malformed_data_is_exit_2_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    err = _launch(
        tmp_path, capsys, f"trainable_config.data_dir={empty}", f"trainable_config.text_file={tmp_path}/no.txt"
    )
    assert f"{tmp_path}/no.txt" in err and "no such file" in err
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1") * 100)
    err = _launch(tmp_path, capsys, f"trainable_config.data_dir={empty}", f"trainable_config.text_file={bad}")
    assert str(bad) in err and "not UTF-8" in err and not (empty / "train.bin").exists()
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "train.bin").write_bytes(b"\x00" * 1001)
    (odd / "val.bin").write_bytes(b"\x00" * 1000)
    err = _launch(tmp_path, capsys, f"trainable_config.data_dir={odd}")
    assert str(odd / "train.bin") in err and "uint16" in err
    (odd / "train.bin").unlink()
    preflight_err = pytest.raises(FileNotFoundError, preflight, TrainableConfig(data_dir=str(odd)))
    assert "train.bin" in str(preflight_err.value) and str(odd) in str(preflight_err.value)


def test_a_blown_up_loss_is_one_diverged_row(data_dir: Path) -> None:
    rows, _ = run(config(data_dir, lr=30.0, grad_clip=0.0, warmup_examples=0, max_steps=40, divergence_factor=1.5))
    assert rows[-1].get("diverged") is True and rows[-1]["step"] < 40
    assert not any(r.get("diverged") for r in rows[:-1])


def _rank_main(rank: int, jobs: list[tuple[str, dict[str, Any], int]], out: str) -> None:
    """One rank of each job (world_size 2); rank 0 keeps the rows and whether it checkpointed."""
    results = {}
    for name, cfg, port in jobs:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        results[name] = run({**cfg, "world_size": 2, "rank": rank})
    if rank == 0:
        with open(out, "wb") as f:
            pickle.dump({k: (rows, [bool(c) for c in ckpts]) for k, (rows, ckpts) in results.items()}, f)
    else:  # the others report the same rows, never a checkpoint
        assert not any(c for _, ckpts in results.values() for c in ckpts)


def test_two_gloo_ranks_train_the_curve_of_one_process(data_dir: Path, tmp_path: Path) -> None:
    ref, _ = run(config(data_dir, max_steps=4))
    socks = [socket.socket() for _ in range(2)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    jobs = [
        ("plain", config(data_dir, max_steps=4, micro_batch_size=4), ports[0]),
        ("accumulated", config(data_dir, max_steps=4, micro_batch_size=2), ports[1]),
    ]
    out = tmp_path / "rank0.pkl"
    mp.spawn(_rank_main, args=(jobs, str(out)), nprocs=2, join=True)
    for name, (rows, checkpointed) in pickle.loads(out.read_bytes()).items():
        assert [r["step"] for r in rows] == [r["step"] for r in ref] and all(checkpointed), name
        for a, b in zip(ref, rows):
            for k in ("train_loss", "val_loss", "val_accuracy", "lr_current", "tokens_seen"):
                assert b[k] == pytest.approx(a[k], rel=1e-4), (name, a["step"], k)


def test_the_shared_loop_probes_the_batches_it_trained_on() -> None:
    """The accelerator loop's forgetting probe on a toy model whose batches the test knows:
    each loss against the final weights' mean loss over the micro-batches ``batches(j)``
    gave the probed updates, in eval mode; the held-out loss is the last val_loss."""
    from torch import nn
    from torch.nn import functional as F

    from support import trial
    from trainables.forgetting import probe_windows
    from trainables.loop import EpochOrder, Parts, run

    torch.manual_seed(0)
    x, y = torch.randn(200, 4), torch.randint(0, 3, (200,))
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))  # eval mode matters
    order = EpochOrder(200, 7)

    def batches(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        idx = order.batch(step, 16)
        return [(x[idx[:8]], y[idx[:8]]), (x[idx[8:]], y[idx[8:]])]

    def loss(m: nn.Module, mb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(m(mb[0]), mb[1])

    def evaluate(dp: Any) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            return {"val_loss": F.cross_entropy(model(x[:50]), y[:50]).item()}

    parts = Parts(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, loss, evaluate, epoch_examples=200)
    rows: list[dict[str, Any]] = []
    cfg = trial({"batch_size": 16, "micro_batch_size": 8, "lr": 0.1, "max_steps": 30})
    s = LoopConfig(schedule="constant", probe_examples=48, bf16=False)
    run(cfg, lambda m, c=None: rows.append(dict(m)), parts, s, torch.device("cpu"))
    w = probe_windows(30, 16, 200, 48)
    assert w.early is not None and len(w.recent) == 3
    model.eval()
    with torch.no_grad():
        for column, updates in (("probe_recent_loss", w.recent), ("probe_early_loss", w.early)):
            expect = torch.stack([loss(model, mb) for j in updates for mb in batches(j)]).mean().item()
            assert rows[-1][column] == pytest.approx(expect, rel=1e-6), column
    assert rows[-1]["probe_early_age_epochs"] == pytest.approx(w.early_age_epochs)
    assert rows[-1]["probe_heldout_loss"] == rows[-1]["val_loss"]
    assert not any("probe_recent_loss" in r for r in rows[:-1])
