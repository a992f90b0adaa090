"""ImageNet-style data for ``trainables.imagenet``: a split is a tree of class folders of
JPEGs (ImageFolder) or WebDataset-style tar shards (``NNNNNN.jpg`` + ``NNNNNN.cls``, the
class index as text), read in place (shard members by offset, no unpacking).

    data_dir/train/n01440764/xxx.JPEG ...   or   data_dir/train/shard-000000.tar ...
    data_dir/val/...                              data_dir/val/shard-000000.tar ...

``stage`` copies the shards to node-local disk (``$SLURM_TMPDIR``, else /tmp) once per node,
under a lock, so concurrent trials on a node share one copy. Decoding and augmentation
(torchvision's RandomResizedCrop and flip for training; resize to size/0.875 and centre
crop for validation) run in DataLoader workers; each example's augmentation is seeded by
(seed, step, position in the batch), so it does not depend on the worker or micro-batch.
Images leave the workers as uint8 H×W×3: a quarter of float's bytes over PCIe, and
channels_last on the device as they are.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import math
import os
import random
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from trainables.loop import EpochOrder, micro_slices

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Split:
    """The examples of one split: where each image's bytes are, and its label."""

    files: tuple[str, ...]
    """Image file, or the shard holding it."""
    offsets: np.ndarray
    """Byte offset of the image in its shard (-1: a whole file)."""
    sizes: np.ndarray
    """Bytes of the image in its shard."""
    labels: np.ndarray
    """Class index of each example."""
    which: np.ndarray
    """Index into ``files`` of each example."""

    def __len__(self) -> int:
        return len(self.labels)


def shards(split_dir: Path) -> list[Path]:
    return sorted(split_dir.glob("*.tar"))


def layout(root: str | Path, name: str) -> str:
    """``shards`` or ``folders`` for ``root/name``; FileNotFoundError (one line) otherwise."""
    d = Path(root) / name
    if not d.is_dir():
        raise FileNotFoundError(
            f"trainable_config.data_dir: {root} has no {name}/ directory "
            "(class folders of JPEGs, or NNNNNN.jpg + NNNNNN.cls tar shards)"
        )
    if shards(d):
        return "shards"
    if any(p.is_dir() for p in d.iterdir()):
        return "folders"
    raise FileNotFoundError(f"trainable_config.data_dir: {d} holds neither *.tar shards nor class folders")


def _index_shard(path: Path) -> tuple[list[tuple[int, int]], list[int]]:
    """(offset, size) of each image member and its label, in key order."""
    images: dict[str, tuple[int, int]] = {}
    labels: dict[str, int] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, _, ext = Path(m.name).name.partition(".")
                key = str(Path(m.name).parent / key)
                if ext.lower() == "cls":
                    f = tar.extractfile(m)
                    labels[key] = int(f.read().decode().strip()) if f else -1
                elif f".{ext.lower()}" in IMAGE_SUFFIXES:
                    images[key] = (m.offset_data, m.size)
    except (tarfile.TarError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"trainable_config.data_dir: {path} is not a readable uncompressed tar: {e}") from None
    except ValueError:
        raise ValueError(f"trainable_config.data_dir: {path}: a .cls member is not an integer") from None
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired or not images:
        what = (
            f"member {unpaired[0]} has no {'.cls' if unpaired[0] in images else 'image'}" if unpaired else "no images"
        )
        raise ValueError(f"trainable_config.data_dir: {path}: {what} (want NNNNNN.jpg + NNNNNN.cls pairs)")
    keys = sorted(images)
    return [images[k] for k in keys], [labels[k] for k in keys]


def class_names(root: str | Path) -> list[str]:
    """The class folders of ``root/train``, sorted (ImageFolder's class indices)."""
    return sorted(p.name for p in (Path(root) / "train").iterdir() if p.is_dir())


@functools.lru_cache(maxsize=4)
def load_split(root: str, name: str) -> Split:
    """Index a split (cached per process)."""
    d = Path(root) / name
    if layout(root, name) == "shards":
        files, offsets, sizes, labels, which = [], [], [], [], []
        for i, shard in enumerate(shards(d)):
            members, lab = _index_shard(shard)
            files.append(str(shard))
            offsets += [o for o, _ in members]
            sizes += [s for _, s in members]
            labels += lab
            which += [i] * len(lab)
        return Split(tuple(files), np.array(offsets), np.array(sizes), np.array(labels), np.array(which))
    classes = {c: i for i, c in enumerate(class_names(root))}
    paths, labels = [], []
    for cdir in sorted(p for p in d.iterdir() if p.is_dir()):
        if cdir.name not in classes:
            raise ValueError(f"trainable_config.data_dir: {cdir} is a class that {root}/train does not have")
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(f))
                labels.append(classes[cdir.name])
    if not paths:
        raise FileNotFoundError(f"trainable_config.data_dir: no images (.jpg, .jpeg, .png) in the class folders of {d}")
    n = len(paths)
    return Split(tuple(paths), np.full(n, -1), np.zeros(n, dtype=np.int64), np.array(labels), np.arange(n))


def check(root: str | Path, num_classes: int) -> None:
    """A cheap preflight: both splits present, the first shard (or folder) well formed."""
    for name in ("train", "val"):
        kind = layout(root, name)
        d = Path(root) / name
        if kind == "shards":
            _, labels = _index_shard(shards(d)[0])
            top = max(labels)
        else:
            top = len(class_names(root)) - 1
            first = next(p for p in sorted(d.iterdir()) if p.is_dir())
            if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in first.iterdir()):
                raise FileNotFoundError(f"trainable_config.data_dir: no images (.jpg, .jpeg, .png) in {first}")
        if top >= num_classes or (kind == "shards" and min(labels) < 0):
            raise ValueError(f"trainable_config.num_classes: {d} has class {top}, num_classes is {num_classes}")


def stage(root: str, stage_dir: str | None = None) -> str:
    """Copy the shards of ``root`` to node-local disk once (under a lock); the new root."""
    base = Path(stage_dir or os.environ.get("SLURM_TMPDIR") or "/tmp")
    dest = base / "batchscale-stage" / hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in ("train", "val"):
            (dest / name).mkdir(exist_ok=True)
            for shard in shards(Path(root) / name):
                target = dest / name / shard.name
                if not target.is_file() or target.stat().st_size != shard.stat().st_size:
                    tmp = target.with_name(f".{shard.name}.{os.getpid()}.tmp")
                    shutil.copyfile(shard, tmp)
                    os.replace(tmp, target)
    return str(dest)


def _random_resized_crop(w: int, h: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box: scale (0.08, 1), ratio (3/4, 4/3), 10 tries."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return x, y, x + cw, y + ch
    ratio = w / h  # fallback: the centre, aspect clamped to the range
    cw, ch = (w, round(w / (4 / 3))) if ratio > 4 / 3 else (round(h * 3 / 4), h) if ratio < 3 / 4 else (w, h)
    x, y = (w - cw) // 2, (h - ch) // 2
    return x, y, x + cw, y + ch


class Images(Dataset):
    """Decoded, augmented uint8 H×W×3 images; items are (index, augmentation seed)."""

    def __init__(self, split: Split, size: int, train: bool) -> None:
        self.split, self.size, self.train = split, size, train
        self._open: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": {}}  # file handles stay in their process

    def __len__(self) -> int:
        return len(self.split)

    def _bytes(self, i: int) -> bytes:
        sp = self.split
        f = int(sp.which[i])
        if sp.offsets[i] < 0:
            return Path(sp.files[f]).read_bytes()
        if f not in self._open:
            self._open[f] = open(sp.files[f], "rb")  # noqa: SIM115 (kept open for the next read)
        handle = self._open[f]
        handle.seek(int(sp.offsets[i]))
        return handle.read(int(sp.sizes[i]))

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        from PIL import Image

        i, seed = key
        img: Image.Image = Image.open(io.BytesIO(self._bytes(i)))
        s = self.size
        if self.train:
            img = img.convert("RGB")
            rng = random.Random(seed)
            img = img.resize((s, s), Image.Resampling.BILINEAR, box=_random_resized_crop(*img.size, rng))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            short = round(s / 0.875)
            img.draft("RGB", (short, short))
            img = img.convert("RGB")
            w, h = img.size
            scale = short / min(w, h)
            img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.Resampling.BILINEAR)
            w, h = img.size
            left, top = (w - s) // 2, (h - s) // 2
            img = img.crop((left, top, left + s, top + s))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()), int(self.split.labels[i])


class Synthetic(Dataset):
    """Random uint8 images with a class-dependent brightness: data made on the fly (bench)."""

    def __init__(self, n: int, size: int, classes: int) -> None:
        self.n, self.size, self.classes = n, size, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, _ = key
        gen = torch.Generator().manual_seed(i)
        label = i % self.classes
        img = torch.randint(0, 128, (self.size, self.size, 3), dtype=torch.uint8, generator=gen)
        return img + int(127 * label / max(self.classes - 1, 1)), label


class StepBatches(Sampler[list[tuple[int, int]]]):
    """The micro-batches of update after update from ``start``: this rank's part of each
    global batch of an ``EpochOrder``, every index paired with its augmentation seed."""

    def __init__(self, order: EpochOrder, start: int, batch: int, micro: int, part: slice, seed: int) -> None:
        self.order, self.start, self.batch, self.micro, self.part, self.seed = order, start, batch, micro, part, seed

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while True:
            base = int(np.random.SeedSequence([self.seed, 1 << 22, step]).generate_state(1)[0])
            idx = self.order.batch(step, self.batch)
            pos = np.arange(self.batch)[self.part]
            mine = idx[self.part].tolist()
            for sl in micro_slices(len(mine), self.micro):
                yield [(i, base + int(p)) for i, p in zip(mine[sl], pos[sl])]
            step += 1
