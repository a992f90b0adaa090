"""Start, find and stop one Ray node of one job, and wait until a cluster's nodes joined.

    address = start_head(spec)        # fresh token, then `ray start --head`
    start_worker(spec)                # waits for the head's GCS, then joins it
    wait_for_nodes(spec)              # [{'node_id', 'node_name', 'ip', 'labels', ...}]
    stop_own(spec)                    # exactly this job/node's processes, by pid

    python -m cluster.ray_node cleanup --job-id J --node-name N   # the dev cluster's epilog

Security and isolation:
- Token auth (see ``cluster.auth``): every ``ray start`` gets ``RAY_AUTH_MODE=token`` and
  ``RAY_AUTH_TOKEN_PATH`` (a fresh 0600 token written by the head for each run); a client
  without the token is refused.
- The dashboard UI is off (``--include-dashboard=false``); the API server Ray still runs
  on the head is bound to 127.0.0.1 (``--dashboard-host``).
- Ports, temp dir and resources come from the ``RayClusterSpec`` (``cluster.ray_spec``).
- ``ray start`` runs in a new session whose id is recorded in the temp dir (plus the
  marker variable ``MARKER_ENV``); every process it spawns stays in that session, and
  ``stop_own`` signals exactly those pids (never ``ray stop``, which kills every Ray of
  this user on the machine).

A requeued job runs the same code again: start_* first stops leftovers of the same
job/node (proctrack/linuxproc does not kill daemonized processes) and wipes its temp dir.
After the job, ``cleanup`` stops whatever the job left behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cluster import auth, procs
from cluster.ports import busy, reachable
from cluster.ray_spec import (
    MARKER_ENV,
    NODE_LABEL,
    NODE_RESOURCE_PREFIX,
    RayClusterSpec,
    RayStartError,
)

_REPO_ROOT = Path(__file__).resolve().parents[1]
_SESSIONS = "sessions"  # file in temp_dir: session ids of our `ray start` calls


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


# ----------------------------------------------------------------------- start


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
    if spec.temp_dir.is_symlink() or (spec.temp_dir.exists() and spec.temp_dir.stat().st_uid != os.getuid()):
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
        while not (reachable(host, int(port)) and spec.token_file.exists()):
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


# ----------------------------------------------------------------------- find / stop


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
        if any(p in found for p, _, _ in members) or all(a and a[0].startswith("ray::") for _, _, a in members):
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


# ----------------------------------------------------------------------- waiting


def wait_for_nodes(spec: RayClusterSpec, n: int | None = None, timeout: float = 300.0) -> list[dict[str, Any]]:
    """Poll the GCS until `n` (default spec.num_nodes) nodes are alive; return them.

    Runs in a child process with the token environment, so the caller's own Ray state
    (it may become the driver later) is untouched. Each node: {'node_id', 'node_name',
    'ip', 'labels', 'resources'}.
    """
    n = spec.num_nodes if n is None else n
    cmd = [
        sys.executable, "-m", "cluster.ray_node", "_poll", "--address", spec.address,
        "--nodes", str(n), "--timeout", str(timeout),
    ]  # fmt: skip
    env = _ray_env(spec)
    env.pop(MARKER_ENV)  # the poller is not part of the node; stop_own must not see it
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 60)
    if res.returncode != 0:
        raise RayStartError(f"waiting for {n} Ray nodes at {spec.address} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _poll_nodes(address: str, n: int, timeout: float) -> list[dict[str, Any]]:
    """(child process) Poll the GCS with Ray's GcsClient; token from the environment."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # no stub
    from ray.core.generated.gcs_pb2 import GcsNodeInfo  # type: ignore[attr-defined]  # no stub

    client = GcsClient(address=address)
    deadline = time.monotonic() + timeout
    while True:
        error: Exception | None = None
        try:
            infos = client.get_all_node_info(timeout=5).values()
        except Exception as exc:  # GCS not up yet / transient; give up only at deadline
            infos, error = [], exc
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
            raise TimeoutError(f"{len(alive)}/{n} nodes alive after {timeout:.0f}s (last error: {error})")
        time.sleep(0.5)


# ----------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.ray_node")
    sub = parser.add_subparsers(dest="cmd", required=True)
    poll = sub.add_parser("_poll", help="(internal, for wait_for_nodes) token from env")
    poll.add_argument("--address", required=True)
    poll.add_argument("--nodes", type=int, required=True)
    poll.add_argument("--timeout", type=float, required=True)
    clean = sub.add_parser("cleanup", help="(Slurm epilog) stop a finished job's Ray here")
    clean.add_argument("--job-id", type=int, required=True)
    clean.add_argument("--node-name", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "_poll":
        print(json.dumps(_poll_nodes(args.address, args.nodes, args.timeout)))
    else:
        print(f"stopped {cleanup(args.job_id, args.node_name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
