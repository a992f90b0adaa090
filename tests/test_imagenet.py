"""The imagenet trainable on tiny JPEGs written both as class folders and as WebDataset-style
tar shards: the contract's rows, staging, averaged accumulation under ghost BN, resume,
the ResNet-50 itself, and bad data directories refused at launch (exit 2)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.launch import main
from support import run_trainable, trial
from trainables import images
from trainables.bench import forward_flops
from trainables.imagenet import TrainableConfig, preflight
from trainables.resnet import resnet50
from trainables.schedule import eval_steps

ROW = {"step", "examples_seen", "epoch", "wall_time_s", "train_loss", "val_loss", "val_accuracy", "lr_current"}
CLASSES = ("n01", "n02", "n03")


def _jpeg(label: int, rng: np.random.Generator) -> bytes:
    x = rng.integers(0, 90, (40, 48, 3), dtype=np.uint8)
    x[:, :, label] += 150
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_imagenet(root: Path, per_class: tuple[int, int] = (8, 2), shards: bool = False) -> Path:
    """train/ and val/ with ``per_class`` JPEGs per class: class folders or two tar shards."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        d = root / split
        d.mkdir(parents=True)
        items = [(c, _jpeg(c, rng)) for c in range(len(CLASSES)) for _ in range(n)]
        if not shards:
            for i, (c, data) in enumerate(items):
                (d / CLASSES[c]).mkdir(exist_ok=True)
                (d / CLASSES[c] / f"{i:04d}.JPEG").write_bytes(data)
            continue
        for s in range(2):
            with tarfile.open(d / f"shard-{s:06d}.tar", "w") as tar:
                for i, (c, data) in enumerate(items[s::2]):
                    for name, payload in ((f"{i:06d}.jpg", data), (f"{i:06d}.cls", str(c).encode())):
                        info = tarfile.TarInfo(name)
                        info.size = len(payload)
                        tar.addfile(info, io.BytesIO(payload))
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet(tmp_path_factory.mktemp("imagenet_folders"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet(tmp_path_factory.mktemp("imagenet_shards"), shards=True)


def config(data_dir: Path, **kw: Any) -> dict[str, Any]:
    return {
        "batch_size": 8,
        "lr": 0.05,
        "momentum": 0.9,
        "max_steps": 4,
        "data_dir": str(data_dir),
        "image_size": 32,
        "num_classes": 3,
        "width": 4,
        "layers": [1, 1],
        "workers": 0,
        "eval_ratio": 2.0,
        **kw,
    }


def run(cfg: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    return run_trainable("imagenet", cfg)


def test_class_folders_train_and_report_the_contract_columns(folders: Path) -> None:
    rows, ckpts = run(config(folders, schedule="cosine"))
    assert [r["step"] for r in rows] == eval_steps(4, 2.0)
    for r in rows:
        assert set(r) >= ROW and r["examples_seen"] == 8 * r["step"]
        assert r["epoch"] == pytest.approx(r["step"] * 8 / 24)
        assert all(np.isfinite(r[k]) for k in ROW) and 0 <= r["val_accuracy"] <= 1
    assert rows[-1]["lr_current"] == pytest.approx(0.0, abs=1e-12)  # cosine to 0 at the cap
    assert ckpts[-1]["step"] == 4


def test_tar_shards_staged_to_local_disk_with_loader_workers(shards: Path, tmp_path: Path) -> None:
    split = images.load_split(str(shards), "train")
    assert len(split) == 24 and sorted(np.bincount(split.labels)) == [8, 8, 8]
    rows, _ = run(config(shards, stage=True, stage_dir=str(tmp_path), workers=1, max_steps=2))
    staged = list(tmp_path.glob("batchscale-stage/*/train/shard-*.tar"))
    assert len(staged) == 2 and len(list(tmp_path.glob("batchscale-stage/*/val/*.tar"))) == 2
    mtimes = [p.stat().st_mtime_ns for p in staged]
    assert images.stage(str(shards), str(tmp_path)) == str(staged[0].parent.parent)
    assert [p.stat().st_mtime_ns for p in staged] == mtimes  # staged once per node
    assert [r["step"] for r in rows] == [1, 2]


def test_accumulation_4x4_equals_1x16_with_ghost_bn_of_the_micro_size(folders: Path) -> None:
    one_rows, one = run(config(folders, batch_size=16, max_steps=2, ghost_batch=4))
    acc_rows, acc = run(config(folders, batch_size=16, micro_batch_size=4, max_steps=2, ghost_batch=4))
    for a, b in zip(one_rows, acc_rows, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    for name, p in one[-1]["model"].items():
        torch.testing.assert_close(p, acc[-1]["model"][name], rtol=1e-3, atol=1e-5)


def test_resume_continues_the_same_curve(folders: Path) -> None:
    full, ckpts = run(config(folders, max_steps=4))
    rest, rest_ckpts = run({**config(folders, max_steps=4), "_checkpoint": ckpts[1]})  # from step 2
    assert [r["step"] for r in rest] == [4]
    assert rest[0]["train_loss"] == pytest.approx(full[-1]["train_loss"], rel=1e-5)
    assert rest[0]["val_loss"] == pytest.approx(full[-1]["val_loss"], rel=1e-5)
    assert rest[0]["weight_distance"] == pytest.approx(full[-1]["weight_distance"], rel=1e-5)
    for name, p in ckpts[-1]["model"].items():
        torch.testing.assert_close(p, rest_ckpts[-1]["model"][name])


def test_lars_from_8k_and_resnet50_is_torchvisions() -> None:
    from trainables.imagenet import _optimizer
    from trainables.optim import LARS

    small = torch.nn.Linear(2, 2)
    assert isinstance(
        _optimizer(small, trial({"batch_size": 8192, "lr": 1.0, "max_steps": 1}), TrainableConfig()), LARS
    )
    assert isinstance(
        _optimizer(small, trial({"batch_size": 4096, "lr": 1.0, "max_steps": 1}), TrainableConfig()), torch.optim.SGD
    )
    model = resnet50()
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision's resnet50
    assert 3 * forward_flops(model, torch.zeros(1, 3, 224, 224)) / 1e9 == pytest.approx(24.5, rel=0.01)


def _launch(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    out = tmp_path / "run"
    args = ["--study", "imagenet-resnet50", "--set", f"trainable_config.data_dir={data}", "--out", str(out), *extra]
    assert main(args) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_missing_or_malformed_data_is_exit_2_naming_the_path(
    tmp_path: Path, folders: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _launch(tmp_path, tmp_path / "nowhere", capsys)
    assert str(tmp_path / "nowhere") in err and "train/" in err
    err = _launch(tmp_path, tmp_path / "nowhere", capsys, "--cluster", "slurm")  # before any sbatch
    assert str(tmp_path / "nowhere") in err
    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    (bad / "val").mkdir()
    (bad / "train" / "shard-000000.tar").write_bytes(b"garbage" * 100)
    err = _launch(tmp_path, bad, capsys)
    assert str(bad / "train" / "shard-000000.tar") in err and "tar" in err
    with tarfile.open(bad / "train" / "shard-000000.tar", "w") as tar:
        info = tarfile.TarInfo("000000.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert "000000 has no .cls" in _launch(tmp_path, bad, capsys)
    err = _launch(tmp_path, folders, capsys, "--set", "trainable_config.stage=true")
    assert "only tar shards are staged" in err
    preflight(TrainableConfig(data_dir=str(folders), num_classes=3))
