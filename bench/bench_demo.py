"""Benchmark: wall time of the built-in Fashion-MNIST study (what `make demo` runs).

Target (issue "A batch-size × learning-rate study runs end to end"): the default study,
9 batch sizes × 9 LRs with per-batch-size ASHA, finishes in at most 10 minutes on this
machine's 2 cores. Runs the real sweep (local Ray, real data), then prints and saves the
wall time, trial statuses, per-batch-size results and a hardware/versions stamp to
bench/results/demo_study.json.

    .venv/bin/python bench/bench_demo.py                 # the full default study
    .venv/bin/python bench/bench_demo.py --budget smoke  # the smoke budget
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pyarrow.parquet as pq  # noqa: E402

import analysis  # noqa: E402
from analysis.environment import environment_stamp  # noqa: E402
from cluster.local import local_ray  # noqa: E402
from orchestrator import rundir  # noqa: E402
from orchestrator.study import load_study  # noqa: E402
from orchestrator.sweep import run_sweep  # noqa: E402

LIMIT_S = 600.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", choices=("full", "smoke"), default="full")
    p.add_argument("--keep", type=Path, help="keep the run directory here")
    args = p.parse_args()
    study = load_study("fashion-mnist", budget=args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep or Path(tmp) / "run"
        rundir.create(run_dir, study)
        t0 = time.perf_counter()
        with local_ray():
            run_sweep(study, run_dir)
        sweep_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        analysis.write_report(run_dir)
        report_s = time.perf_counter() - t1
        trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
        summary = analysis.per_batch_summary(analysis.load_run(run_dir))
        fits = json.loads((run_dir / "report" / "fits.json").read_text())
    result = {
        "benchmark": "default fashion-mnist study, local",
        "budget": args.budget,
        "trials": int(len(trials)),
        "status_counts": {k: int(v) for k, v in trials.status.value_counts().items()},
        "sweep_wall_s": round(sweep_s, 1),
        "report_wall_s": round(report_s, 1),
        "limit_s": LIMIT_S,
        "within_limit": sweep_s + report_s <= LIMIT_S,
        "per_batch": json.loads(summary.to_json(orient="records")),
        "critical_batch": fits.get("critical_batch"),
        "lr_scaling": fits.get("lr_scaling"),
        "environment": environment_stamp(),
    }
    out = REPO / "bench" / "results" / f"demo_study_{args.budget}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary.to_string(index=False))
    print(f"sweep {sweep_s:.1f} s + report {report_s:.1f} s for {len(trials)} trials "
          f"({result['status_counts']}); limit {LIMIT_S:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
