"""What one node of a job's Ray cluster is, read from Slurm's environment; and how a
driver connects to that cluster with its token.

    spec = RayClusterSpec.from_slurm(token_file=run_dir / "slurm" / "ray.token")
    spec.address                      # <head ip>:<gcs port>, the port derived from the job id
    connect(spec, log_to_driver=False)  # ray.init(address=...) with token auth

Starting and stopping a node is ``cluster.ray_node``; what each Slurm task does (head or
worker) is ``cluster.ray_roles``.

- Every port is explicit and derived from the job id (``cluster.ports``); the temp dir
  is short, per job and node (``/tmp/bs-<job>-<node>``; Unix socket paths max 107 bytes).
- CPUs/GPUs/memory are what Slurm allocated on this node, never the whole machine.
- Every process a node's ``ray start`` spawns carries ``MARKER_ENV=<job>/<index>/<node>``
  so that ``ray_node.stop_own`` can find exactly this node's processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import auth
from cluster.ports import RayPorts

MARKER_ENV = "BATCHSCALE_RAY_NODE"
NODE_LABEL = "batchscale/slurm-node"  # Ray node label: the Slurm node name
NODE_RESOURCE_PREFIX = "slurm_node:"  # custom resource {"slurm_node:<name>": 1}
_MAX_TEMP_DIR = 38  # + "/r/session_<date>_<pid>/sockets/plasma_store" stays < 108


class RayStartError(RuntimeError):
    """`ray start` failed, or its ports are taken, or nodes did not join in time."""


@dataclass(frozen=True)
class RayClusterSpec:
    """One Ray node of one job's cluster (build it per task: fields differ per node)."""

    job_id: int
    node_index: int  # 0 = head (SLURM_NODEID)
    node_name: str  # SLURMD_NODENAME; becomes Ray's node name, a label and a resource
    head_host: str  # IP of the head node as the other nodes reach it
    node_ip: str  # IP of this node
    num_nodes: int
    token_file: Path
    num_cpus: int  # required: never let Ray take the whole machine
    num_gpus: int = 0
    memory_bytes: int | None = None
    object_store_bytes: int | None = None
    temp_dir: Path = field(default=Path())  # default: /tmp/bs-<job>-<node_name>, mode 0700

    def __post_init__(self) -> None:
        if self.temp_dir == Path():
            object.__setattr__(self, "temp_dir", default_temp_dir(self.job_id, self.node_name))
        object.__setattr__(self, "token_file", Path(self.token_file).resolve())
        if len(str(self.temp_dir)) > _MAX_TEMP_DIR:
            raise ValueError(
                f"temp_dir {self.temp_dir} is longer than {_MAX_TEMP_DIR} characters; "
                "Ray's Unix sockets below it would exceed the 107-byte limit"
            )

    @property
    def ray_temp_dir(self) -> Path:
        """Ray's --temp-dir. Ray makes it (and every session dir) 0777 whenever a process
        on the node starts or connects; its parent, our temp_dir, stays 0700 so other
        users can't reach the sockets and logs inside."""
        return self.temp_dir / "r"

    @property
    def is_head(self) -> bool:
        return self.node_index == 0

    @property
    def ports(self) -> RayPorts:
        """This node's ports."""
        return RayPorts.for_node(self.job_id, self.node_index)

    @property
    def address(self) -> str:
        """The cluster address (head GCS), for ``ray.init(address=...)``."""
        return f"{self.head_host}:{RayPorts.for_node(self.job_id, 0).gcs}"

    @property
    def marker(self) -> str:
        """Value of MARKER_ENV in every process this node's `ray start` spawns."""
        return f"{self.job_id}/{self.node_index}/{self.node_name}"

    @classmethod
    def from_slurm(cls, token_file: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> RayClusterSpec:
        """The spec of the node this Slurm task runs on, from Slurm's environment.

        Needs SLURM_JOB_ID, SLURM_NODEID, SLURM_JOB_NODELIST, SLURM_JOB_NUM_NODES,
        SLURM_CPUS_ON_NODE; optional SLURM_GPUS_ON_NODE/CUDA_VISIBLE_DEVICES and
        SLURM_MEM_PER_NODE (MB; the object store gets 30% of it).
        """
        env = os.environ if env is None else env
        nodes = slurm_hostnames(env["SLURM_JOB_NODELIST"])
        node_name = env.get("SLURMD_NODENAME") or socket.gethostname()
        memory = int(env["SLURM_MEM_PER_NODE"]) * 2**20 if env.get("SLURM_MEM_PER_NODE") else None
        return cls(
            job_id=int(env["SLURM_JOB_ID"]),
            node_index=int(env["SLURM_NODEID"]),
            node_name=node_name,
            head_host=slurm_node_ip(nodes[0]),
            node_ip=slurm_node_ip(node_name),
            num_nodes=int(env.get("SLURM_JOB_NUM_NODES") or len(nodes)),
            token_file=Path(token_file),
            num_cpus=int(env["SLURM_CPUS_ON_NODE"]),
            num_gpus=slurm_gpus(env),
            memory_bytes=memory,
            object_store_bytes=max(int(memory * 0.3), 100 * 2**20) if memory else None,
        )


def default_temp_dir(job_id: int, node_name: str) -> Path:
    """/tmp/bs-<job>-<node>: short, and distinct per node (the dev cluster's n1 and n2
    share one machine)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node_name)[:12]
    return Path("/tmp") / f"bs-{job_id}-{safe}"


def slurm_gpus(env: Mapping[str, str]) -> int:
    """GPUs Slurm gave this node: SLURM_GPUS_ON_NODE, else CUDA_VISIBLE_DEVICES, else 0."""
    if env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        return int(env["SLURM_GPUS_ON_NODE"])
    visible = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and visible not in ("-1", "NoDevFiles"):
        return len([d for d in visible.split(",") if d.strip()])
    return 0


def slurm_hostnames(nodelist: str) -> list[str]:
    """Expand a Slurm node list (``n[1-2]``) with ``scontrol show hostnames``."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()


def slurm_node_ip(node: str) -> str:
    """IP of Slurm node `node`: its NodeAddr (what Slurm itself connects to), resolved.

    A loopback NodeAddr (the dev cluster) maps to this machine's outward IP, which is
    what Ray uses anyway: `ray start` rewrites 127.0.0.1 to it.
    """
    res = subprocess.run(["scontrol", "show", "node", node, "--oneliner"], capture_output=True, text=True)
    addr = node
    for item in res.stdout.split():
        if item.startswith("NodeAddr="):
            addr = item.split("=", 1)[1]
    ip = socket.gethostbyname(addr)
    return local_ip() if ip.startswith("127.") else ip


def local_ip() -> str:
    """This machine's outward IP (the route's source address; sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def client_env(spec: RayClusterSpec) -> dict[str, str]:
    """What a driver needs in os.environ *before* ``import ray``: token auth + address.

    A RAY_AUTH_TOKEN already in the environment would take precedence over the file:
    callers drop it (as ``auth.use_in_process`` does).
    """
    return {**auth.client_env(spec.token_file), "RAY_ADDRESS": spec.address}


def connect(spec: RayClusterSpec, **init_kwargs: Any) -> object:
    """``ray.init`` this process to the job's cluster with its token; returns ray.init's
    result. Works even if ray was imported before: Ray reads RAY_AUTH_MODE into its
    config once, so the config and token cache are reloaded (as Ray's own
    authentication_token_setup._enable_token_auth does)."""
    import ray

    auth.use_in_process(client_env(spec))
    return ray.init(address=spec.address, **init_kwargs)
