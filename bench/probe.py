"""Instruments a real sweep from the outside: the sink, timed, and each trial's timeline.

``instrumented()`` makes ``orchestrator.sweep.run_sweep`` build a ``TimedSink`` (the
project's ``ParquetSink``, unchanged, with its Tune hooks timed) in place of the sink; at the
end of the experiment it writes ``RUN_DIR/bench_probe.json``: the CPU (calling thread) and
wall seconds of every sink hook, and per trial the driver's times of its start, first and
last result and end, Tune's ``time_total_s`` (time inside the trainable up to its last
report) and the actor's pid. The timing costs two clock reads per hook call.

    with probe.instrumented():
        run_sweep(study, run_dir)
    data = probe.read(run_dir)

``profiled()`` runs a callable under cProfile with a CPU clock (``time.thread_time``: the
calling thread, so blocking waits cost nothing) and groups the time by where it is spent.
"""

from __future__ import annotations

import contextlib
import cProfile
import functools
import json
import pstats
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orchestrator.sweep
from orchestrator.sink import ParquetSink

PROBE_FILE = "bench_probe.json"
HOOKS = ("on_trial_result", "on_trial_complete", "on_trial_error", "on_experiment_end", "get_state", "set_state")


def _timed(name: str) -> Callable[..., Any]:
    base = getattr(ParquetSink, name)

    @functools.wraps(base)
    def hook(self: TimedSink, *args: Any, **kwargs: Any) -> Any:
        c, w = time.thread_time(), time.perf_counter()
        try:
            return base(self, *args, **kwargs)
        finally:
            t = self.hook_times.setdefault(name, [0, 0.0, 0.0])
            t[0] += 1
            t[1] += time.thread_time() - c
            t[2] += time.perf_counter() - w

    return hook


class TimedSink(ParquetSink):
    """``ParquetSink`` with its hooks timed, noting each trial's timeline (driver clock)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hook_times: dict[str, list[float]] = {}
        self.flush_times: dict[str, list[float]] = {}
        self.timeline: dict[str, dict[str, Any]] = {}
        self.clock0 = (time.time(), time.perf_counter())

    def _trial(self, trial: Any) -> dict[str, Any]:
        return self.timeline.setdefault(trial.trial_id, {"batch_size": None, "results": 0, "segments": []})

    # A trial runs in one or more segments: a pause (the scheduler's) ends one, its restart
    # begins the next. Each segment: Tune's start of it, the driver's receipt of its first and
    # last results, and Tune's time_since_restore at the last (time inside the trainable).
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial(trial)["segments"].append({"started": time.time(), "results": 0})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        now = time.time()
        t = self._trial(trial)
        if not t["segments"] or (result.get("iterations_since_restore") == 1 and t["segments"][-1]["results"]):
            t["segments"].append({"results": 0})
        seg = t["segments"][-1]
        t["results"] += 1
        seg["results"] += 1
        if "first_result" not in seg:
            seg["first_result"], seg["first_iter_s"] = now, result.get("time_this_iter_s")
        seg["last_result"], seg["since_restore_s"], seg["pid"] = (
            now,
            result.get("time_since_restore"),
            result.get("pid"),
        )
        t["time_total_s"] = result.get("time_total_s")
        _on_trial_result(self, iteration, trials, trial, result, **info)

    def flush(self, rec: Any) -> None:
        # inside the hooks (already counted there): the share of their time that rewrites files
        c, w = time.thread_time(), time.perf_counter()
        dirty = rec.dirty
        super().flush(rec)
        t = self.flush_times.setdefault("flush" if dirty else "flush (clean, no-op)", [0, 0.0, 0.0])
        t[0] += 1
        t[1] += time.thread_time() - c
        t[2] += time.perf_counter() - w

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial(trial)["ended"] = time.time()
        _on_trial_complete(self, iteration, trials, trial, **info)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial(trial)["ended"] = time.time()
        _on_trial_error(self, iteration, trials, trial, **info)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        _on_experiment_end(self, trials, **info)
        for tid, rec in self.records.items():
            self.timeline.setdefault(tid, {"results": 0})["batch_size"] = rec.config.batch_size
        data = {
            "hooks": {
                k: {"calls": int(v[0]), "cpu_s": round(v[1], 4), "wall_s": round(v[2], 4)}
                for k, v in self.hook_times.items()
            },
            "within_hooks": {
                k: {"calls": int(v[0]), "cpu_s": round(v[1], 4), "wall_s": round(v[2], 4)}
                for k, v in self.flush_times.items()
            },
            "flush_every_s": self.flush_every_s,
            "trials": self.timeline,
        }
        (self.run_dir / PROBE_FILE).write_text(json.dumps(data, indent=1) + "\n")


_on_trial_result = _timed("on_trial_result")
_on_trial_complete = _timed("on_trial_complete")
_on_trial_error = _timed("on_trial_error")
_on_experiment_end = _timed("on_experiment_end")
TimedSink.get_state = _timed("get_state")  # type: ignore[method-assign]
TimedSink.set_state = _timed("set_state")  # type: ignore[method-assign]


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    """``run_sweep`` builds a ``TimedSink`` instead of a ``ParquetSink`` inside this block."""
    saved = orchestrator.sweep.ParquetSink
    orchestrator.sweep.ParquetSink = TimedSink  # type: ignore[misc]
    try:
        yield
    finally:
        orchestrator.sweep.ParquetSink = saved  # type: ignore[misc]


def read(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / PROBE_FILE).read_text())


def sink_cpu(data: dict[str, Any]) -> tuple[float, float]:
    """(CPU s, wall s) the sink's hooks took, all hooks together."""
    return (sum(h["cpu_s"] for h in data["hooks"].values()), sum(h["wall_s"] for h in data["hooks"].values()))


def tune_intervals(data: dict[str, Any]) -> list[tuple[float, float]]:
    """Each trial segment's time in its trainable as Tune measured it (``time_since_restore``
    at its last result), ending at the driver's receipt of that result (time.time clock)."""
    return [
        (seg["last_result"] - seg["since_restore_s"], seg["last_result"])
        for t in data["trials"].values()
        for seg in t["segments"]
        if seg.get("last_result") is not None and seg.get("since_restore_s") is not None
    ]


def driver_intervals(data: dict[str, Any]) -> list[tuple[float, float]]:
    """Each trial segment from Tune's start of it to its last result, as the driver saw them
    (a trial paused at a rung and then stopped there ends at its last result)."""
    return [
        (seg["started"], seg["last_result"])
        for t in data["trials"].values()
        for seg in t["segments"]
        if "started" in seg and "last_result" in seg
    ]


# --------------------------------------------------------------------------- cProfile, grouped

GROUPS: tuple[tuple[str, str], ...] = (
    ("orchestrator/sink.py", "batchscale sink"),
    ("orchestrator/progress.py", "batchscale progress"),
    ("orchestrator/scheduler.py", "batchscale scheduler"),
    ("orchestrator/rungs.py", "batchscale scheduler"),
    ("orchestrator/tune_config.py", "batchscale TrialConfig from Tune's config"),
    ("trainables/contract.py", "batchscale TrialConfig from Tune's config"),
    ("orchestrator/", "batchscale other"),
    ("trainables/", "batchscale other"),
    ("bench/", "bench probe"),
    ("ray/tune/execution/", "tune controller loop"),
    ("ray/tune/experiment/", "tune trial bookkeeping"),
    ("ray/tune/utils/", "tune utils (incl. result flattening)"),
    ("ray/tune/", "tune other"),
    ("ray/train/", "ray train/air (storage, checkpoints)"),
    ("ray/air/", "ray train/air (storage, checkpoints)"),
    ("ray/_private/", "ray core (python)"),
    ("ray/actor.py", "ray core (python)"),
    ("ray/", "ray other"),
    ("pyarrow/", "pyarrow"),
    ("pydantic", "pydantic"),
    ("cloudpickle", "serialization (pickle/json)"),
    ("pickle", "serialization (pickle/json)"),
    ("json/", "serialization (pickle/json)"),
)


def _group(filename: str) -> str | None:
    """The group of a function's file; None for the standard library and builtins, whose
    time belongs to whoever called them."""
    if (
        filename in ("~", "")
        or filename.startswith("<")
        or ("/lib/python3" in filename and "site-packages" not in filename)
    ):
        return None
    for key, name in GROUPS:
        if key in filename:
            return name
    return "other site-packages"


def grouped(stats: pstats.Stats) -> dict[str, float]:
    """CPU seconds by group. The own time of a standard-library function or builtin (deepcopy,
    json, pathlib, ...) goes to the nearest callers outside the standard library, in
    proportion to the time it spent for each of them."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    memo: dict[Any, dict[str, float]] = {}

    def owners(func: Any, depth: int = 0) -> dict[str, float]:
        if func in memo:
            return memo[func]
        g = _group(func[0])
        if g is not None:
            return {g: 1.0}
        callers = raw[func][4] if func in raw else {}
        total = sum(v[3] for v in callers.values())
        if depth > 40 or not callers or total <= 0:
            return {"python stdlib (no caller outside it)": 1.0}
        memo[func] = {"python stdlib (no caller outside it)": 1.0}  # a cycle's fallback
        out: dict[str, float] = {}
        for caller, v in callers.items():
            for k, w in owners(caller, depth + 1).items():
                out[k] = out.get(k, 0.0) + w * v[3] / total
        memo[func] = out
        return out

    acc: dict[str, float] = {}
    for func, (_cc, _nc, tt, _ct, _callers) in raw.items():
        for k, w in owners(func).items():
            acc[k] = acc.get(k, 0.0) + tt * w
    return dict(sorted(((k, round(v, 3)) for k, v in acc.items()), key=lambda kv: -kv[1]))


def profiled(fn: Callable[[], Any], top: int = 15) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` under cProfile (thread CPU clock); returns its value and the profile:
    total CPU seconds of this thread, seconds by group, and the top functions by own time."""
    prof = cProfile.Profile(time.thread_time)
    value = prof.runcall(fn)
    stats = pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    tops = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    sink_hooks = sum(v[3] for f, v in raw.items() if f[0].endswith("orchestrator/sink.py") and f[2] in HOOKS)
    return value, {
        "thread_cpu_s": round(total, 3),
        "by_group_s": grouped(stats),
        "sink_hooks_cumulative_s": round(sink_hooks, 3),
        "top_own_time": [
            {
                "function": f"{Path(f[0]).name}:{f[1]}:{f[2]}",
                "calls": v[1],
                "own_s": round(v[2], 3),
                "cumulative_s": round(v[3], 3),
            }
            for f, v in tops
        ],
    }


# --------------------------------------------------------------------------- a whole sweep

SWEEP_FILE = "bench_sweep.json"


def run_instrumented(study: Any, run_dir: Path, profile: bool = False) -> dict[str, Any]:
    """``run_sweep(study, run_dir)`` on the connected Ray, instrumented (and under cProfile
    if ``profile``); writes RUN_DIR/bench_sweep.json (clock, slots, CPU by process) and
    returns ``summarize(run_dir)``."""
    import resource

    import ray

    from bench.common import cpu_delta, tree_cpu

    slots = int(ray.cluster_resources().get("CPU", 1) // study.resources.cpus_per_trial)
    before, ru0, t0 = tree_cpu(), resource.getrusage(resource.RUSAGE_SELF), time.time()
    prof = None
    with instrumented():
        if profile:
            _, prof = profiled(lambda: orchestrator.sweep.run_sweep(study, run_dir))
        else:
            orchestrator.sweep.run_sweep(study, run_dir)
    t1, ru1, after = time.time(), resource.getrusage(resource.RUSAGE_SELF), tree_cpu()
    sweep = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0)),
        "t0": t0,
        "t1": t1,
        "slots": slots,
        "profiled": profile,
        "driver_cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3),
        "cpu_by_process_s": cpu_delta(before, after),
        "profile": prof,
    }
    (Path(run_dir) / SWEEP_FILE).write_text(json.dumps(sweep, indent=1) + "\n")
    return summarize(run_dir)


def summarize(run_dir: Path) -> dict[str, Any]:
    """The orchestration and sink figures of an instrumented sweep's run directory."""
    import pyarrow.parquet as pq

    from bench.common import timeline_figures

    run_dir = Path(run_dir)
    sweep = json.loads((run_dir / SWEEP_FILE).read_text())
    data = read(run_dir)
    t0, t1, slots = sweep["t0"], sweep["t1"], sweep["slots"]
    wall = t1 - t0
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    cpu, hook_wall = sink_cpu(data)
    tune = timeline_figures(tune_intervals(data), slots, t0, t1)
    driver = timeline_figures(driver_intervals(data), slots, t0, t1)
    return {
        "run_dir": str(run_dir),
        "date_utc": sweep["date_utc"],
        "profiled": sweep["profiled"],
        "trials": int(len(trials)),
        "status_counts": {k: int(v) for k, v in trials.status.value_counts().items()},
        "slots": slots,
        "wall_s": round(wall, 2),
        # time inside the trainable as Tune counts it (time_total_s at the last result)
        "busy_fraction": tune["busy_fraction"],
        # the trainables' own training-loop clocks (curves' wall_time_s at the last row)
        "busy_fraction_curves": round(float(trials.wall_time_s.sum()) / (wall * slots), 4),
        # from Tune's start of a trial to its end, as the driver saw them
        "slot_occupancy_driver": driver["busy_fraction"],
        "timeline_tune": tune,
        "timeline_driver": driver,
        "driver_cpu_s": sweep["driver_cpu_s"],
        "cpu_by_process_s": sweep["cpu_by_process_s"],
        "sink_cpu_s": round(cpu, 3),
        "sink_wall_s": round(hook_wall, 3),
        "sink_share_of_driver_cpu": round(cpu / sweep["driver_cpu_s"], 4) if sweep["driver_cpu_s"] else None,
        "sink_hooks": data["hooks"],
        "sink_flushes": data.get("within_hooks"),
        "results": int(sum(t.get("results", 0) for t in data["trials"].values())),
        "segments": int(sum(len(t["segments"]) for t in data["trials"].values())),
        "profile": sweep["profile"],
    }
