"""Data-parallel helpers a trainable uses: ``torch.distributed`` set-up and tear-down, its
rank and world size, this rank's share of a global batch, all-reduced metrics, and
gradient accumulation that synchronises once per optimizer update.

A trial with ``config.world_size`` N runs as N processes, one per rank (``config.rank``).
Whoever starts them (``orchestrator.adapter``'s worker group on Ray, or a test's
``torch.multiprocessing``) sets the rendezvous in the environment, ``MASTER_ADDR`` and
``MASTER_PORT`` (torch's ``env://``; a fresh port per trial, since ranks leave a trial at
different times), and gives each process its own config. Every rank
draws the same global batch (same seed, same order as one process would) and trains on its
contiguous share; gradients are averaged across ranks once per update, so an update is
the one a single process makes on the whole batch and the learning rate means the same
at every N. With N = 1 nothing here touches ``torch.distributed``.

    with distributed.process_group(config) as dp:    # NCCL on CUDA, gloo on the CPU
        net = dp.wrap(model)                         # DistributedDataParallel when N > 1
        part = dp.share(global_idx)                  # this rank's examples
        for j, micro in enumerate(micros):
            with dp.no_sync(net, last=j == len(micros) - 1):
                (loss(net, micro) / len(micros)).backward()
        mean_loss, = dp.mean(local_loss)             # the same number on every rank
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from trainables.contract import TrialConfig

TIMEOUT = datetime.timedelta(minutes=10)
"""How long a collective waits for the other ranks before it raises. A rank that died is
noticed by whoever started the workers (the trial restarts); this bounds the wait of the
survivors when nobody is there to notice."""


def device_of(config: TrialConfig) -> torch.device:
    """The trial's device: ``config.device``, else CUDA when this process sees a GPU."""
    if config.device:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class DataParallel:
    """One rank's view of a data-parallel trial (``world_size`` 1: a plain process)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one whose reports and checkpoints count."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def share(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (the whole of it when N = 1)."""
        n = len(items)
        return items[self.rank * n // self.world_size : (self.rank + 1) * n // self.world_size]

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` as ``DistributedDataParallel`` when N > 1 (it broadcasts rank 0's
        weights and averages gradients over ranks in backward); else ``model`` itself.
        Evaluate and checkpoint the unwrapped model."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, net: nn.Module, last: bool) -> contextlib.AbstractContextManager[object]:
        """Around the forward and backward of one micro-batch: gradients stay local until
        the ``last`` micro-batch of the update, whose backward averages them across ranks."""
        if last or not isinstance(net, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return net.no_sync()

    def sum(self, *values: float) -> list[float]:
        """Each value summed over ranks (float64; the same result on every rank)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def mean(self, *values: float) -> list[float]:
        """Each value averaged over ranks (of equal shares: the whole batch's mean)."""
        return [v / self.world_size for v in self.sum(*values)]


@contextlib.contextmanager
def process_group(config: TrialConfig) -> Iterator[DataParallel]:
    """This rank's ``DataParallel``, inside a ``torch.distributed`` process group when
    ``config.world_size`` > 1: NCCL for a CUDA device, gloo for the CPU, the rendezvous
    from ``MASTER_ADDR``/``MASTER_PORT``. A group the caller already set up is used as it
    is (and left to the caller); one set up here is destroyed on the way out."""
    dev = device_of(config)
    dp = DataParallel(config.rank, config.world_size, dev)
    if not dp.distributed:
        yield dp
        return
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (config.rank, config.world_size):
            raise RuntimeError(
                f"a process group of rank {dist.get_rank()}/{dist.get_world_size()} is set up; "
                f"this trial is rank {config.rank}/{config.world_size}"
            )
        yield dp
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise RuntimeError(f"world_size {config.world_size} needs the rendezvous in {' and '.join(missing)}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(
        "nccl" if dev.type == "cuda" else "gloo",
        init_method="env://",
        rank=config.rank,
        world_size=config.world_size,
        timeout=TIMEOUT,
    )
    try:
        yield dp
    finally:
        dist.destroy_process_group()
