"""Benchmark: training-time overhead of the gradient noise scale at the default cadence.

Target (issue "Ground truth and in-training measurements"): at most 5% of training time at
the default ``noise_scale_every``. Times the fashion_mnist trainable directly (no Ray) with
the measurement on (default cadence) and off, at several batch sizes, with evaluation and
sharpness as in a real trial; the best of ``--repeats`` runs of each is compared. Prints
and saves bench/results/noise_scale_overhead.json with a hardware/versions stamp.

    .venv/bin/python bench/bench_noise_scale.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from analysis.environment import environment_stamp  # noqa: E402
from trainables import get  # noqa: E402
from trainables.contract import Target, TrialConfig  # noqa: E402
from trainables.fashion_mnist import TrainableConfig  # noqa: E402

LIMIT = 0.05


def time_trial(batch_size: int, micro: int, every: int, steps: int) -> float:
    cfg = TrialConfig(batch_size=batch_size, micro_batch_size=micro, lr=0.02, seed=0, optimizer="sgd",
                      momentum=0.9, weight_decay=0.0, warmup_examples=0, max_steps=steps, max_examples=None,
                      cpus=1, target=Target(value=1.0), stop_at_target=False,
                      settings=TrainableConfig(noise_scale_every=every).model_dump())
    t0 = time.perf_counter()
    get("fashion_mnist")(cfg, lambda m, checkpoint=None: None)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    default_every = TrainableConfig().noise_scale_every
    cases = [(16, 16, 2000), (128, 128, 600), (1024, 1024, 120), (1024, 256, 120)]
    rows = []
    for b, mb, steps in cases:
        time_trial(b, mb, 0, 5)  # warm the data cache and allocator
        off = min(time_trial(b, mb, 0, steps) for _ in range(args.repeats))
        on = min(time_trial(b, mb, default_every, steps) for _ in range(args.repeats))
        rows.append({"batch_size": b, "micro_batch_size": mb, "steps": steps, "off_s": round(off, 3),
                     "on_s": round(on, 3), "overhead": round(on / off - 1, 4)})
        print(f"B={b:5d} micro={mb:5d} steps={steps:5d}: off {off:.2f} s, on {on:.2f} s, "
              f"overhead {100 * (on / off - 1):+.1f}%")
    worst = max(r["overhead"] for r in rows)
    result = {"benchmark": "noise-scale overhead, fashion_mnist MLP, 1 thread",
              "noise_scale_every": default_every, "limit": LIMIT, "worst_overhead": worst,
              "within_limit": worst <= LIMIT, "cases": rows, "environment": environment_stamp()}
    out = REPO / "bench" / "results" / "noise_scale_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"worst overhead {100 * worst:+.1f}% (limit {100 * LIMIT:.0f}%) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
