"""Benchmark: wall time of the built-in Fashion-MNIST study (what `make demo` runs).

Target (issue "A batch-size × learning-rate study runs end to end"): the default study,
9 batch sizes × 9 LRs with per-batch-size ASHA, finishes in at most 10 minutes on this
machine's 2 cores, sweep and report. Runs the real sweep (local Ray, real data) with the
sink timed and each trial's timeline noted (bench/probe.py: two clock reads per sink hook),
then the report; prints and saves the wall times, trial statuses, per-batch-size results,
the busy fraction of the trial slots and the sink's share of the driver's CPU.

    .venv/bin/python bench/bench_demo.py                   # the full default study (~6 min)
    .venv/bin/python bench/bench_demo.py --keep RUN_DIR    # and keep the run (bench_orchestration.py
                                                           #   --fashion-run, bench_sink.py --sweep-run)
    .venv/bin/python bench/bench_demo.py --quick           # --budget smoke

Writes bench/results/demo.json (demo_quick.json for the smoke budget).
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
from bench import probe  # noqa: E402
from bench.common import Check, write_result  # noqa: E402
from cluster.local import local_ray  # noqa: E402
from orchestrator import rundir  # noqa: E402
from orchestrator.study import load_study  # noqa: E402

LIMIT_S = 600.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the smoke budget (a smoke test of the benchmark)")
    p.add_argument("--budget", choices=("full", "smoke"), default="full")
    p.add_argument("--set", action="append", default=[], help="study overrides (KEY=VALUE)")
    p.add_argument("--keep", type=Path, help="keep the run directory here")
    p.add_argument("--out", type=Path, help="results file (default bench/results/demo[_quick].json)")
    args = p.parse_args()
    budget = "smoke" if args.quick else args.budget
    quick = budget == "smoke" or bool(args.set)
    study = load_study("fashion-mnist", budget=budget, overrides=args.set)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep or Path(tmp) / "run"
        rundir.create(run_dir, study)
        t0 = time.perf_counter()
        with local_ray():
            sweep = probe.run_instrumented(study, run_dir)
        sweep_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        analysis.write_report(run_dir)
        report_s = time.perf_counter() - t1
        trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
        summary = analysis.per_batch_summary(analysis.load_run(run_dir))
        fits = json.loads((run_dir / "report" / "fits.json").read_text())
    print(summary.to_string(index=False))
    print(
        f"sweep {sweep_s:.1f} s (Ray start included) + report {report_s:.1f} s for {len(trials)} trials "
        f"({sweep['status_counts']}); busy fraction {sweep['busy_fraction']}, "
        f"sink {sweep['sink_share_of_driver_cpu']:.2%} of the driver's CPU"
    )
    figures = {
        "budget": budget,
        "overrides": args.set,
        "trials": int(len(trials)),
        "status_counts": sweep["status_counts"],
        "sweep_wall_s": round(sweep_s, 1),
        "report_wall_s": round(report_s, 1),
        "total_s": round(sweep_s + report_s, 1),
        "busy_fraction": sweep["busy_fraction"],
        "busy_fraction_curves": sweep["busy_fraction_curves"],
        "sink_share_of_driver_cpu": sweep["sink_share_of_driver_cpu"],
        "per_batch": json.loads(summary.to_json(orient="records")),
        "critical_batch": fits.get("critical_batch"),
        "lr_scaling": fits.get("lr_scaling"),
    }
    sweep.pop("profile", None)
    write_result(
        "demo",
        quick=quick,
        out=args.out,
        benchmark="the default fashion-mnist study end to end, local (sweep + report)",
        goal_text=f"sweep + report of the default study in at most {LIMIT_S:.0f} s on this machine",
        checks=[Check("sweep_plus_report_s", "<=", LIMIT_S, round(sweep_s + report_s, 1))],
        figures=figures,
        evidence={"sweep": sweep, "kept_run": str(args.keep) if args.keep else None},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
