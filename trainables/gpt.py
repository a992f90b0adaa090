"""A nanoGPT-class decoder-only Transformer on a byte-level token stream.

Pre-LayerNorm blocks (causal self-attention through ``scaled_dot_product_attention``, a 4×
GELU MLP), learned positions, the output layer tied to the token embedding, GPT-2's init
(residual projections scaled by 1/√(2·layers)). Sizes: ``tiny`` (2 layers × 64, trains on a
CPU in minutes), ``mini`` (4 × 128), ``small`` (6 × 384, nanoGPT's Shakespeare model),
``gpt2`` (12 × 768, GPT-2 small's shape); ``n_layer`` / ``n_head`` / ``n_embd`` override.

AdamW (beta1 = the study's momentum, ``beta2``), decay on matrices only, global-norm
clipping, warmup in examples then cosine (to ``end_factor``) or WSD decay; bf16 autocast on
a GPU, ``torch.compile`` if asked. The batch size is in sequences of ``seq_len`` tokens:
``examples_seen`` counts sequences, the extra column ``tokens_seen`` tokens, and an epoch
is the training stream's length in tokens.

Data: ``train.bin`` and ``val.bin`` in ``data_dir`` (uint16 tokens, memory-mapped), or a
UTF-8 ``text_file`` turned once into those two files (its bytes are the tokens, 0..255; the
last ``val_fraction`` is validation). Each update's sequences start at offsets drawn from
(seed, step), so resume and micro-batching see the same tokens.

    python -m trainables.gpt --data data/gpt --bench
    python -m trainables.gpt --synthetic --bench --steps 30 --set size='"tiny"' --set seq_len=64
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trainables import Report, bench
from trainables.contract import Target, TrialConfig
from trainables.distributed import DataParallel
from trainables.loop import LoopConfig, Parts, autocast, device, generator, local_part, micro_slices, param_groups, run
from trainables.optim import make_optimizer

METRICS = ("train_loss", "train_eval_loss", "train_eval_accuracy", "val_loss", "val_accuracy")
SIZES = {"tiny": (2, 2, 64), "mini": (4, 4, 128), "small": (6, 6, 384), "gpt2": (12, 12, 768)}
"""(layers, heads, width) of each size."""


class TrainableConfig(LoopConfig):
    """``[trainable_config]`` of a gpt study (and the LoopConfig keys)."""

    data_dir: str = "data/gpt"
    """Directory with train.bin and val.bin (uint16 tokens), or where text_file's are written."""
    text_file: str | None = None
    """A UTF-8 text file to build train.bin / val.bin from (once) when data_dir lacks them."""
    val_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    """Fraction of text_file's bytes, at its end, that become val.bin."""
    size: Literal["tiny", "mini", "small", "gpt2"] = "small"
    """Model size: tiny, mini, small or gpt2 (see the module docstring)."""
    n_layer: int | None = Field(default=None, gt=0)
    """Override the size's number of blocks."""
    n_head: int | None = Field(default=None, gt=0)
    """Override the size's attention heads."""
    n_embd: int | None = Field(default=None, gt=0)
    """Override the size's width (a multiple of the heads)."""
    seq_len: int = Field(default=256, gt=1)
    """Tokens per sequence (the context length)."""
    vocab_size: int = Field(default=256, gt=1)
    """Token ids are below this (256: bytes)."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout (0 keeps micro-batching exact)."""
    beta2: float = Field(default=0.95, gt=0.0, lt=1.0)
    """AdamW's beta2."""
    grad_clip: float = Field(default=1.0, ge=0.0)
    """Clip the global gradient norm at this (0: no clipping)."""
    eval_sequences: int = Field(default=256, gt=0)
    """Fixed validation sequences per evaluation (and as many training ones for train_eval_*)."""
    end_factor: float = Field(default=0.1, ge=0.0, le=1.0)
    """LR at the end of the decay as a fraction of the peak (nanoGPT: 0.1)."""


class Tokens(NamedTuple):
    """The training and validation token streams (memory maps or arrays)."""

    train: np.ndarray
    val: np.ndarray


def bins(data_dir: str | Path) -> tuple[Path, Path]:
    return Path(data_dir) / "train.bin", Path(data_dir) / "val.bin"


def build_bins(text_file: str, data_dir: str, val_fraction: float) -> None:
    """train.bin / val.bin from a UTF-8 text file's bytes (written atomically)."""
    raw = Path(text_file).read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"trainable_config.text_file: {text_file} is not UTF-8 (byte {e.start})") from None
    tokens = np.frombuffer(raw, dtype=np.uint8).astype(np.uint16)
    cut = int(len(tokens) * (1 - val_fraction))
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    for path, part in zip(bins(data_dir), (tokens[:cut], tokens[cut:])):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        part.tofile(tmp)
        os.replace(tmp, path)


def preflight(settings: TrainableConfig) -> None:
    """Build the token files from text_file if needed; raise (one line) when the data are
    missing, not UTF-8, too short for seq_len or hold ids outside the vocabulary."""
    s = settings
    if not all(p.is_file() for p in bins(s.data_dir)):
        if s.text_file is None:
            raise FileNotFoundError(
                f"trainable_config.data_dir: {s.data_dir} has no train.bin/val.bin "
                "and trainable_config.text_file is not set to build them from"
            )
        if not Path(s.text_file).is_file():
            raise FileNotFoundError(f"trainable_config.text_file: no such file {s.text_file}")
        build_bins(s.text_file, s.data_dir, s.val_fraction)
    for path in bins(s.data_dir):
        size = path.stat().st_size
        if size % 2 or size // 2 < s.seq_len + 2:
            raise ValueError(
                f"trainable_config.data_dir: {path} must hold uint16 tokens, at least "
                f"seq_len + 2 = {s.seq_len + 2} of them ({size} bytes)"
            )
        head = np.memmap(path, dtype=np.uint16, mode="r")[: 1 << 20]
        if int(head.max()) >= s.vocab_size:
            raise ValueError(
                f"trainable_config.data_dir: {path} holds token {int(head.max())} >= vocab_size {s.vocab_size}"
            )


@functools.lru_cache(maxsize=2)
def load_tokens(data_dir: str) -> Tokens:
    """The two streams, memory-mapped (cached per process)."""
    train_bin, val_bin = bins(data_dir)
    return Tokens(np.memmap(train_bin, dtype=np.uint16, mode="r"), np.memmap(val_bin, dtype=np.uint16, mode="r"))


def synthetic(n_train: int = 1 << 20, n_val: int = 1 << 16, seed: int = 0) -> Tokens:
    """A learnable byte stream: a random walk over the lowercase letters and space."""
    rng = np.random.default_rng(seed)
    steps = rng.choice(np.array([1, 1, 2, -1, 5]), n_train + n_val)
    tokens = (97 + np.cumsum(steps) % 27).astype(np.uint16)
    tokens[tokens == 97 + 26] = 32
    return Tokens(tokens[:n_train], tokens[n_train:])


class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.c_attn, self.attn_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.attn_proj(y.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)))))


class GPT(nn.Module):
    def __init__(self, vocab: int, seq_len: int, n_layer: int, n_head: int, n_embd: int, dropout: float) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"trainable_config.n_embd: {n_embd} is not a multiple of n_head {n_head}")
        self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(seq_len, n_embd)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if p.ndim > 1:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def flop_params(self) -> int:
        """Parameters that multiply every token (all but the position table): the N of 6·N."""
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()


def build_model(s: TrainableConfig) -> GPT:
    layers, heads, width = SIZES[s.size]
    return GPT(s.vocab_size, s.seq_len, s.n_layer or layers, s.n_head or heads, s.n_embd or width, s.dropout)


def train(config: TrialConfig, report: Report) -> None:
    """Train one trial on the token streams in ``data_dir``."""
    settings = TrainableConfig.model_validate(config.settings)
    preflight(settings)  # builds the token files once if only text_file is there
    train_on(config, report, load_tokens(settings.data_dir))


def _gather(stream: np.ndarray, offsets: np.ndarray, t: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    chunk = torch.from_numpy(stream[offsets[:, None] + np.arange(t + 1)].astype(np.int64))
    if dev.type == "cuda":
        chunk = chunk.pin_memory().to(dev, non_blocking=True)
    return chunk[:, :-1], chunk[:, 1:]


def train_on(config: TrialConfig, report: Report, data: Tokens, timers: dict[str, float] | None = None) -> None:
    """Train one trial on ``data`` (the token files, or a synthetic stream for a bench)."""
    s = TrainableConfig.model_validate(config.settings)
    torch.set_num_threads(config.threads)
    dev, t = device(config), s.seq_len
    torch.manual_seed(config.seed)
    model = build_model(s).to(dev)
    opt = make_optimizer(
        "adamw", cast(Any, param_groups(model, config.weight_decay)), config.lr, config.momentum, config.weight_decay
    )
    for g in opt.param_groups:
        g["betas"] = (config.momentum, s.beta2)
    fixed = np.random.default_rng(0)
    val_off = fixed.integers(0, len(data.val) - t - 1, s.eval_sequences)
    train_off = fixed.integers(0, len(data.train) - t - 1, s.eval_sequences)

    def batches(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        gen = generator(config.seed, 1 << 21, step)
        offsets = torch.randint(0, len(data.train) - t - 1, (config.batch_size,), generator=gen).numpy()
        x, y = _gather(data.train, offsets[local_part(config.batch_size, config)], t, dev)
        return [(x[sl], y[sl]) for sl in micro_slices(len(x), config.micro_batch_size)]

    def loss(net: nn.Module, mb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        logits = net(mb[0])
        return F.cross_entropy(logits.float().flatten(0, 1), mb[1].flatten())

    @torch.no_grad()
    def measure(stream: np.ndarray, all_offsets: np.ndarray, dp: DataParallel) -> tuple[float, float]:
        model.eval()
        offsets = dp.share(torch.from_numpy(all_offsets)).numpy()  # each rank a share, summed
        loss_sum, correct = 0.0, 0
        for i in range(0, len(offsets), 32):
            x, y = _gather(stream, offsets[i : i + 32], t, dev)
            with autocast(dev, s.bf16):
                logits = model(x).float()
            loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum().item())
        total, right = dp.sum(loss_sum, correct)
        return total / (len(all_offsets) * t), right / (len(all_offsets) * t)

    def evaluate(dp: DataParallel) -> dict[str, float]:
        val, train_eval = measure(data.val, val_off, dp), measure(data.train, train_off, dp)
        return {
            "val_loss": val[0],
            "val_accuracy": val[1],
            "train_eval_loss": train_eval[0],
            "train_eval_accuracy": train_eval[1],
        }

    parts = Parts(
        model,
        opt,
        batches,
        loss,
        evaluate,
        max(len(data.train) // t, 1),
        extra=lambda step: {"tokens_seen": step * config.batch_size * t},
        grad_clip=s.grad_clip,
        compile=s.compile,
    )
    run(config, report, parts, s, dev)
    if timers is not None:
        timers.update(parts.timers)


def main(argv: list[str] | None = None) -> int:
    """``python -m trainables.gpt --bench``: tokens/s and MFU (6·N·tokens); saved as JSON."""
    p = argparse.ArgumentParser(prog="python -m trainables.gpt", description=main.__doc__)
    bench.add_arguments(p)
    p.add_argument("--lr", type=float, default=1e-3, help="peak LR (default 1e-3)")
    args = p.parse_args(argv)
    if not args.bench:
        p.error("nothing to do: pass --bench")
    s = bench.settings(TrainableConfig, args)
    if args.synthetic:
        data = synthetic()
    else:
        try:
            preflight(s)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        data = load_tokens(s.data_dir)
    batch, steps = args.batch_size or 32, max(2, args.steps or 50)
    # the first evaluation after one update, the second at the end: the interval is timed
    config = TrialConfig(
        batch_size=batch,
        micro_batch_size=args.micro_batch_size or batch,
        lr=args.lr,
        seed=0,
        optimizer="adamw",
        momentum=0.9,
        weight_decay=0.1,
        warmup_examples=batch * steps // 10,
        max_steps=steps,
        max_examples=None,
        cpus=torch.get_num_threads(),
        target=Target(metric="val_loss", mode="min", value=0.0),
        stop_at_target=False,
        settings={**s.model_dump(), "eval_ratio": 2.0},
    )
    dev = device(config)
    rows: list[dict[str, Any]] = []
    timers: dict[str, float] = {}
    train_on(config, lambda m, checkpoint=None: rows.append(m), data, timers)
    first, last = rows[0], rows[-1]  # timed from the end of update 1 (compilation, allocation)
    timed = max(last["train_time_s"] - first["train_time_s"], 1e-9)
    tokens_per_s = (last["tokens_seen"] - first["tokens_seen"]) / timed
    n_params = build_model(s).flop_params()
    peak, peak_source = bench.peak_flops(dev, args.peak_tflops)
    achieved = 6 * n_params * tokens_per_s
    layers, heads, width = SIZES[s.size]
    record = {
        "benchmark": f"gpt {s.size}",
        "data": "synthetic" if args.synthetic else s.data_dir,
        "n_layer": s.n_layer or layers,
        "n_head": s.n_head or heads,
        "n_embd": s.n_embd or width,
        "seq_len": s.seq_len,
        "params_for_flops": n_params,
        "batch_sequences": batch,
        "micro_batch_sequences": config.micro_batch_size,
        "steps": timers["updates"],
        "tokens_per_s": round(tokens_per_s, 1),
        "timed_updates": last["step"] - first["step"],
        "timed_s": round(timed, 3),
        "train_time_s": round(timers["train_time_s"], 3),
        "achieved_tflops": round(achieved / 1e12, 5),
        "flops_rule": "6 * N * tokens",
        "mfu": None if peak is None else round(achieved / peak, 5),
        "peak_source": peak_source,
        "first_val_loss": rows[0]["val_loss"],
        "final_val_loss": rows[-1]["val_loss"],
        "environment": bench.environment(dev),
    }
    bench.save("gpt", record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
