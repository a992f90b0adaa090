"""Ray ports derived from the Slurm job id, so jobs sharing a node never collide.

    python -c "from cluster.ports import RayPorts; print(RayPorts.for_node(4242, 0))"

Every port Ray would otherwise pick itself (often a fixed default such as 6379, 8265,
52365, or 10002-19999 for workers) is set explicitly. All lie in 20000-31999: above
Slurm's and Ray's defaults and below Linux's ephemeral range (32768+), so neither
outgoing connections nor a default-configured Ray can take them.

Layout: the range is cut into blocks of `BLOCK` ports, two blocks per job slot (the dev
cluster runs two Slurm nodes of one job on one host; elsewhere the second block is
simply spare). ``slot = job_id % JOB_SLOTS``: two jobs whose ids differ by less than
`JOB_SLOTS` (53) never share a port on any host; ids that are a multiple of 53 apart
could, which `busy()` catches before Ray starts.
"""

from __future__ import annotations

import socket
from dataclasses import astuple, dataclass, fields

PORT_LOW = 20000
PORT_HIGH = 32000  # exclusive
NAMED_RESERVED = 16  # room for named ports; 9 are used
WORKER_PORTS = 96  # max concurrent Ray worker processes per node
BLOCK = NAMED_RESERVED + WORKER_PORTS
NODES_PER_HOST = 2
JOB_SLOTS = (PORT_HIGH - PORT_LOW) // (BLOCK * NODES_PER_HOST)


@dataclass(frozen=True)
class RayPorts:
    """The explicit ports of one Ray node of one job."""

    gcs: int  # head only: the cluster's address is <head ip>:<gcs>
    node_manager: int
    object_manager: int
    client_server: int  # head only, and only if ray[client] is installed
    dashboard: int  # head only; bound to 127.0.0.1
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    metrics_export: int
    min_worker: int
    max_worker: int  # inclusive

    @classmethod
    def for_node(cls, job_id: int, node_index: int) -> RayPorts:
        """Ports of node `node_index` (SLURM_NODEID) of job `job_id` (SLURM_JOB_ID)."""
        if job_id < 0 or node_index < 0:
            raise ValueError(f"job_id and node_index must be >= 0, got {job_id}, {node_index}")
        block = (job_id % JOB_SLOTS) * NODES_PER_HOST + node_index % NODES_PER_HOST
        base = PORT_LOW + block * BLOCK
        names = [f.name for f in fields(cls)]
        worker_low = base + NAMED_RESERVED
        ports = {n: base + i for i, n in enumerate(names[:-2])}
        return cls(**ports, min_worker=worker_low, max_worker=worker_low + WORKER_PORTS - 1)

    def all(self) -> list[int]:
        """Every port this node may bind, named and worker range."""
        *named, lo, hi = astuple(self)
        return [*named, *range(lo, hi + 1)]


def busy(ports: list[int]) -> list[int]:
    """The ports among `ports` that something already listens on (bind test, any address)."""
    taken = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # Ray's gRPC servers set SO_REUSEADDR too; TIME_WAIT leftovers are not "busy".
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                taken.append(port)
    return taken


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if something accepts TCP connections at host:port (e.g. a head's GCS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0
