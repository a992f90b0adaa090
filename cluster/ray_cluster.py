"""Start and stop a secure Ray cluster inside one Slurm job (head on the first node).

Called from the job's tasks, one per node (e.g. ``srun --ntasks-per-node=1``)::

    spec = RayClusterSpec.from_slurm(token_file=run_dir / "slurm" / "ray.token")
    if spec.is_head:
        with head(spec):                     # start, wait for all nodes, stop at exit
            connect(spec)                    # ray.init(address=...) with the token
            ...                              # the Tune driver
    else:
        run_worker(spec)                     # blocks until the head goes away

or, as the command of every task (the head runs the driver with RAY_ADDRESS and the
token environment set)::

    srun --ntasks-per-node=1 python -m cluster.ray_cluster run --token-file F -- python drv.py

Locally, without Slurm (what tests/test_ray_cluster.py does)::

    python -m cluster.ray_cluster start --job-id 4242 --num-cpus 1 --token-file /tmp/t
    python -m cluster.ray_cluster nodes --job-id 4242 --token-file /tmp/t
    python -m cluster.ray_cluster stop  --job-id 4242 --token-file /tmp/t

Security and isolation:
- Token auth (see ``cluster.auth``): every ``ray start`` gets ``RAY_AUTH_MODE=token`` and
  ``RAY_AUTH_TOKEN_PATH`` (a fresh 0600 token written by the head for each run); a client
  without the token is refused.
- The dashboard UI is off (``--include-dashboard=false``); the API server Ray still runs
  on the head is bound to 127.0.0.1 (``--dashboard-host``).
- Every port is explicit and derived from the job id (``cluster.ports``); the temp dir
  is short, per job and node (``/tmp/bs-<job>-<node>``; Unix socket paths max 107 bytes).
- CPUs/GPUs/memory are what Slurm allocated on this node, never the whole machine.
- ``ray start`` runs in a new session whose id is recorded in the temp dir (plus a
  marker variable ``BATCHSCALE_RAY_NODE=<job>/<index>/<node>``); every process it
  spawns stays in that session, and ``stop_own`` signals exactly those pids (never
  ``ray stop``, which kills every Ray of this user on the machine).

A requeued job runs the same code again: start_* first stops leftovers of the same
job/node (proctrack/linuxproc does not kill daemonized processes) and wipes its temp dir;
a worker retries joining and rejoins if its raylet dies while the head is up. After the
job, ``cleanup`` (the dev cluster's Slurm epilog) stops whatever the job left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cluster import auth, procs
from cluster.ports import RayPorts, busy

MARKER_ENV = "BATCHSCALE_RAY_NODE"
NODE_LABEL = "batchscale/slurm-node"  # Ray node label: the Slurm node name
NODE_RESOURCE_PREFIX = "slurm_node:"  # custom resource {"slurm_node:<name>": 1}
_MAX_TEMP_DIR = 38  # + "/r/session_<date>_<pid>/sockets/plasma_store" stays < 108
_REPO_ROOT = Path(__file__).resolve().parents[1]
_SESSIONS = "sessions"  # file in temp_dir: session ids of our `ray start` calls


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
    def from_slurm(
        cls, token_file: str | os.PathLike[str], env: Mapping[str, str] | None = None
    ) -> RayClusterSpec:
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


# ----------------------------------------------------------------------- environment


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
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def slurm_node_ip(node: str) -> str:
    """IP of Slurm node `node`: its NodeAddr (what Slurm itself connects to), resolved.

    A loopback NodeAddr (the dev cluster) maps to this machine's outward IP, which is
    what Ray uses anyway: `ray start` rewrites 127.0.0.1 to it.
    """
    res = subprocess.run(
        ["scontrol", "show", "node", node, "--oneliner"], capture_output=True, text=True
    )
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
    callers drop it (``auth.use_in_process``, ``run``).
    """
    return {**auth.client_env(spec.token_file), "RAY_ADDRESS": spec.address}


def connect(spec: RayClusterSpec, **init_kwargs: object) -> object:
    """``ray.init`` this process to the job's cluster with its token; returns ray.init's
    result. Works even if ray was imported before: Ray reads RAY_AUTH_MODE into its
    config once, so the config and token cache are reloaded (as Ray's own
    authentication_token_setup._enable_token_auth does)."""
    import ray

    auth.use_in_process(client_env(spec))
    return ray.init(address=spec.address, **init_kwargs)


def _ray_env(spec: RayClusterSpec) -> dict[str, str]:
    env = auth.scrubbed_env(dict(os.environ), spec.token_file)
    env.pop("RAY_ADDRESS", None)  # never let `ray start` pick up some other cluster
    env[MARKER_ENV] = spec.marker
    # `cluster` must be importable by our helper subprocesses wherever the job runs.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _ray_cli() -> list[str]:
    exe = Path(sys.executable).with_name("ray")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


# ----------------------------------------------------------------------- start / stop


def _node_args(spec: RayClusterSpec) -> list[str]:
    p = spec.ports
    args = [
        f"--node-ip-address={spec.node_ip}",
        f"--node-name={spec.node_name}",
        f"--temp-dir={spec.ray_temp_dir}",
        f"--num-cpus={spec.num_cpus}",
        f"--num-gpus={spec.num_gpus}",
        f"--resources={json.dumps({NODE_RESOURCE_PREFIX + spec.node_name: 1})}",
        f"--labels={NODE_LABEL}={spec.node_name}",
        f"--node-manager-port={p.node_manager}",
        f"--object-manager-port={p.object_manager}",
        f"--min-worker-port={p.min_worker}",
        f"--max-worker-port={p.max_worker}",
        f"--dashboard-agent-listen-port={p.dashboard_agent_listen}",
        f"--dashboard-agent-grpc-port={p.dashboard_agent_grpc}",
        f"--runtime-env-agent-port={p.runtime_env_agent}",
        f"--metrics-export-port={p.metrics_export}",
        "--disable-usage-stats",
    ]
    if spec.memory_bytes:
        args.append(f"--memory={spec.memory_bytes}")
    if spec.object_store_bytes:
        args.append(f"--object-store-memory={spec.object_store_bytes}")
    return args


def _head_args(spec: RayClusterSpec) -> list[str]:
    p = spec.ports
    args = [
        "--head",
        f"--port={p.gcs}",
        "--include-dashboard=false",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={p.dashboard}",
    ]
    # The Ray Client server starts only if ray[client] (grpcio) is installed; Ray
    # rejects the flag otherwise. Drivers here connect to the GCS, not via ray://.
    if importlib.util.find_spec("grpc") is not None:
        args.append(f"--ray-client-server-port={p.client_server}")
    return args


def _prepare_node(spec: RayClusterSpec) -> None:
    """Stop leftovers of this job/node (an earlier run of a requeued job), wipe its
    temp dir, and make sure the ports are free."""
    stop_own(spec)
    if spec.temp_dir.is_symlink() or (
        spec.temp_dir.exists() and spec.temp_dir.stat().st_uid != os.getuid()
    ):
        # /tmp is shared and the name predictable: never follow or adopt another's.
        raise RayStartError(f"{spec.temp_dir} is a symlink or another user's; refusing it")
    if spec.temp_dir.exists():
        shutil.rmtree(spec.temp_dir)
    spec.temp_dir.mkdir(mode=0o700, parents=True)
    spec.temp_dir.chmod(0o700)  # mkdir's mode is subject to the umask
    wanted = spec.ports.all() if spec.is_head else spec.ports.all()[1:]
    taken = busy(wanted)
    if taken:
        raise RayStartError(
            f"job {spec.job_id} node {spec.node_index}: ports {taken} are in use by another "
            "process (another job with a job id a multiple of 53 apart on this host?)"
        )


def _ray_start(spec: RayClusterSpec, args: list[str], timeout: float) -> None:
    """Run `ray start` as leader of a new session and record that session id: every
    process it spawns stays in the session (Ray doesn't setsid), which identifies them
    even after setproctitle has overwritten their argv and environment."""
    log = spec.temp_dir / "ray-start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*_ray_cli(), "start", *args], env=_ray_env(spec), stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        with open(spec.temp_dir / _SESSIONS, "a") as f:
            f.write(f"{proc.pid}\n")
        try:
            rc: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
    if rc != 0:
        stop_own(spec)  # a half-started node must not linger
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RayStartError(f"`ray start` failed (rc={rc}); {log}:\n{tail}")
    # For the record (and humans): the pids this start produced.
    (spec.temp_dir / "pids").write_text("\n".join(map(str, sorted(own_pids(spec)))) + "\n")


def start_head(spec: RayClusterSpec, timeout: float = 180.0) -> str:
    """Start the head node (writes a fresh token first); return the cluster address."""
    if not spec.is_head:
        raise ValueError("start_head needs node_index 0")
    _prepare_node(spec)
    auth.write_token(spec.token_file)  # new secret per run, before the GCS exists
    _ray_start(spec, _head_args(spec) + _node_args(spec), timeout)
    return spec.address


def start_worker(spec: RayClusterSpec, timeout: float = 300.0) -> None:
    """Join the head: wait for its GCS port (after which the token file is fresh), then
    start this node."""
    if spec.is_head:
        raise ValueError("start_worker needs node_index > 0")
    host, port = spec.address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        _prepare_node(spec)
        while not (_reachable(host, int(port)) and spec.token_file.exists()):
            if time.monotonic() > deadline:
                raise RayStartError(f"head {spec.address} not reachable after {timeout:.0f}s")
            time.sleep(0.5)
        try:
            _ray_start(spec, [f"--address={spec.address}", *_node_args(spec)], 120)
            return
        except RayStartError:
            # E.g. a requeued job: a leftover head of the previous run answered (old
            # token) before the new head replaced it. Retry until the deadline.
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _recorded_sessions(spec: RayClusterSpec) -> set[int]:
    try:
        return {int(x) for x in (spec.temp_dir / _SESSIONS).read_text().split()}
    except (FileNotFoundError, ValueError):
        return set()


def own_pids(spec: RayClusterSpec) -> set[int]:
    """Live processes (of our uid) of this job's Ray node on this machine.

    A process is ours if it carries our marker variable or names our temp dir in argv
    (gcs_server, raylet, Python helpers), or if it is in a session our `ray start` led:
    that catches workers and agents, whose argv and environment setproctitle overwrote.
    A recorded session counts only if a member is verifiably ours, or all its members are
    such retitled ``ray::`` processes, and none carries another node's marker, so a
    session id reused by the kernel for something else is never taken for ours.
    """
    me = procs.ancestors(os.getpid())  # never the caller, even if it carries the marker
    recorded = _recorded_sessions(spec)
    tmp = f"{spec.temp_dir}/"
    uid = os.getuid()
    found: set[int] = set()
    sessions: dict[int, list[tuple[int, str | None, list[str]]]] = {}
    for pid in procs.all_pids():
        if pid in me or procs.owner(pid) != uid or not procs.alive(pid):
            continue
        marker = procs.environ(pid).get(MARKER_ENV)
        argv = procs.cmdline(pid)
        if marker == spec.marker or any(tmp in arg for arg in argv):
            found.add(pid)
        sid = procs.session_id(pid)
        if sid in recorded:
            sessions.setdefault(sid, []).append((pid, marker, argv))
    for members in sessions.values():
        if any(m is not None and m != spec.marker for _, m, _ in members):
            continue  # another Ray node's session
        if any(p in found for p, _, _ in members) or all(
            a and a[0].startswith("ray::") for _, _, a in members
        ):
            found.update(p for p, _, _ in members)
    return found


def stop_own(spec: RayClusterSpec, grace: float = 5.0, remove_temp_dir: bool = False) -> list[int]:
    """Stop exactly this job/node's Ray processes by pid and wait until they are gone.

    Order as in `ray stop` (ray/scripts/scripts.py): raylets first (they take their
    workers and agents down), then the rest, GCS last; each group gets SIGTERM, then
    SIGKILL after `grace` seconds. Measured on Ray 2.60: a raylet whose GCS is gone and
    agents whose raylet died ignore SIGTERM, and so does a GCS with worker nodes still
    attached; the GCS (no external Redis, so no state to save) gets at most 1 s. Other
    Ray clusters on the machine, this user's included, are left alone. Returns the
    pids. With `remove_temp_dir`, the node's temp dir (Ray's logs) goes too.
    """
    stopped: list[int] = []
    for _ in range(3):  # a raylet may still fork a worker while going down
        pids = own_pids(spec)
        if not pids:
            break
        name = {p: Path((procs.cmdline(p) or [""])[0]).name for p in pids}
        raylets = {p for p in pids if name[p] == "raylet"}
        gcs = {p for p in pids if name[p] == "gcs_server"}
        groups = ((raylets, grace), (pids - raylets - gcs, grace), (gcs, min(grace, 1.0)))
        for group, wait in groups:
            procs.terminate({p for p in group if procs.alive(p)}, timeout=wait)
        stopped.extend(sorted(p for p in pids if not procs.alive(p)))
    left = own_pids(spec)
    if left:
        raise RuntimeError(f"Ray processes {sorted(left)} of job {spec.job_id} survived SIGKILL")
    if remove_temp_dir and spec.temp_dir.is_dir() and not spec.temp_dir.is_symlink():
        shutil.rmtree(spec.temp_dir, ignore_errors=True)
    return stopped


def _reachable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


# ----------------------------------------------------------------------- waiting


def wait_for_nodes(
    spec: RayClusterSpec, n: int | None = None, timeout: float = 300.0
) -> list[dict]:
    """Poll the GCS until `n` (default spec.num_nodes) nodes are alive; return them.

    Runs in a child process with the token environment, so the caller's own Ray state
    (it may become the driver later) is untouched. Each node: {'node_id', 'node_name',
    'ip', 'labels', 'resources'}.
    """
    n = spec.num_nodes if n is None else n
    cmd = [
        sys.executable, "-m", "cluster.ray_cluster", "_poll", "--address", spec.address,
        "--nodes", str(n), "--timeout", str(timeout),
    ]  # fmt: skip
    env = _ray_env(spec)
    env.pop(MARKER_ENV)  # the poller is not part of the node; stop_own must not see it
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 60)
    if res.returncode != 0:
        raise RayStartError(
            f"waiting for {n} Ray nodes at {spec.address} failed:\n{res.stderr[-3000:]}"
        )
    return json.loads(res.stdout.strip().splitlines()[-1])


def _poll_nodes(address: str, n: int, timeout: float) -> list[dict]:
    """(child process) Poll the GCS with Ray's GcsClient; token from the environment."""
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    client = GcsClient(address=address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            infos = client.get_all_node_info(timeout=5).values()
        except Exception as exc:  # GCS not up yet / transient; give up only at deadline
            infos, error = [], exc
        else:
            error = None
        alive = [i for i in infos if i.state == GcsNodeInfo.ALIVE]
        if len(alive) >= n:
            return [
                {
                    "node_id": i.node_id.hex(),
                    "node_name": i.node_name,
                    "ip": i.node_manager_address,
                    "labels": dict(i.labels),
                    "resources": dict(i.resources_total),
                }
                for i in alive
            ]
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(alive)}/{n} nodes alive after {timeout:.0f}s (last error: {error})"
            )
        time.sleep(0.5)


# ----------------------------------------------------------------------- task-level


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
    own = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
    )
    if own:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        if own:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raylet_alive(spec: RayClusterSpec) -> bool:
    return any(
        Path((procs.cmdline(p) or [""])[0]).name == "raylet" for p in own_pids(spec)
    )


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
                if not _reachable(host, int(port)):
                    misses += 1
                    continue
                misses = 0
                if not _raylet_alive(spec):
                    start_worker(spec, join_timeout)
            clean = True
        finally:
            # Without a GCS the raylet can't shut down gracefully (it ignores SIGTERM).
            stop_own(spec, grace=1.0 if clean else 5.0, remove_temp_dir=clean)


def run(spec: RayClusterSpec, command: list[str], join_timeout: float = 300.0) -> int:
    """One Slurm task's whole part: the head runs `command` (the driver) against the
    cluster once every node joined, then stops Ray; workers serve until the head is
    gone. Returns the exit status (the driver's on the head, 0 on workers)."""
    if not spec.is_head:
        run_worker(spec, join_timeout)
        return 0
    with _sigterm_exits(), head(spec, join_timeout):
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
        return subprocess.run(command, env={**env, **client_env(spec)}).returncode


def cleanup(job_id: int, node_name: str) -> list[int]:
    """Stop every Ray process a finished job left on this node and remove its temp dir.

    For a Slurm epilog where proctrack/cgroup is unavailable (the dev cluster): with
    proctrack/linuxproc, Ray's daemonized processes escape Slurm's kill, e.g. after
    scancel of a submitit job (submitit ignores SIGTERM, so nothing stops Ray before
    SIGKILL). Finds them by the sessions recorded in /tmp/bs-<job>-<node>/ and by argv.
    """
    stopped = []
    for node_index in range(2):  # marker needs an index; sessions/argv don't
        spec = RayClusterSpec(
            job_id=job_id, node_index=node_index, node_name=node_name, head_host="",
            node_ip="", num_nodes=1, token_file=Path("/dev/null"), num_cpus=0,
        )  # fmt: skip
        # The job is over: nothing to drain, and orphaned agents ignore SIGTERM anyway.
        stopped += stop_own(spec, grace=1.0, remove_temp_dir=node_index == 1)
    return stopped


# ----------------------------------------------------------------------- CLI


def _local_spec(args: argparse.Namespace) -> RayClusterSpec:
    ip = local_ip()
    return RayClusterSpec(
        job_id=args.job_id, node_index=args.node_index, node_name=args.node_name,
        head_host=ip, node_ip=ip, num_nodes=args.num_nodes, token_file=Path(args.token_file),
        num_cpus=args.num_cpus, num_gpus=args.num_gpus,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.ray_cluster")
    sub = parser.add_subparsers(dest="cmd", required=True)
    poll = sub.add_parser("_poll", help="(internal) wait for nodes; token from env")
    poll.add_argument("--address", required=True)
    poll.add_argument("--nodes", type=int, required=True)
    poll.add_argument("--timeout", type=float, required=True)
    clean = sub.add_parser("cleanup", help="(Slurm epilog) stop a finished job's Ray here")
    clean.add_argument("--job-id", type=int, required=True)
    clean.add_argument("--node-name", required=True)
    runp = sub.add_parser("run", help="in a Slurm task: head runs COMMAND, workers serve")
    runp.add_argument("--token-file", required=True)
    runp.add_argument("--join-timeout", type=float, default=300.0)
    runp.add_argument("command", nargs=argparse.REMAINDER, help="-- driver command")
    for name in ("start", "nodes", "stop"):
        p = sub.add_parser(name, help=f"{name} a local (non-Slurm) node of a fake job")
        p.add_argument("--job-id", type=int, required=True)
        p.add_argument("--token-file", required=True)
        p.add_argument("--node-index", type=int, default=0)
        p.add_argument("--node-name", default="local")
        p.add_argument("--num-nodes", type=int, default=1)
        p.add_argument("--num-cpus", type=int, default=1)
        p.add_argument("--num-gpus", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cmd == "_poll":
        print(json.dumps(_poll_nodes(args.address, args.nodes, args.timeout)))
        return 0
    if args.cmd == "cleanup":
        print(f"stopped {cleanup(args.job_id, args.node_name)}")
        return 0
    if args.cmd == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("run needs a driver command after --")
        return run(RayClusterSpec.from_slurm(args.token_file), command, args.join_timeout)
    spec = _local_spec(args)
    if args.cmd == "start":
        print(start_head(spec) if spec.is_head else start_worker(spec) or spec.address)
    elif args.cmd == "nodes":
        print(json.dumps(wait_for_nodes(spec, timeout=30), indent=1))
    else:
        print(f"stopped {stop_own(spec)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
