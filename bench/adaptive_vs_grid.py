"""Adaptive LR search against the full grid (project issue 16, part 3).

Runs a study twice with the same early stopping, once over the full grid and once with
``search.strategy = "adaptive"``, and compares examples trained, trials started, wall time,
B_crit with its 95% CI, and the best LR per batch size. Goal: the adaptive B_crit inside
the grid's CI, the best LR within one grid step at >= 90% of batch sizes, at most 1/5 of
the examples. Results: ``bench/results/adaptive_vs_grid.json``.

    .venv/bin/python -m bench.adaptive_vs_grid                # NQM (the built-in study)
    .venv/bin/python -m bench.adaptive_vs_grid --small        # the CI-sized NQM (seconds)
    .venv/bin/python -m bench.adaptive_vs_grid --study fashion-mnist   # ~6 min a run on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "bench" / "results" / "adaptive_vs_grid.json"
# The CI-sized NQM: 7 batch sizes (2^0..2^12, every other power), dim 1000, a grid of
# factors of 2 (2^-7 .. 2^2).
SMALL = [
    "trainable_config.dim=1000",
    "search.batch_sizes=[1, 4, 16, 64, 256, 1024, 4096]",
    "search.lr.min=0.0078125",
    "search.lr.max=4.0",
    "search.lr.points=10",
]


def examples_trained(run_dir: Path) -> int:
    """Examples every trial saw, summed (each trial's last examples_seen)."""
    from analysis import load_run

    c = load_run(run_dir).curves
    return int(c.groupby("trial_id")["examples_seen"].max().sum())


def run_one(study: Any, run_dir: Path) -> dict[str, Any]:
    """Sweep ``study`` into ``run_dir`` (Ray connected) and analyse it."""
    from analysis import load_run
    from analysis.fits import analyse
    from orchestrator import rundir
    from orchestrator.sweep import run_sweep

    rundir.create(run_dir, study)
    t0 = time.perf_counter()
    run_sweep(study, run_dir)
    wall = time.perf_counter() - t0
    a = analyse(load_run(run_dir), n_boot=200)
    per = {int(r.batch_size): r.best_lr for r in a.per_batch_rows}
    return {
        "run_dir": str(run_dir),
        "wall_s": round(wall, 2),
        "trials_started": int(len(a.trials)),
        "examples_trained": examples_trained(run_dir),
        "b_crit": a.critical.b_crit,
        "b_crit_ci95": list(a.critical.b_crit_ci95) if a.critical.b_crit_ci95 else None,
        "best_lr": per,
    }


def compare(grid: dict[str, Any], adaptive: dict[str, Any], log_step: float) -> dict[str, Any]:
    """The goal's figures and checks from two ``run_one`` results."""
    bs = sorted(grid["best_lr"])
    steps = {}
    for b in bs:
        g, a = grid["best_lr"].get(b), adaptive["best_lr"].get(b)
        steps[b] = (abs(math.log(a / g)) / log_step) if g and a and g > 0 and a > 0 else None
    within = [b for b, s in steps.items() if s is not None and s <= 1.0 + 1e-6]
    lo, hi = grid["b_crit_ci95"] or (None, None)
    bc, ba = grid["b_crit"], adaptive["b_crit"]
    fraction = adaptive["examples_trained"] / grid["examples_trained"]
    checks = [
        {
            "figure": "b_crit_inside_grid_ci95",
            "measured": ba,
            "target": [lo, hi],
            "met": bool(ba is not None and lo is not None and hi is not None and lo <= ba <= hi),
        },
        {
            "figure": "fraction_batch_sizes_best_lr_within_one_step",
            "op": ">=",
            "target": 0.9,
            "measured": len(within) / len(bs),
            "met": len(within) / len(bs) >= 0.9,
        },
        {"figure": "examples_fraction", "op": "<=", "target": 0.2, "measured": fraction, "met": fraction <= 0.2},
    ]
    return {
        "b_crit_relative_difference": (ba / bc - 1) if ba and bc else None,
        "examples_fraction": fraction,
        "trials_fraction": adaptive["trials_started"] / grid["trials_started"],
        "best_lr_steps_apart": {str(b): s for b, s in steps.items()},
        "checks": checks,
        "goal_met": all(c["met"] for c in checks),
    }


def compare_study(study_name: str, overrides: list[str], root: Path) -> dict[str, Any]:
    from orchestrator.lr_spec import LrGrid
    from orchestrator.study import load_study

    grid_study = load_study(study_name, overrides=overrides)
    adaptive_study = load_study(study_name, overrides=[*overrides, "search.strategy=adaptive"])
    grid = run_one(grid_study, root / "grid")
    adaptive = run_one(adaptive_study, root / "adaptive")
    lr = grid_study.search.lr
    log_step = (
        math.log(lr.max / lr.min) / (lr.points - 1)
        if isinstance(lr, LrGrid)
        else 2 * lr.decades * math.log(10) / (lr.points - 1)
    )
    return {
        "study": study_name,
        "overrides": overrides,
        "grid": grid,
        "adaptive": adaptive,
        **compare(grid, adaptive, log_step),
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in ("ray", "numpy", "pandas", "pyarrow", "torch"):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "loadavg": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", action="append", help="study name(s); default nqm")
    p.add_argument("--small", action="store_true", help="the CI-sized NQM instead")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args(argv)
    from cluster.local import local_ray

    studies = args.study or ["nqm"]
    results = []
    with tempfile.TemporaryDirectory() as tmp, local_ray(num_cpus=args.cpus):
        for name in studies:
            ov = SMALL if args.small and name == "nqm" else []
            r = compare_study(name, ov, Path(tmp) / name)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ("grid", "adaptive")}, indent=1, default=str))
            for side in ("grid", "adaptive"):
                s = r[side]
                print(
                    f"{name} {side}: {s['trials_started']} trials, {s['examples_trained']:.4g} examples, "
                    f"{s['wall_s']:.1f} s, B_crit {s['b_crit']} CI {s['b_crit_ci95']}",
                    flush=True,
                )
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    out = {
        "name": "adaptive_vs_grid",
        "benchmark": "adaptive LR search vs the full grid, same early stopping",
        "command": " ".join([sys.executable, "-m", "bench.adaptive_vs_grid", *(argv or sys.argv[1:])]),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "versions": _versions(),
        "git": {"commit": commit},
        "goal": {
            "text": "adaptive B_crit inside the full grid's 95% CI; best LR within one grid step "
            "at >= 90% of batch sizes; at most 1/5 of the examples"
        },
        "studies": results,
        "goal_met": all(r["goal_met"] for r in results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"goal_met: {out['goal_met']}  -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
