"""The one back-end interface: where a sweep runs (submitit's executor is the model).

A back-end takes a ``SweepRequest`` (the run directory, what one trial needs, and the
driver function to call there) and offers the same few operations: ``describe`` (what
``--dry-run`` shows), ``check`` (refuse what cannot run, before anything is written),
``launch``, ``is_alive`` (of a run's lease), ``follow`` and, for data-parallel trials,
``capacity`` (how many fit the allocation at once). ``LocalBackend`` runs the
driver here, in the foreground; ``SlurmBackend`` submits one job that runs it on the
allocation's head node. Nothing here knows what a sweep is: the driver is passed in, so
cluster/ never imports orchestrator/.

    from cluster.local import LocalBackend
    LocalBackend().launch(SweepRequest(run_dir, "demo", 1, 0, drive), resume=False)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cluster import lease as leases
from cluster.lease import Lease
from trainables.contract import UsageError

Driver = Callable[[Path, bool, str], object]
"""``drive(run_dir, resume, backend_name)``: runs (or resumes) the sweep in RUN_DIR and
writes its report; picklable by reference (a module-level function)."""


@dataclass(frozen=True)
class SweepRequest:
    """What a back-end needs to run one sweep."""

    run_dir: Path
    """The run directory (on a filesystem the allocation shares)."""
    name: str
    """Study name: the Slurm job name."""
    cpus_per_trial: float
    """CPU cores one trial occupies (each of its workers, when ``workers_per_trial`` > 1)."""
    gpus_per_trial: float
    """GPUs one trial occupies (fractional values pack trials onto one GPU); each worker's
    when ``workers_per_trial`` > 1."""
    drive: Driver
    """The function that runs the sweep where the back-end puts it."""
    trainable: str = ""
    """The study's trainable as frozen (shown in what ``describe`` prints)."""
    workers_per_trial: int = 1
    """Processes of one data-parallel trial, each of ``cpus_per_trial`` and ``gpus_per_trial``."""

    @property
    def workers(self) -> Workers:
        return Workers(self.workers_per_trial, self.cpus_per_trial, self.gpus_per_trial)


class Backend(Protocol):
    """Where a sweep runs."""

    name: str

    def describe(self, req: SweepRequest) -> str:
        """What would be launched (the dry run's text); writes and submits nothing."""
        ...

    def check(self, req: SweepRequest) -> None:
        """Raise ``UsageError`` (one line) for a request that can never run."""
        ...

    def launch(self, req: SweepRequest, resume: bool) -> Lease | None:
        """Start the sweep: run it here (returns when done) or submit it (returns its lease)."""
        ...

    def is_alive(self, lease: Lease) -> bool:
        """Whether the driver that holds ``lease`` may still write into the run."""
        ...

    def follow(self, run_dir: Path, lease: Lease, show: Callable[[bool], None]) -> None:
        """Call ``show(final)`` every few seconds while the lease is alive, then once more."""
        ...

    def capacity(self, req: SweepRequest) -> str:
        """The dry run's line on a data-parallel trial: how many fit the allocation at once."""
        ...


@dataclass(frozen=True)
class Workers:
    """The processes of one data-parallel trial, and how many trials an allocation holds."""

    count: int
    """Workers per trial."""
    cpus: float
    """CPU cores of each."""
    gpus: float
    """GPUs of each."""

    def per_node(self, cpus: float, gpus: float) -> int:
        """Workers that one node of ``cpus`` CPUs and ``gpus`` GPUs holds."""
        n = math.floor(cpus / self.cpus + 1e-9)
        return min(n, math.floor(gpus / self.gpus + 1e-9)) if self.gpus else n

    def _each(self) -> str:
        return f"{self.cpus:g} CPU" + (f", {self.gpus:g} GPU" if self.gpus else "") + " each"

    def line(self, nodes: int, cpus: float, gpus: float, where: str) -> str:
        """The dry run's line: how many trials fit ``nodes`` nodes of ``cpus`` and ``gpus``."""
        room = nodes * self.per_node(cpus, gpus)
        fit = room // self.count
        return (
            f"data-parallel: {self.count} workers per trial ({self._each()}); {where} ({nodes} × {cpus:g} "
            f"CPUs, {gpus:g} GPUs) holds {room} workers: {fit} trial{'' if fit == 1 else 's'} at once"
        )

    def check(self, nodes: int, cpus: float, gpus: float, where: str) -> None:
        """Refuse (one line, naming the key) a trial of more workers than the allocation
        holds: Ray would wait for them forever."""
        room = nodes * self.per_node(cpus, gpus)
        if room < self.count:
            raise UsageError(
                f"resources.workers_per_trial: {self.count} workers ({self._each()}) do not fit "
                f"{where} ({nodes} × {cpus:g} CPUs, {gpus:g} GPUs: room for {room})"
            )


def follow_lease(
    backend: Backend,
    run_dir: Path,
    lease: Lease,
    show: Callable[[bool], None],
    poll_s: float = 2.0,
    on_poll: Callable[[], None] | None = None,
) -> None:
    """The follow loop every back-end shares: poll ``is_alive``, show progress."""
    while backend.is_alive(leases.read(run_dir) or lease):
        if on_poll is not None:
            on_poll()
        show(False)
        time.sleep(poll_s)
    show(True)
