"""Benchmark: training-time overhead of the gradient noise scale at the default cadence.

Target (issue "Ground truth and in-training measurements"): at most 5% of training time at
the default ``noise_scale_every``. Times the fashion_mnist trainable directly (no Ray) with
the measurement on (default cadence) and off, at several batch sizes, with evaluation and
sharpness as in a real trial; the best of ``--repeats`` runs of each is compared. Prints
and saves bench/results/noise_scale.json (noise_scale_quick.json).

    .venv/bin/python bench/bench_noise_scale.py
    .venv/bin/python bench/bench_noise_scale.py --quick   # one small case, one repeat
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import Check, print_table, write_result  # noqa: E402
from trainables import get  # noqa: E402
from trainables.contract import Target, TrialConfig  # noqa: E402
from trainables.fashion_mnist import TrainableConfig  # noqa: E402

LIMIT = 0.05


def time_trial(batch_size: int, micro: int, every: int, steps: int) -> float:
    cfg = TrialConfig(
        batch_size=batch_size,
        micro_batch_size=micro,
        lr=0.02,
        seed=0,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=0.0,
        warmup_examples=0,
        max_steps=steps,
        max_examples=None,
        cpus=1,
        target=Target(value=1.0),
        stop_at_target=False,
        settings=TrainableConfig(noise_scale_every=every).model_dump(),
    )
    t0 = time.perf_counter()
    get("fashion_mnist")(cfg, lambda m, checkpoint=None: None)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one small case, one repeat (a smoke test)")
    p.add_argument("--repeats", type=int, help="runs of each case, the best kept (3; quick 1)")
    p.add_argument("--out", type=Path, help="results file (default bench/results/noise_scale[_quick].json)")
    args = p.parse_args()
    q = args.quick
    repeats = args.repeats or (1 if q else 3)
    default_every = TrainableConfig().noise_scale_every
    cases = [(16, 16, 2000), (128, 128, 600), (1024, 1024, 120), (1024, 256, 120)]
    if q:
        cases = [(64, 64, 8)]
    rows = []
    for b, mb, steps in cases:
        time_trial(b, mb, 0, 5)  # warm the data cache and allocator
        off = min(time_trial(b, mb, 0, steps) for _ in range(repeats))
        on = min(time_trial(b, mb, default_every, steps) for _ in range(repeats))
        rows.append(
            {
                "batch_size": b,
                "micro_batch_size": mb,
                "steps": steps,
                "off_s": round(off, 3),
                "on_s": round(on, 3),
                "overhead": round(on / off - 1, 4),
            }
        )
    print_table(rows)
    worst = max(r["overhead"] for r in rows)
    write_result(
        "noise_scale",
        quick=q,
        out=args.out,
        benchmark="gradient noise scale overhead at the default cadence, fashion_mnist MLP, 1 thread",
        goal_text=f"at most {LIMIT:.0%} of training time at noise_scale_every = {default_every}",
        checks=[Check("worst_overhead", "<=", LIMIT, worst)],
        figures={"noise_scale_every": default_every, "worst_overhead": worst, "repeats": repeats, "cases": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
