"""Who drives a run's sweep: a lease in RUN_DIR that the driver keeps fresh.

``RUN_DIR/lease.json`` says which back-end runs the sweep, on which host and pid, in which
Slurm job, and when it last proved to be alive. The driver (a local process, or the head
task of a Slurm job) takes it for the whole sweep and a thread refreshes the heartbeat;
``--resume`` refuses a live lease and takes over a stale one. Whether a lease is live is
the back-end's question (``cluster.backend.Backend.is_alive``): a local lease by its
heartbeat and pid, a Slurm lease by the job's state in the queue.

    from cluster import lease
    with lease.held(run_dir, backend="local"):
        ...                                  # the sweep
    lease.read(run_dir)                      # Lease(backend='local', ..., released=True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cluster import procs
from trainables.contract import write_atomic

LEASE_FILE = "lease.json"
HEARTBEAT_S = 5.0
"""How often the driver refreshes its lease."""
STALE_AFTER_S = 30.0
"""A heartbeat older than this means the driver is gone (six missed refreshes)."""


@dataclass(frozen=True)
class Lease:
    """One driver's claim on a run directory."""

    backend: str
    """Back-end that runs the sweep: ``local`` or ``slurm``."""
    host: str
    """Host of the driver process (for a submitted, not yet started job: the login node)."""
    pid: int
    """Pid of the driver process on ``host`` (0 while a submitted job waits in the queue)."""
    job_id: str | None
    """Slurm job id, None for a local run."""
    heartbeat: float
    """Unix time of the last refresh."""
    released: bool = False
    """The driver ended (finished or interrupted) and gave the run up."""

    def fresh(self, now: float | None = None) -> bool:
        """Not released, refreshed within ``STALE_AFTER_S``, and, on this host, its pid alive."""
        if self.released or (now or time.time()) - self.heartbeat > STALE_AFTER_S:
            return False
        return self.host != socket.gethostname() or procs.alive(self.pid)


def path(run_dir: Path) -> Path:
    return Path(run_dir) / LEASE_FILE


def read(run_dir: Path) -> Lease | None:
    """The run's lease, or None when no driver ever took one."""
    try:
        return Lease(**json.loads(path(run_dir).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write(run_dir: Path, lease: Lease) -> None:
    write_atomic(path(run_dir), json.dumps(dataclasses.asdict(lease)))


def submitted(run_dir: Path, job_id: str) -> Lease:
    """The lease of a job just submitted: live while Slurm has it queued or running."""
    lease = Lease(backend="slurm", host=socket.gethostname(), pid=0, job_id=job_id, heartbeat=time.time())
    write(run_dir, lease)
    return lease


@contextlib.contextmanager
def held(run_dir: Path, backend: str, job_id: str | None = None) -> Iterator[Lease]:
    """Take the lease for this process, refresh it until the block ends, then release it."""
    mine = Lease(backend=backend, host=socket.gethostname(), pid=os.getpid(), job_id=job_id, heartbeat=time.time())
    write(run_dir, mine)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            # A full disk is reported once, by the sink that cannot write its rows (which
            # stops the sweep); a missed heartbeat is simply retried at the next beat.
            with contextlib.suppress(OSError):
                write(run_dir, dataclasses.replace(mine, heartbeat=time.time()))

    thread = threading.Thread(target=beat, name="batchscale-lease", daemon=True)
    thread.start()
    try:
        yield mine
    finally:
        stop.set()
        thread.join()
        # Unreleased, the lease still reads as free once this pid has exited or its
        # heartbeat is stale.
        with contextlib.suppress(OSError):
            write(run_dir, dataclasses.replace(mine, heartbeat=time.time(), released=True))
