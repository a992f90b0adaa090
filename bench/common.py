"""What every benchmark here shares: the results file, the goal checks, the machine stamp,
CPU accounting of a process tree, and the arithmetic of trial timelines.

A results file, ``bench/results/<name>.json`` (``<name>_quick.json`` in quick mode)::

    {"name": "sink", "benchmark": "...", "mode": "full" | "quick", "command": "...",
     "date_utc": "...", "machine": {"cpu", "cores", "memory_gib", "platform",
     "loadavg_start", "loadavg_end"}, "versions": {"python", "ray", "torch", "pyarrow",
     "batchscale"}, "git": {"commit", "dirty"}, "goal": {"text", "checks": [{"figure",
     "op", "target", "measured", "met"}]}, "goal_met": bool, "figures": {...},
     "evidence": {...}, "bench_wall_s": float}

``goal_met`` is true only when every check is met. A quick run is a smoke test of the
benchmark, not a measurement: its ``goal_met`` says nothing about the project.

    from bench.common import Check, write_result
    checks = [Check("rows_per_s", ">=", 50_000, measured)]
    write_result("sink", quick=False, benchmark="...", goal_text="...", checks=checks,
                 figures={...}, evidence={...})
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
REQUIRED_KEYS = (
    "name",
    "benchmark",
    "mode",
    "command",
    "date_utc",
    "machine",
    "versions",
    "git",
    "goal",
    "goal_met",
    "figures",
    "evidence",
    "bench_wall_s",
)
_T0 = time.perf_counter()
_LOAD0 = os.getloadavg()


# --------------------------------------------------------------------------- the results file


@dataclass
class Check:
    """One figure against its goal, e.g. ``Check("busy_fraction", ">=", 0.9, 0.93)``."""

    figure: str
    op: str  # ">=", "<=", "<", ">"
    target: float
    measured: float | None

    @property
    def met(self) -> bool:
        m = self.measured
        if m is None or m != m:  # not measured, or NaN
            return False
        return {">=": m >= self.target, "<=": m <= self.target, "<": m < self.target, ">": m > self.target}[self.op]

    def as_dict(self) -> dict[str, Any]:
        return {"figure": self.figure, "op": self.op, "target": self.target, "measured": self.measured, "met": self.met}


def machine() -> dict[str, Any]:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (ValueError, OSError):
        mem = None
    return {
        "cpu": cpu or platform.processor() or None,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": mem,
        "platform": platform.platform(),
        # the machine is shared: the load average says how much else ran beside the benchmark
        "loadavg_start": [round(x, 2) for x in _LOAD0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), **{p: _version(p) for p in ("ray", "torch", "pyarrow", "batchscale")}}


def _git() -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from analysis.environment import git_commit

    return git_commit(REPO)


def result_path(name: str, quick: bool, out: Path | None = None) -> Path:
    return out or RESULTS / f"{name}{'_quick' if quick else ''}.json"


def write_result(
    name: str,
    *,
    quick: bool,
    benchmark: str,
    goal_text: str,
    checks: Sequence[Check],
    figures: dict[str, Any],
    evidence: dict[str, Any] | None = None,
    out: Path | None = None,
) -> Path:
    """Write the results file and print the goal table; returns its path."""
    result = {
        "name": name,
        "benchmark": benchmark,
        "mode": "quick" if quick else "full",
        "command": " ".join(
            [".venv/bin/python", shlex.quote(os.path.relpath(sys.argv[0], REPO))]
            + [shlex.quote(a) for a in sys.argv[1:]]
        ),
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine(),
        "versions": versions(),
        "git": _git(),
        "goal": {"text": goal_text, "checks": [c.as_dict() for c in checks]},
        "goal_met": all(c.met for c in checks),
        "figures": figures,
        "evidence": evidence or {},
        "bench_wall_s": round(time.perf_counter() - _T0, 1),
    }
    path = result_path(name, quick, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)
    print_checks(name, checks, quick)
    print(f"-> {os.path.relpath(path)}")
    return path


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON: {type(v).__name__}")


def print_checks(name: str, checks: Sequence[Check], quick: bool = False) -> None:
    rows = [(c.figure, f"{c.op} {fmt(c.target)}", fmt(c.measured), "yes" if c.met else "NO") for c in checks]
    head = ("figure", "goal", "measured", "met")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    print(f"\n{name}{' (quick mode: not a measurement)' if quick else ''}")
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  " + "  ".join(s.ljust(w) for s, w in zip(r, widths)))


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """A plain table of dicts (the figures behind the checks)."""
    if not rows:
        return
    cols = list(columns or rows[0].keys())
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    for r in [cols, ["-" * w for w in widths], *cells]:
        print("  " + "  ".join(s.rjust(w) for s, w in zip(r, widths)))


# --------------------------------------------------------------------------- CPU of a process tree

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds used so far) from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text[text.rindex(")") + 2 :].split()  # fields after "(comm)", starting at state
    return int(f[1]), (int(f[11]) + int(f[12])) / _TICK


def _kind(pid: int, driver: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if pid == driver:
        return "driver"
    for key, kind in (
        ("gcs_server", "gcs_server"),
        ("raylet/raylet", "raylet"),
        ("ray::DashboardAgent", "ray agents"),
        ("ray::RuntimeEnvAgent", "ray agents"),
        ("ray::", "ray workers"),
        ("default_worker", "ray workers"),
        ("setup_worker", "ray workers"),
        ("dashboard", "ray agents"),
        ("log_monitor", "ray agents"),
        ("monitor.py", "ray agents"),
        ("cluster.watchdog", "watchdog"),
    ):
        if key in cmd:
            return kind
    return "other"


def _tree(root: int) -> dict[int, float]:
    """CPU seconds so far of ``root`` and each live descendant."""
    stats = {int(e): s for e in os.listdir("/proc") if e.isdigit() and (s := _stat(int(e))) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out[pid] = stats[pid][1]
            todo.extend(children.get(pid, []))
    return out


def tree_cpu(root: int | None = None) -> dict[str, float]:
    """CPU seconds used so far by ``root`` (this process) and each live descendant, by kind.

    A process that has exited is missed (Ray's raylet reaps its workers without adding their
    time to its own children's), so a difference of two snapshots undercounts workers that
    ended between them; ``TreeSampler`` does not.
    """
    root = os.getpid() if root is None else root
    out: dict[str, float] = {}
    for pid, cpu in _tree(root).items():
        k = _kind(pid, root)
        out[k] = out.get(k, 0.0) + cpu
    return out


class TreeSampler:
    """Samples the CPU of a process tree (another process's: its own CPU is not counted)
    every ``every`` seconds; ``window(t0, t1)`` is the CPU each kind of process used between
    two time.time() instants, processes that exited in between included (up to their last
    sample)."""

    def __init__(self, root: int, every: float = 0.5) -> None:
        import threading

        self.root, self.every = root, every
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self.kinds: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for pid, cpu in _tree(self.root).items():
                if pid not in self.kinds or self.kinds[pid] == "other":  # a worker renames itself
                    self.kinds[pid] = _kind(pid, self.root)
                self.samples.setdefault(pid, []).append((now, cpu))
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, t0: float, t1: float) -> dict[str, float]:
        def at(samples: list[tuple[float, float]], t: float) -> float:
            before = [c for ts, c in samples if ts <= t]
            return before[-1] if before else 0.0

        out: dict[str, float] = {}
        for pid, samples in self.samples.items():
            used = at(samples, t1) - at(samples, t0)
            if used > 0:
                out[self.kinds[pid]] = out.get(self.kinds[pid], 0.0) + used
        return {k: round(v, 2) for k, v in sorted(out.items())}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    keys = sorted(set(before) | set(after))
    d = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in keys}
    return {k: v for k, v in d.items() if abs(v) > 0.004}


# --------------------------------------------------------------------------- trial timelines


def assign_slots(
    intervals: Iterable[tuple[float, float]], slots: int, t0: float
) -> list[tuple[int, float, float, float]]:
    """Put each (start, end) interval, in start order, on the slot freed most recently before
    its start; returns (slot, start, end, gap) with gap = start - that slot's previous end
    (or - ``t0`` for a slot's first trial)."""
    free = [t0] * slots
    out = []
    for start, end in sorted(intervals):
        ready = [i for i in range(slots) if free[i] <= start]
        i = max(ready, key=lambda j: free[j]) if ready else min(range(slots), key=lambda j: free[j])
        out.append((i, start, end, start - free[i]))
        free[i] = end
    return out


def timeline_figures(
    intervals: Sequence[tuple[float, float]], slots: int, t0: float, t1: float, work_s: float | None = None
) -> dict[str, Any]:
    """Busy fraction and the idle time between trials of a sweep that ran on ``slots`` slots
    from ``t0`` to ``t1`` (the same clock as the intervals)."""
    placed = assign_slots(intervals, slots, t0)
    run = sum(e - s for _, s, e, _ in placed)
    wall = t1 - t0
    first = {}
    for slot, s, _, _ in placed:
        first.setdefault(slot, s)
    between = sorted(g for (slot, s, _, g) in placed if first[slot] != s)
    last_end = max(e for _, _, e, _ in placed)
    slot_end: dict[int, float] = {}
    for slot, _, e, _ in placed:
        slot_end[slot] = max(e, slot_end.get(slot, e))
    # the slot-seconds no trial ran: before each slot's first trial, between trials, after
    # each slot's last trial (a slot that never ran a trial is idle throughout)
    idle = {
        "before_first_s": sum(first.get(i, t1) - t0 for i in range(slots)),
        "between_trials_s": sum(between),
        "after_last_s": sum(t1 - slot_end.get(i, t1) for i in range(slots)),
    }

    def q(p: float) -> float | None:
        return round(between[min(len(between) - 1, int(p * len(between)))] * 1000, 1) if between else None

    out: dict[str, Any] = {
        "trials": len(placed),
        "slots": slots,
        "wall_s": round(wall, 2),
        "sum_trial_run_s": round(run, 2),
        "busy_fraction": round(run / (wall * slots), 4),
        "mean_trial_run_s": round(run / len(placed), 3),
        "first_trial_start_s": round(min(s for _, s, _, _ in placed) - t0, 2),
        "after_last_trial_end_s": round(t1 - last_end, 2),
        "idle_slot_s": {k: round(v, 2) for k, v in idle.items()},
        "gap_ms": {
            "median": q(0.5),
            "mean": round(1000 * sum(between) / len(between), 1) if between else None,
            "p90": q(0.9),
            "max": q(1.0),
        },
    }
    if work_s is not None:
        out["ideal_s"] = round(len(placed) * work_s / slots, 2)
        out["useful_fraction"] = round(len(placed) * work_s / (wall * slots), 4)
        out["in_trial_overhead_ms"] = round(1000 * (run / len(placed) - work_s), 1)
    return out
