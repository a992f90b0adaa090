"""Stop what a local run started once its driver dies, however it dies.

A local run's Ray (started by ``ray.init`` in the driver) outlives a SIGKILL of the
driver: its agents linger for about a minute, and nothing removes its temp dir. The
watchdog runs beside the driver in a session of its own (so a kill of the driver's process
group does not reach it), keeps a list of the driver's descendants, and when the driver is
gone stops them (SIGTERM, then SIGKILL) and removes the run's temp dir. It exits with the
driver, or when the driver stops it after a clean shutdown.

    python -m cluster.watchdog --pid DRIVER_PID --remove DIR    # started by cluster.local
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cluster import procs

POLL_S = 0.5


def start(driver_pid: int, remove: Path) -> subprocess.Popen[bytes]:
    """Start a watchdog for ``driver_pid`` (in its own session); returns its process."""
    return subprocess.Popen(
        [sys.executable, "-m", "cluster.watchdog", "--pid", str(driver_pid), "--remove", str(remove)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[1],
    )


def watch(driver_pid: int, remove: Path) -> list[int]:
    """Block until ``driver_pid`` is gone, then stop the descendants it had; returns them."""
    born = procs.start_time(driver_pid)
    me = os.getpid()  # a child of the driver too, and the last to go
    seen: dict[int, int | None] = {}
    while procs.alive(driver_pid) and procs.start_time(driver_pid) == born:
        for pid in procs.descendants(driver_pid) - {me}:
            seen.setdefault(pid, procs.start_time(pid))
        time.sleep(POLL_S)
    # only the processes we saw, still the same processes (a reused pid is not ours)
    left = [p for p, t in seen.items() if t is not None and procs.start_time(p) == t]
    procs.terminate(left, timeout=2.0)
    shutil.rmtree(remove, ignore_errors=True)
    return left


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cluster.watchdog")
    p.add_argument("--pid", type=int, required=True, help="the driver's pid")
    p.add_argument("--remove", type=Path, required=True, help="the run's temp dir, removed at the end")
    args = p.parse_args(argv)
    watch(args.pid, args.remove)
    return 0


if __name__ == "__main__":
    sys.exit(main())
