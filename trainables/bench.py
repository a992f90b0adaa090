"""What the trainables' ``--bench`` entry points share: the device and versions, the peak
FLOP/s behind MFU, a FLOP count of a model's forward pass, and the results file.

MFU = achieved training FLOP/s / the device's peak dense bf16 FLOP/s (GPU: a table of
data-sheet figures; CPU: cores × clock × FP32 FLOPs per cycle of its vector units, an
estimate, and said to be one). ``--peak-tflops`` overrides either.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pydantic
import torch
from torch import nn

M = TypeVar("M", bound=pydantic.BaseModel)
RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
# dense bf16 tensor-core peaks (data sheets, SXM parts where there are several)
GPU_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
    "A10": 125.0,
    "L4": 121.0,
    "V100": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags every ``python -m trainables.X --bench`` takes."""
    p.add_argument("--data", help="data directory (the trainable's data_dir)")
    p.add_argument("--synthetic", action="store_true", help="data made on the fly: no dataset needed")
    p.add_argument("--bench", action="store_true", help="measure throughput (and time to target) and save it")
    p.add_argument("--steps", type=int, help="optimizer updates to time")
    p.add_argument("--batch-size", type=int, help="batch size of the timed updates")
    p.add_argument("--micro-batch-size", type=int, help="micro-batch size (default: the batch size)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [trainable_config] key for the bench (TOML value), repeatable",
    )
    p.add_argument("--peak-tflops", type=float, help="peak FLOP/s of the device for MFU (default: known or estimated)")
    p.add_argument("--out", type=Path, help="results file (default bench/results/<name>.json)")


def settings_from(overrides: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs as a dict (TOML values; a bare word is a string)."""
    import tomllib

    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set {item!r}: expected KEY=VALUE", file=sys.stderr)
            raise SystemExit(2)
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def settings(model: type[M], args: argparse.Namespace) -> M:
    """The trainable's config from ``--set`` and ``--data``; a bad key exits 2 with one line."""
    raw = {**settings_from(args.overrides), **({"data_dir": args.data} if args.data else {})}
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        print(f"error: --set {key}: {err['msg']} (got {err.get('input')!r})", file=sys.stderr)
        raise SystemExit(2) from None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def environment(dev: torch.device) -> dict[str, Any]:
    """The device, the software and the note that a CPU run is not the GPU target."""
    env: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "device_type": dev.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if dev.type == "cpu":
        env["note"] = "CPU, not the GPU target: figures show the code runs, not GPU speed"
    return env


def peak_flops(dev: torch.device, override_tflops: float | None = None) -> tuple[float | None, str]:
    """(peak FLOP/s, where the figure comes from); None when unknown."""
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"data sheet, dense bf16 ({key})"
        return None, f"unknown GPU {name!r}: pass --peak-tflops"
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "no /proc/cpuinfo: pass --peak-tflops"
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    mhz = [float(ln.split(":")[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")]
    per_cycle = 64 if " avx512f" in flags else 32 if " fma" in flags and " avx2" in flags else 8
    if not mhz:
        return None, "no CPU clock in /proc/cpuinfo: pass --peak-tflops"
    threads = torch.get_num_threads()
    return (
        threads * max(mhz) * 1e6 * per_cycle,
        f"estimate: {threads} cores x {max(mhz):.0f} MHz x {per_cycle} FP32 FLOP/cycle",
    )


def forward_flops(model: nn.Module, *inputs: Any) -> float:
    """FLOPs (2 per multiply-add) of one forward pass through the Conv2d and Linear layers,
    per example of the batch ``inputs`` (training ≈ 3× this: forward + two backward)."""
    total = [0.0]

    def conv(m: nn.Conv2d, _: Any, out: torch.Tensor) -> None:
        total[0] += 2.0 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m: nn.Linear, _: Any, out: torch.Tensor) -> None:
        total[0] += 2.0 * out.numel() * m.in_features

    hooks = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    batch = inputs[0].shape[0]
    return total[0] / batch


def save(name: str, record: dict[str, Any], out: Path | None = None) -> Path:
    """Write the record as JSON (bench/results/<name>.json unless ``out``) and print it."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    for key, value in record.items():
        if not isinstance(value, dict | list):
            print(f"{key:>24}: {value}")
    print(f"{'saved':>24}: {path}", file=sys.stderr)
    return path


def timed(dev: torch.device) -> float:
    """A wall-clock reading after the device's queue has drained."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter()
