"""What each task of a Slurm job does for the job's Ray cluster (one task per node, e.g.
``srun --ntasks-per-node=1``; in this project the submitit job ``cluster.job.SweepJob``)::

    spec = RayClusterSpec.from_slurm(token_file=run_dir / "slurm" / "ray.token")
    if spec.is_head:
        with head(spec):                     # start, wait for all nodes, stop at exit
            connect(spec)                    # ray.init(address=...) with the token
            ...                              # the Tune driver
    else:
        run_worker(spec)                     # blocks until the head goes away

A requeued job runs the same code again: starting a node first stops leftovers of the
same job/node (``cluster.ray_node``); a worker retries joining and rejoins if its raylet
dies while the head is up.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cluster import procs
from cluster.ports import reachable
from cluster.ray_node import own_pids, start_head, start_worker, stop_own, wait_for_nodes
from cluster.ray_spec import RayClusterSpec


@contextlib.contextmanager
def head(spec: RayClusterSpec, join_timeout: float = 300.0) -> Iterator[str]:
    """Start the head, wait for all spec.num_nodes nodes, yield the address; stop at exit
    (also on exceptions and SystemExit, e.g. submitit's preemption handler). The temp
    dir (Ray's logs) is removed after a clean exit and kept after an exception."""
    address = start_head(spec)
    clean = False
    try:
        wait_for_nodes(spec, spec.num_nodes, join_timeout)
        yield address
        clean = True
    finally:
        stop_own(spec, remove_temp_dir=clean)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """Turn SIGTERM (Slurm's scancel/requeue/time limit) into SystemExit so `finally`
    blocks stop Ray before SIGKILL. Only where nobody (e.g. submitit, which ignores
    SIGTERM) handles it already, and only in the main thread."""
    own = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    )
    if own:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        if own:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raylet_alive(spec: RayClusterSpec) -> bool:
    return any(Path((procs.cmdline(p) or [""])[0]).name == "raylet" for p in own_pids(spec))


def run_worker(spec: RayClusterSpec, join_timeout: float = 300.0, poll: float = 1.0) -> None:
    """Start this worker node and block until the head's GCS is gone (or SIGTERM), then
    stop this node's Ray processes (and remove its temp dir). For the non-head tasks.
    If this node's raylet dies while the head is still up, the node joins again."""
    host, port = spec.address.rsplit(":", 1)
    clean = False
    with _sigterm_exits():
        try:
            start_worker(spec, join_timeout)
            misses = 0
            while misses < 3:  # ~3 polls without the head's GCS: the cluster is over
                time.sleep(poll)
                if not reachable(host, int(port)):
                    misses += 1
                    continue
                misses = 0
                if not _raylet_alive(spec):
                    start_worker(spec, join_timeout)
            clean = True
        finally:
            # Without a GCS the raylet can't shut down gracefully (it ignores SIGTERM).
            stop_own(spec, grace=1.0 if clean else 5.0, remove_temp_dir=clean)
