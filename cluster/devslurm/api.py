"""The dev cluster's Python API: bring it up, take it down, ask its state, and follow
jobs on it (re-exported by ``cluster.devslurm``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import cluster.devslurm.accounting as accounting
from cluster.devslurm.config import prepare
from cluster.devslurm.daemons import (
    client,
    daemon_pid,
    ensure_packages,
    start_missing,
    stop_all,
    wait_for,
)
from cluster.devslurm.layout import NODES, PARTITION, Layout, env, state_dir

# States in which a node is registered, responding and schedulable.
_USABLE = {"idle", "mixed", "allocated", "completing"}
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
          "PREEMPTED", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"}  # fmt: skip


@dataclass(frozen=True)
class DevSlurm:
    """A running dev cluster: where it lives and the environment its clients need."""

    state_dir: Path
    conf: Path
    munge_socket: Path
    nodes: tuple[str, ...]
    partition: str
    env: dict[str, str] = field(default_factory=dict)
    started: bool = False  # True if this `up` call started at least one daemon


@contextlib.contextmanager
def _locked(lay: Layout) -> Iterator[None]:
    """Serialise up/down between processes (e.g. two pytest sessions)."""
    lay.root.mkdir(parents=True, exist_ok=True)
    with open(lay.root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def node_states(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """{node: sinfo long state} e.g. {'n1': 'idle', 'n2': 'idle*'}; {} if unreachable."""
    lay = Layout(state_dir(path))
    try:
        res = client(lay, "sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N %T", timeout=15)
    except subprocess.TimeoutExpired:
        return {}
    if res.returncode != 0:
        return {}
    states = {}
    for line in res.stdout.splitlines():
        name, _, state = line.strip().partition(" ")
        states[name] = state
    return states


def up(path: str | os.PathLike[str] | None = None, timeout: float = 120.0) -> DevSlurm:
    """Start whatever is not running yet, set up accounting (accounts, user, QOS) and
    wait until both nodes are usable.

    Idempotent: a second call finds every daemon alive, finds accounting in place
    (a few `sacctmgr show`) and only re-checks `sinfo`.
    """
    lay = Layout(state_dir(path))
    with _locked(lay):
        ensure_packages()
        ctld_running = daemon_pid(lay, "slurmctld") is not None
        if prepare(lay) and ctld_running:
            # Most settings (epilog, timeouts, scheduler) apply on reconfigure; changed
            # ports, nodes or slurmdbd.conf need `down` + `up`, which cancels running jobs.
            client(lay, "scontrol", "reconfigure")
            print(
                "devslurm: config changed; applied with `scontrol reconfigure` (port, node "
                "or slurmdbd changes need `python -m cluster.devslurm down` then `up`)",
                file=sys.stderr,
            )
        complete = [False]

        def set_up_accounting() -> None:
            # Before slurmctld starts: it must find its cluster in slurmdbd.
            complete[0] = accounting.provision(lay)[1]

        started = start_missing(lay, before={"slurmctld": set_up_accounting})
        if not complete[0]:
            accounting.finish(lay)  # limits naming gres/gpu, known once slurmctld registered
        _wait_usable(lay, timeout)
    return DevSlurm(
        state_dir=lay.root, conf=lay.conf, munge_socket=lay.munge_socket, nodes=NODES,
        partition=PARTITION, env=env(lay.root), started=bool(started),
    )  # fmt: skip


def _wait_usable(lay: Layout, timeout: float) -> None:
    """Poll sinfo until every node is registered and schedulable.

    A node left DOWN/DRAIN by an earlier unclean stop is resumed once: ReturnToService=2
    only revives nodes that were down for not responding.
    """
    resumed = False
    deadline = time.monotonic() + timeout

    def ready() -> bool:
        nonlocal resumed
        states = node_states(lay.root)
        if all(states.get(n) in _USABLE for n in NODES):
            return True
        stuck = [n for n in NODES if any(s in states.get(n, "") for s in ("down", "drain"))]
        if stuck and not resumed and deadline - time.monotonic() < timeout - 5:
            client(lay, "scontrol", "update", f"NodeName={','.join(stuck)}", "State=RESUME")
            resumed = True
        return False

    wait_for("nodes n1, n2 idle in sinfo", ready, timeout, poll=0.5, log=lay.log / "slurmctld.log")


def down(path: str | os.PathLike[str] | None = None, timeout: float = 60.0) -> list[int]:
    """Cancel our jobs, stop our daemons by pid and wait until they are gone.

    Returns the pids that were stopped. Leftover job steps (slurmstepd whose environment
    carries our SLURM_CONF) are stopped too, so nothing of this cluster survives.
    """
    lay = Layout(state_dir(path))
    with _locked(lay):
        if daemon_pid(lay, "slurmctld") is not None:
            client(lay, "scancel", f"--partition={PARTITION}")  # our cluster's jobs only
            with contextlib.suppress(TimeoutError):
                wait_for(
                    "jobs to end",
                    lambda: not client(lay, "squeue", "-h", "-o", "%i").stdout.strip(),
                    15,
                )  # fmt: skip
        return stop_all(lay, timeout)


def job_info(job_id: int | str, path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, ExitCode, NodeList, ...); {} if unknown.

    Finished jobs stay visible here for MinJobAge (600 s); ``sacct`` has them for good.
    """
    res = client(Layout(state_dir(path)), "scontrol", "show", "job", "--oneliner", str(job_id))
    if res.returncode != 0:
        return {}
    return dict(item.split("=", 1) for item in res.stdout.split() if "=" in item)


def wait_job(job_id: int | str, timeout: float = 300.0, path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Poll (0.5 s) until the job has ended; return its job_info. Quicker than
    `sbatch --wait`, whose polling interval grows to tens of seconds."""

    def ended() -> dict[str, str]:
        info = job_info(job_id, path)
        return info if info.get("JobState") in _ENDED else {}

    return wait_for(f"job {job_id} to end", ended, timeout, poll=0.5)


SACCT_FIELDS = ("JobID", "JobName", "User", "Account", "QOS", "Partition", "State", "ExitCode",
                "Submit", "Start", "End", "NodeList")  # fmt: skip


def sacct(
    job_id: int | str, path: str | os.PathLike[str] | None = None, duplicates: bool = False
) -> list[dict[str, str]]:
    """The job's records in slurmdbd (`sacct -j`): one dict per job/step line with
    SACCT_FIELDS as keys; [] when slurmdbd has none (yet: it lags the job by a few
    seconds). ``duplicates`` (`sacct -D`) adds the job's earlier runs, e.g. before a
    requeue (their State is REQUEUED)."""
    argv = ["sacct", "-n", "-P", "-j", str(job_id), "-o", ",".join(SACCT_FIELDS)]
    if duplicates:
        argv.append("-D")
    res = client(Layout(state_dir(path)), *argv)
    if res.returncode != 0:
        raise RuntimeError(f"devslurm: {' '.join(argv)} failed: {res.stderr.strip()}")
    return [dict(zip(SACCT_FIELDS, ln.split("|"))) for ln in res.stdout.splitlines() if ln]


class Status(TypedDict):
    """What ``status()`` returns."""

    state_dir: str
    daemons: dict[str, int | None]  # daemon name -> pid, None when not running
    nodes: dict[str, str]  # node -> sinfo state; {} when slurmctld is down
    running: bool  # every daemon up and every node usable


def status(path: str | os.PathLike[str] | None = None) -> Status:
    """{'state_dir', 'daemons': {name: pid|None}, 'nodes': {node: state}, 'running'}."""
    lay = Layout(state_dir(path))
    daemons = {d: daemon_pid(lay, d) for d in lay.daemons()}
    nodes = node_states(lay.root) if daemons["slurmctld"] else {}
    running = all(daemons.values()) and all(nodes.get(n) in _USABLE for n in NODES)
    return {"state_dir": str(lay.root), "daemons": daemons, "nodes": nodes, "running": running}
