"""Benchmark: time ``analysis.write_report`` on a synthetic run of TRIALS x ROWS curve rows.

The issue's budget is 1,000 trials x 1,000 rows (one million rows) in at most 30 s,
bootstrap (1,000 resamples), figures and HTML included, in process and through the
command line (interpreter start and imports included). Generating the run is not timed.
Prints the result and saves it to bench/results/report.json (report_quick.json).

    .venv/bin/python bench/bench_report.py                    # 1000 trials x 1000 rows
    .venv/bin/python bench/bench_report.py --trials 200 --rows 100 --breakdown
    .venv/bin/python bench/bench_report.py --quick            # 40 trials x 50 rows, 50 resamples
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from analysis import write_report  # noqa: E402
from analysis.environment import environment_stamp  # noqa: E402
from analysis.synthetic import write_synthetic_run  # noqa: E402
from bench.common import Check, write_result  # noqa: E402

LIMIT_S = 30.0


def make_run(run_dir: Path, trials: int, rows: int) -> dict:
    batch_sizes = [32, 64, 128, 256, 512, 1024, 2048, 4096]
    seeds = 5
    n_lr = max(1, round(trials / (len(batch_sizes) * seeds)))
    truth = write_synthetic_run(
        run_dir,
        batch_sizes=batch_sizes,
        lr_grid=np.geomspace(1e-3, 10.0, n_lr),
        seeds=seeds,
        evals_per_trial=rows,
        spacing="linear",
        budget=4.0,
        noise_scale=500.0,
        truncate_unfinished=False,
        file_per_trial=True,
        rng_seed=1,
    )
    return {
        "trials": truth.n_trials,
        "rows": truth.n_rows,
        "batch_sizes": len(batch_sizes),
        "lrs": n_lr,
        "seeds": seeds,
        "files": truth.n_trials,
    }


def breakdown(run_dir: Path, n_boot: int) -> dict[str, float]:
    """Seconds per stage, the stages of write_report in order."""
    from analysis.document import build_document
    from analysis.figures import write_figures
    from analysis.fits import analyse
    from analysis.load import load_run
    from analysis.render import to_html, to_markdown
    from analysis.tables import write_tables

    out = run_dir / "report_breakdown"
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    run = load_run(run_dir)
    t["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    a = analyse(run, n_boot=n_boot)
    t["analyse (incl. bootstrap)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    figs = write_figures(a, out / "figures")
    t["figures"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tabs = write_tables(a, out / "tables")
    blocks = build_document(a, figs, tabs, environment_stamp())
    (out / "report.md").write_text(to_markdown(blocks, out))
    (out / "report.html").write_text(to_html(blocks, "bench"))
    t["tables + md + html"] = time.perf_counter() - t0
    return {k: round(v, 3) for k, v in t.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test of the benchmark)")
    p.add_argument("--trials", type=int, help="trials (1000; quick 40)")
    p.add_argument("--rows", type=int, help="curve rows per trial (1000; quick 50)")
    p.add_argument("--n-boot", type=int, help="bootstrap resamples (1000; quick 50)")
    p.add_argument("--breakdown", action="store_true", help="also time each stage (a second pass)")
    p.add_argument("--out", type=Path, help="results file (default bench/results/report[_quick].json)")
    args = p.parse_args()
    q = args.quick
    args.trials = args.trials or (40 if q else 1000)
    args.rows = args.rows or (50 if q else 1000)
    args.n_boot = args.n_boot or (50 if q else 1000)

    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        size = make_run(run_dir, args.trials, args.rows)
        gen_s = time.perf_counter() - t0
        print(f"generated {size['rows']:,} rows, {size['trials']} trials in {gen_s:.1f} s (not timed)")
        t0, c0 = time.perf_counter(), time.process_time()
        report = write_report(run_dir, n_boot=args.n_boot)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        fits = json.loads((report / "fits.json").read_text())
        # The same through the command line, interpreter start and imports included.
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "analysis.report",
                str(run_dir),
                "--out",
                str(Path(tmp) / "cli"),
                "--n-boot",
                str(args.n_boot),
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        cli_seconds = time.perf_counter() - t0
        stages = breakdown(run_dir, args.n_boot) if args.breakdown else None

    print(
        f"write_report: {seconds:.2f} s ({cpu_seconds:.2f} s CPU) for {size['rows']:,} rows x "
        f"{args.n_boot} bootstrap resamples; python -m analysis.report: {cli_seconds:.2f} s end to end"
    )
    if stages:
        for k, v in stages.items():
            print(f"  {k:28s} {v:7.2f} s")
    figures = {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "cli_seconds": round(cli_seconds, 2),
        "n_boot": args.n_boot,
        **size,
        "b_crit_fit": fits["critical_batch"]["b_crit"],
        "b_crit_true": 256.0,
    }
    write_result(
        "report",
        quick=q,
        out=args.out,
        benchmark="analysis.write_report on a synthetic run (bootstrap, figures, HTML)",
        goal_text=f"{size['trials']} trials x {args.rows} rows reported in at most {LIMIT_S:.0f} s, "
        "in process and through the command line",
        checks=[
            Check("write_report_s", "<=", LIMIT_S, round(seconds, 2)),
            Check("cli_s (python -m analysis.report)", "<=", LIMIT_S, round(cli_seconds, 2)),
        ],
        figures=figures,
        evidence={"stages_s": stages, "generate_s": round(gen_s, 1)},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
