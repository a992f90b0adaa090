"""Benchmark: orchestration efficiency, batchscale's sweep beside stock Ray Tune.

busy fraction = sum of trial run time / (wall time x trial slots), on
(a) the default Fashion-MNIST study (9 batch sizes x 9 LRs, ASHA per batch size), run times
    from Tune (each segment's ``time_since_restore``: time inside the trainable) and, as a
    cross-check, from the curves' own ``wall_time_s``;
(b) N trials of 1 s of work (a trainable that sleeps 1/10 s and reports, 10 times; given as a
    file ``train.py:train`` in a study dict validated by ``orchestrator.study.validate``), run
    with ``run_sweep`` under ``local_ray(num_cpus=2)``, and the same N trials through a bare
    ``ray.tune.Tuner`` with default settings (the stock baseline), each arm in a fresh
    process with its own private Ray (``--repeats 2`` alternates them A B B A, to share the
    machine's drift). Run times come from the trainable's own clock (start/end in a file).
    Then both arms again, fewer trials, their drivers under cProfile (where the CPU goes).
Per-trial overhead: CPU seconds of every process of the arm (driver, Ray's GCS, raylet,
workers, agents; sampled from /proc every 0.5 s from outside, so workers that exit count; the
trainable sleeps, so all of it is orchestration) per trial, and the latency from one trial's
end to the next trial's start in the same slot.

Goal: busy fraction >= 0.90 on (a), and on (b) at least the stock baseline's. Anchor: Ray
Tune's own release test (tune_scalability_bookkeeping_overhead) runs 10,000 one-second
trials on 16 CPUs in 715 s against 625 s ideal (0.87).

    .venv/bin/python bench/bench_orchestration.py                          # ~25 min; (a) runs the study
    .venv/bin/python bench/bench_orchestration.py --fashion-run RUN_DIR    # (a) from bench_demo.py --keep RUN_DIR
    .venv/bin/python bench/bench_orchestration.py --quick                  # small sizes, < 1 min

Prints a table and writes bench/results/orchestration.json (orchestration_quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import Check, TreeSampler, print_table, timeline_figures, write_result  # noqa: E402

GOAL_FASHION = 0.90
ANCHOR = {
    "source": "Ray Tune release test tune_scalability_bookkeeping_overhead",
    "trials": 10_000,
    "trial_s": 1.0,
    "cpus": 16,
    "wall_s": 715.0,
    "ideal_s": 625.0,
    "useful_fraction": round(625 / 715, 3),
}

TRAIN_PY = '''"""1 s of work in REPORTS pieces: sleeps, reports; writes its start and end (time.time)."""
import json
import os
import time


def train(config, report):
    t0 = time.time()
    s = config.settings
    n, work = int(s["reports"]), float(s["work_s"])
    for i in range(1, n + 1):
        time.sleep(work / n)
        report({"step": i, "examples_seen": i * config.batch_size, "wall_time_s": time.time() - t0,
                "train_loss": 1.0, "val_loss": 1.0})
    t1 = time.time()
    with open(s["log"], "a") as f:
        f.write(json.dumps({"start": t0, "end": t1, "pid": os.getpid()}) + "\\n")
'''


# --------------------------------------------------------------------------- one arm, in its own process


def sleep_study(train_file: Path, log: Path, trials: int, work_s: float, reports: int) -> Any:
    from orchestrator.study import validate

    n_b = 10 if trials % 10 == 0 else 1
    return validate(
        {
            "name": "bench-1s-trials",
            "trainable": f"{train_file}:train",
            "trainable_config": {"work_s": work_s, "reports": reports, "log": str(log)},
            "search": {
                "batch_sizes": [2**k for k in range(n_b)],
                "lr": {"min": 0.001, "max": 1.0, "points": trials // n_b}
                if trials // n_b > 1
                else {"min": 0.01, "max": 0.01, "points": 1},
                "seeds": 1,
            },
            "budget": {"max_steps": reports, "stop_at_target": False},
            "target": {"metric": "val_loss", "mode": "min", "value": 0.0},
            "early_stopping": {"scheduler": "none"},
            "resources": {"cpus_per_trial": 1},
        }
    )


def stock_tuner(storage: Path, log: Path, trials: int, work_s: float, reports: int) -> Any:
    from ray import tune

    def trainable(config: dict[str, Any]) -> None:
        t0 = time.time()
        for i in range(1, reports + 1):
            time.sleep(work_s / reports)
            tune.report({"step": i, "val_loss": 1.0})
        t1 = time.time()
        with open(log, "a") as f:
            f.write(json.dumps({"start": t0, "end": t1, "pid": os.getpid()}) + "\n")

    # Default settings throughout; only the results go under this run's temp dir, not ~/ray_results.
    return tune.Tuner(
        trainable,
        param_space={"i": tune.grid_search(list(range(trials)))},
        run_config=tune.RunConfig(name="stock", storage_path=str(storage)),
    )


def run_arm(args: argparse.Namespace) -> dict[str, Any]:
    """One arm (batchscale | stock | fashion) on a fresh private Ray; returns its raw figures."""
    with tempfile.TemporaryDirectory(prefix="bench_orch_") as tmp:
        return _run_arm(args, Path(tmp))


def _run_arm(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import resource

    from cluster.local import local_ray

    log = tmp / "trials.jsonl"
    profile = None
    with local_ray(num_cpus=args.cpus if args.arm != "fashion" else None):
        if args.arm == "fashion":
            from bench import probe
            from orchestrator import rundir
            from orchestrator.study import load_study

            study = load_study("fashion-mnist", budget=args.budget, overrides=args.set)
            run_dir = args.keep or tmp / "run"
            rundir.create(run_dir, study)
            return {"arm": "fashion", **probe.run_instrumented(study, run_dir)}
        if args.arm == "batchscale":
            from bench import probe
            from orchestrator.sweep import run_sweep

            (tmp / "train.py").write_text(TRAIN_PY)
            study = sleep_study(tmp / "train.py", log, args.trials, args.work_s, args.reports)

            def fit() -> Any:
                with probe.instrumented():
                    return run_sweep(study, tmp / "run")
        else:
            tuner = stock_tuner(tmp / "tune", log, args.trials, args.work_s, args.reports)
            fit = tuner.fit
        ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
        if args.profile:
            from bench.probe import profiled

            _, profile = profiled(fit)
        else:
            fit()
        t1, ru1 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    out: dict[str, Any] = {
        "arm": args.arm,
        "t0": t0,
        "t1": t1,
        "intervals": [(x["start"], x["end"]) for x in lines],
        "actors": len({x["pid"] for x in lines}),
        "driver_cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3),
        "profile": profile,
    }
    if args.arm == "batchscale":
        from bench import probe

        data = probe.read(tmp / "run")
        out["sink_cpu_s"], out["sink_wall_s"] = probe.sink_cpu(data)
    return out


def arm(kind: str, args: argparse.Namespace, extra: list[str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run one arm in a fresh interpreter (so the stock arm sees none of batchscale's Tune
    settings), its CPU and its Ray's sampled from here (``TreeSampler``); returns its figures."""
    with tempfile.TemporaryDirectory(prefix="bench_arm_") as tmp:
        out = Path(tmp) / "arm.json"
        cmd = [
            sys.executable,
            __file__,
            "--arm",
            kind,
            "--arm-out",
            str(out),
            "--trials",
            str(args.trials),
            "--work-s",
            str(args.work_s),
            "--reports",
            str(args.reports),
            "--cpus",
            str(args.cpus),
            "--budget",
            args.budget,
            *(extra or []),
        ]
        for s in args.set:
            cmd += ["--set", s]
        print(f"  {kind}{' (profiled)' if '--profile' in (extra or []) else ''} ...", flush=True)
        log = Path(tmp) / "arm.log"
        with log.open("w") as f:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, text=True)
            sampler = TreeSampler(proc.pid)
            try:
                rc = proc.wait(timeout=timeout)
            finally:
                sampler.stop()
        if rc != 0:
            sys.stderr.write(log.read_text()[-6000:])
            raise SystemExit(f"arm {kind} failed (exit {rc})")
        raw = json.loads(out.read_text())
        if "t0" in raw:
            raw["cpu_by_process_s"] = sampler.window(raw["t0"], raw["t1"])
        return raw


# --------------------------------------------------------------------------- figures


def one_second_figures(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    fig = timeline_figures(raw["intervals"], args.cpus, raw["t0"], raw["t1"], work_s=args.work_s)
    cpu = sum(raw["cpu_by_process_s"].values())
    fig.update(
        {
            "actors": raw["actors"],
            "cpu_s": round(cpu, 2),
            "cpu_per_trial_s": round(cpu / fig["trials"], 4),
            "driver_cpu_per_trial_s": round(raw["driver_cpu_s"] / fig["trials"], 4),
            "cpu_by_process_s": raw["cpu_by_process_s"],
        }
    )
    if "sink_cpu_s" in raw:
        fig["sink_cpu_s"] = round(raw["sink_cpu_s"], 3)
        fig["sink_share_of_driver_cpu"] = round(raw["sink_cpu_s"] / raw["driver_cpu_s"], 4)
    return fig


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test of the benchmark)")
    p.add_argument("--trials", type=int, help="one-second trials per arm (200; quick 8)")
    p.add_argument("--work-s", type=float, help="work per trial, seconds (1.0; quick 0.2)")
    p.add_argument("--reports", type=int, default=10, help="reports per trial")
    p.add_argument("--cpus", type=int, default=2, help="Ray CPUs = trial slots for (b)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each arm of (b), alternating A B B A ...")
    p.add_argument("--profile-trials", type=int, help="trials of the profiled arms (40; quick: none)")
    p.add_argument("--fashion-run", type=Path, help="for (a), a run directory of bench_demo.py --keep")
    p.add_argument("--no-fashion", action="store_true", help="skip (a)")
    p.add_argument("--budget", choices=("full", "smoke"), help="(a)'s budget when it runs here (full; quick smoke)")
    p.add_argument("--set", action="append", default=[], help="(a)'s study overrides when it runs here")
    p.add_argument("--out", type=Path, help="results file (default bench/results/orchestration[_quick].json)")
    p.add_argument("--arm", choices=("batchscale", "stock", "fashion"), help=argparse.SUPPRESS)
    p.add_argument("--arm-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--keep", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    q = args.quick
    args.trials = args.trials or (8 if q else 200)
    args.work_s = args.work_s or (0.2 if q else 1.0)
    args.budget = args.budget or ("smoke" if q else "full")
    if args.arm:
        args.arm_out.write_text(json.dumps(run_arm(args)) + "\n")
        return 0
    repeats = args.repeats
    profile_trials = args.profile_trials if args.profile_trials is not None else (0 if q else 40)

    print(
        f"(b) {args.trials} trials of {args.work_s:g} s, {args.reports} reports each, {args.cpus} slots; "
        f"{repeats} run(s) of each arm, alternating"
    )
    runs: dict[str, list[dict[str, Any]]] = {"batchscale": [], "stock": []}
    for r in range(repeats):
        for kind in ("batchscale", "stock") if r % 2 == 0 else ("stock", "batchscale"):
            runs[kind].append(one_second_figures(arm(kind, args), args))
    profiles = {}
    if profile_trials:
        sub = argparse.Namespace(**{**vars(args), "trials": profile_trials})
        for kind in ("batchscale", "stock"):
            raw = arm(kind, sub, ["--profile"])
            profiles[kind] = {"trials": profile_trials, "results": profile_trials * args.reports, **raw["profile"]}

    fashion = None
    if not args.no_fashion:
        if args.fashion_run:
            from bench import probe

            fashion = {"source": f"reused run {args.fashion_run}", **probe.summarize(args.fashion_run)}
        else:
            print(f"(a) fashion-mnist, budget {args.budget} ...", flush=True)
            fashion = {"source": "run here", **arm("fashion", args, timeout=3600)}
            fashion.pop("arm")
        fashion.pop("profile", None)

    def summary(kind: str) -> dict[str, Any]:
        rs = runs[kind]
        keys = (
            "busy_fraction",
            "useful_fraction",
            "wall_s",
            "in_trial_overhead_ms",
            "cpu_per_trial_s",
            "driver_cpu_per_trial_s",
        )
        out: dict[str, Any] = {k: round(mean([r[k] for r in rs]), 4) for k in keys}
        out["gap_ms_median"] = round(mean([r["gap_ms"]["median"] or 0.0 for r in rs]), 1)
        out["gap_ms_mean"] = round(mean([r["gap_ms"]["mean"] or 0.0 for r in rs]), 1)
        out["runs"] = rs
        return out

    bs, st = summary("batchscale"), summary("stock")
    table = [
        {
            "arm": k,
            "busy": s["busy_fraction"],
            "useful": s["useful_fraction"],
            "wall_s": s["wall_s"],
            "in_trial_ms": s["in_trial_overhead_ms"],
            "gap_ms_med": s["gap_ms_median"],
            "cpu_s/trial": s["cpu_per_trial_s"],
            "driver_cpu_s/trial": s["driver_cpu_per_trial_s"],
        }
        for k, s in (("batchscale", bs), ("stock Tune", st))
    ]
    print(f"\n(b) {args.trials} x {args.work_s:g} s trials on {args.cpus} slots (mean of {repeats}):")
    print_table(table)
    if fashion:
        print(
            f"\n(a) fashion-mnist ({fashion['source']}): {fashion['trials']} trials, wall {fashion['wall_s']} s, "
            f"busy {fashion['busy_fraction']} (curves' clocks {fashion['busy_fraction_curves']}), "
            f"idle slot-s {fashion['timeline_tune']['idle_slot_s']}"
        )
    checks = [Check("busy_fraction_1s_trials (>= stock Tune's)", ">=", st["busy_fraction"], bs["busy_fraction"])]
    if fashion:
        checks.insert(0, Check("busy_fraction_fashion_mnist", ">=", GOAL_FASHION, fashion["busy_fraction"]))
    figures = {
        "fashion_mnist": fashion,
        "one_second_trials": {
            "trials": args.trials,
            "work_s": args.work_s,
            "reports": args.reports,
            "slots": args.cpus,
            "repeats": repeats,
            "batchscale": bs,
            "stock_tune": st,
            "busy_ratio_batchscale_to_stock": round(bs["busy_fraction"] / st["busy_fraction"], 3),
            "wall_ratio_batchscale_to_stock": round(bs["wall_s"] / st["wall_s"], 3),
        },
        "anchor": ANCHOR,
    }
    write_result(
        "orchestration",
        quick=q,
        out=args.out,
        benchmark="busy fraction of trial slots: the default study, and 1 s trials beside stock Ray Tune",
        goal_text=f"busy fraction >= {GOAL_FASHION} on the default fashion-mnist study, and on "
        f"{args.trials} one-second trials at least stock Ray Tune's (bare Tuner, default settings)",
        checks=checks,
        figures=figures,
        evidence={"driver_profiles": profiles},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
