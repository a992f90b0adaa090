"""Benchmark: time ``analysis.write_report`` on a synthetic run of TRIALS x ROWS curve rows.

The issue's budget is 1,000 trials x 1,000 rows (one million rows) in at most 30 s,
bootstrap (1,000 resamples), figures and HTML included. Generating the run is not timed.
Prints the result and saves it, with a hardware/versions stamp, to
bench/results/report_speed.json.

    .venv/bin/python bench/bench_report.py                    # 1000 trials x 1000 rows
    .venv/bin/python bench/bench_report.py --trials 200 --rows 100 --breakdown
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

LIMIT_S = 30.0


def make_run(run_dir: Path, trials: int, rows: int) -> dict:
    batch_sizes = [32, 64, 128, 256, 512, 1024, 2048, 4096]
    seeds = 5
    n_lr = max(1, round(trials / (len(batch_sizes) * seeds)))
    truth = write_synthetic_run(
        run_dir, batch_sizes=batch_sizes, lr_grid=np.geomspace(1e-3, 10.0, n_lr), seeds=seeds,
        evals_per_trial=rows, spacing="linear", budget=4.0, noise_scale=500.0,
        truncate_unfinished=False, file_per_trial=True, rng_seed=1,
    )
    return {"trials": truth.n_trials, "rows": truth.n_rows, "batch_sizes": len(batch_sizes),
            "lrs": n_lr, "seeds": seeds, "files": truth.n_trials}


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
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--rows", type=int, default=1000, help="curve rows per trial")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--breakdown", action="store_true", help="also time each stage (a second pass)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "report_speed.json")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        size = make_run(run_dir, args.trials, args.rows)
        gen_s = time.perf_counter() - t0
        print(f"generated {size['rows']:,} rows, {size['trials']} trials in {gen_s:.1f} s (not timed)")
        t0 = time.perf_counter()
        report = write_report(run_dir, n_boot=args.n_boot)
        seconds = time.perf_counter() - t0
        fits = json.loads((report / "fits.json").read_text())
        # The same through the command line, interpreter start and imports included.
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "analysis.report", str(run_dir), "--out", str(Path(tmp) / "cli"),
                        "--n-boot", str(args.n_boot)], cwd=REPO, check=True, capture_output=True)
        cli_seconds = time.perf_counter() - t0
        stages = breakdown(run_dir, args.n_boot) if args.breakdown else None

    result = {
        "benchmark": "analysis.write_report on a synthetic run",
        "seconds": round(seconds, 2),
        "cli_seconds": round(cli_seconds, 2),
        "limit_s": LIMIT_S,
        "within_limit": max(seconds, cli_seconds) <= LIMIT_S,
        "n_boot": args.n_boot,
        **size,
        "b_crit_fit": fits["critical_batch"]["b_crit"],
        "b_crit_true": 256.0,
        "stages_s": stages,
        "environment": environment_stamp(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"write_report: {seconds:.2f} s for {size['rows']:,} rows x {args.n_boot} bootstrap resamples "
          f"(limit {LIMIT_S:.0f} s: {'OK' if seconds <= LIMIT_S else 'OVER'})")
    print(f"python -m analysis.report: {cli_seconds:.2f} s end to end")
    if stages:
        for k, v in stages.items():
            print(f"  {k:28s} {v:7.2f} s")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
