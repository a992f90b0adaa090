"""One Tune trial as N data-parallel workers: Ray actors, one per bundle of the trial's
placement group, each running the Ray-free trainable as one rank of ``torch.distributed``.

The sweep gives a trial with ``resources.workers_per_trial`` N > 1 the placement group
``[{}] + [worker bundle] × N`` (``orchestrator.sweep``): the empty head bundle is the Tune
function itself (``orchestrator.adapter``, no resources of its own), the N bundles are the
workers', which Ray places on one node or across nodes (PACK) and Tune counts as the
trial's resources. ``WorkerGroup`` starts one ``_Worker`` actor per bundle, rank 0's node
hosts the rendezvous (``MASTER_ADDR``/``MASTER_PORT`` for ``trainables.distributed``),
and each rank gets the trial's config with its ``rank`` and ``device`` and the same
checkpoint (every rank resumes from it). Every rank calls ``report`` at the same points;
rank 0's reports travel to the Tune function one at a time (rank 0 waits until Tune has
taken each, as a one-process trial waits in ``tune.report``), the others' are dropped.

What ends a worker decides what happens to the trial:

- the trainable's own exception on any rank, with every worker alive: ``WorkerFailed``
  (the adapter reports it: the trial is ``failed``, not retried);
- a worker process or its node lost (``RayActorError``, or a worker that stops answering):
  ``WorkerLost``, which the adapter re-raises so that Tune's ``FailureConfig`` restarts
  the whole trial, every rank, from its last checkpoint;
- Tune stopping the trial (early stopping, the end of the sweep): the adapter's
  ``shutdown`` kills the workers.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from trainables.contract import TrialConfig

ALIVE_TIMEOUT_S = 30.0
"""How long the survivors of a failed rank get to answer before the failure counts as a
lost worker (a node gone silent) rather than the trainable's own error."""


class WorkerFailed(Exception):
    """The trainable raised on a rank while every worker was alive; ``line`` is its last line."""

    def __init__(self, rank: int, line: str) -> None:
        super().__init__(f"rank {rank}: {line}")
        self.rank, self.line = rank, line


class WorkerLost(RuntimeError):
    """A worker's process or node is gone: the trial restarts from its last checkpoint."""


class _Stop(Exception):
    """Unwinds a non-zero rank's trainable at the target, as the adapter does rank 0's."""


class _Worker:
    """One rank (a threaded Ray actor: ``next`` and ``ping`` answer while ``run`` trains)."""

    def __init__(self) -> None:
        self._reports: queue.Queue[tuple[dict[str, Any], dict[str, Any] | None] | None] = queue.Queue()
        self._taken = threading.Semaphore(0)

    def where(self) -> tuple[str, str]:
        """(node name, IP) of this worker."""
        from orchestrator.trial_side import node_name

        return node_name(), ray.util.get_node_ip_address()

    def free_port(self) -> int:
        """A port free on this node for the rendezvous (rank 0's)."""
        with socket.socket() as s:
            s.bind(("", 0))
            return int(s.getsockname()[1])

    def ping(self) -> bool:
        return True

    def run(
        self,
        load_train: Callable[[], Callable[..., None]],
        config: dict[str, Any],
        checkpoint: dict[str, Any] | None,
        rank: int,
        master: tuple[str, int],
    ) -> tuple[str, str | None]:
        """Train as ``rank``; returns ("done", None) or ("error", the exception's last line)."""
        from orchestrator.trial_side import error_line

        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = master[0], str(master[1])
        # Ray sets CUDA_VISIBLE_DEVICES to this worker's GPUs: its first is cuda:0
        device = "cuda:0" if ray.get_gpu_ids() else "cpu"
        cfg = dataclasses.replace(TrialConfig.from_dict(config, checkpoint), rank=rank, device=device)

        def report(metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> None:
            if rank == 0:
                self._reports.put((metrics, checkpoint))
                self._taken.acquire()  # until the Tune function has reported it
            if cfg.ends_at(metrics):
                raise _Stop

        try:
            load_train()(cfg, report)
            return ("done", None)
        except _Stop:
            return ("done", None)
        except Exception as e:
            return ("error", error_line(e))
        finally:
            self._reports.put(None)

    def next(self, taken: bool) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """Rank 0's next report (None: its trainable has ended); ``taken`` releases the
        report handed out before."""
        if taken:
            self._taken.release()
        return self._reports.get()


_WorkerActor = ray.remote(_Worker)


class WorkerGroup:
    """The N workers of one trial, started in the current placement group's bundles."""

    def __init__(self, config: TrialConfig) -> None:
        pg = ray.util.get_current_placement_group()
        bundles = pg.bundle_specs if pg is not None else []
        if pg is None or len(bundles) != config.world_size:
            raise RuntimeError(
                f"world_size {config.world_size} needs a placement group of as many worker "
                f"bundles (the sweep's tune.with_resources); found {len(bundles)}"
            )
        self.config = config
        self.workers: list[Any] = [  # actor handles (Ray's stubs type methods without .remote)
            # threaded: next and ping answer while run trains
            _WorkerActor.options(
                max_concurrency=4,
                num_cpus=b.get("CPU", 0),
                num_gpus=b.get("GPU", 0),
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
            ).remote()
            for i, b in enumerate(bundles)
        ]
        try:
            places = self._get([w.where.remote() for w in self.workers])
            self.nodes = [name for name, _ in places]
            self.master = (places[0][1], self._get(self.workers[0].free_port.remote()))
        except BaseException:
            self.shutdown()
            raise

    @property
    def node_label(self) -> str:
        """The workers' nodes in rank order, each once (``n1,n2``; one name on one node)."""
        return ",".join(dict.fromkeys(self.nodes))

    def _get(self, refs: Any, timeout: float | None = None) -> Any:
        try:
            return ray.get(refs, timeout=timeout)
        except (
            ray.exceptions.RayActorError,
            ray.exceptions.ActorUnschedulableError,
            ray.exceptions.GetTimeoutError,
        ) as e:
            raise WorkerLost(f"a worker of the trial is gone: {type(e).__name__}") from e

    def run(
        self,
        load_train: Callable[[], Callable[..., None]],
        report: Callable[[dict[str, Any], dict[str, Any] | None], None],
    ) -> None:
        """Train on every rank; hand rank 0's reports to ``report`` in order. Returns when
        rank 0's trainable has returned; raises ``WorkerFailed`` or ``WorkerLost``."""
        config, checkpoint = self.config.to_dict(), self.config.checkpoint
        config_ref = ray.put(config)
        checkpoint_ref = ray.put(checkpoint)
        outcomes = {
            w.run.remote(load_train, config_ref, checkpoint_ref, r, self.master): r for r, w in enumerate(self.workers)
        }
        lead = self.workers[0]
        pending: ray.ObjectRef | None = lead.next.remote(False)
        while True:
            ready, _ = ray.wait([*outcomes, *([pending] if pending is not None else [])], num_returns=1)
            ref = ready[0]
            if pending is not None and ref == pending:
                item = self._get(ref)
                if item is None:  # rank 0 has ended; its outcome says how
                    pending = None
                    continue
                report(*item)
                pending = lead.next.remote(True)
                continue
            rank = outcomes.pop(ref)
            status, line = self._get(ref)
            if status == "error":
                # a peer's death surfaces on the survivors as a collective's error: only
                # with every worker answering is it the trainable's own
                self._get([w.ping.remote() for w in self.workers], timeout=ALIVE_TIMEOUT_S)
                raise WorkerFailed(rank, str(line))
            if rank == 0:
                return  # every report of rank 0 was taken before its trainable returned

    def shutdown(self) -> None:
        """Kill every worker (a rank may still wait in a collective or for its report)."""
        for w in self.workers:
            ray.kill(w, no_restart=True)
