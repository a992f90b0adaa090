"""A secure per-job Ray cluster: token auth, private token file, explicit ports, selective
stop, requeue-safe restart, outside Slurm (the same cluster inside real Slurm jobs is
tests/test_ray_slurm.py).

    .venv/bin/python -m pytest tests/test_ray_cluster.py -v  # no Slurm needed

Every Ray here is started by these tests with fake job ids; other Ray instances on the
machine (other users, other test sessions) must survive them. The module's head outlives
its tests, so no real Slurm job may run beside it: a job id 53·k away from a fake one
would find its ports taken (cluster.ports).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cluster import procs, ray_node
from cluster.ports import RayPorts, busy
from cluster.ray_spec import (
    NODE_LABEL,
    RayClusterSpec,
    client_env,
    local_ip,
)
from support import REPO

# What a driver checks, given a connected ray: the alive nodes (labels, CPUs, GPUs) and,
# for each Slurm node resource, where a task that asked for it ran. Prints one RESULT line.
CHECKS = r"""
import json, os
import ray

@ray.remote(num_cpus=0)
def where() -> dict[str, str | None]:
    return {"node_id": ray.get_runtime_context().get_node_id(),
            "slurmd": os.environ.get("SLURMD_NODENAME")}

def report() -> None:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    tags = sorted(k for n in nodes for k in n["Resources"] if k.startswith("slurm_node:"))
    print("RESULT " + json.dumps({
        "nodes": [{"id": n["NodeID"], "labels": n["Labels"], "cpus": n["Resources"].get("CPU"),
                   "gpus": n["Resources"].get("GPU", 0)} for n in nodes],
        "tasks": {t: ray.get(where.options(resources={t: 0.01}).remote()) for t in tags},
    }), flush=True)
"""

# A driver that finds the cluster and its token in the environment only.
DRIVER = (
    CHECKS
    + """
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
report()
"""
)


def _job_ids(n: int) -> list[int]:
    """n consecutive fake job ids whose ports are all free (consecutive ids never share
    ports: see cluster.ports), far above any id the dev Slurm cluster hands out."""
    for _ in range(20):
        base = random.randrange(50_000_000, 60_000_000)
        ids = list(range(base, base + n))
        wanted = [p for j in ids for i in (0, 1) for p in RayPorts.for_node(j, i).all()]
        if not busy(wanted):
            return ids
    raise RuntimeError("no free Ray port blocks")


@pytest.fixture(scope="module")
def job_ids() -> list[int]:
    return _job_ids(4)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty HOME for drivers: no ~/.ray/auth_token to fall back on."""
    return tmp_path_factory.mktemp("home")


def make_spec(
    job_id: int, token_file: Path, node_index: int = 0, node_name: str = "t0", num_nodes: int = 1
) -> RayClusterSpec:
    ip = local_ip()
    return RayClusterSpec(
        job_id=job_id, node_index=node_index, node_name=node_name, head_host=ip, node_ip=ip,
        num_nodes=num_nodes, token_file=token_file, num_cpus=1, num_gpus=0,
        memory_bytes=2 * 2**30, object_store_bytes=100 * 2**20,
    )  # fmt: skip


def run_driver(
    env_extra: dict[str, str], home: Path, address: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run DRIVER in a fresh interpreter with exactly the given auth environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"HOME": str(home), "RAY_ADDRESS": address, **env_extra})
    return subprocess.run([sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=timeout)


def driver_result(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_ports_of_nearby_jobs_never_overlap() -> None:
    """Any two jobs whose ids differ by less than JOB_SLOTS, on any two node indexes, get
    disjoint ports; all stay in 20000-31999 (below the kernel's ephemeral range)."""
    from cluster import ports

    base = 7_133_000
    blocks = {(j, i): set(RayPorts.for_node(j, i).all()) for j in range(base, base + ports.JOB_SLOTS) for i in range(2)}
    everything = [p for b in blocks.values() for p in b]
    assert len(everything) == len(set(everything))  # pairwise disjoint
    assert all(len(b) == ports.BLOCK - ports.NAMED_RESERVED + 9 for b in blocks.values())
    assert min(everything) >= 20000 and max(everything) < 32000 <= 32768
    # Ids exactly JOB_SLOTS apart share a slot; busy() is what catches that at start.
    assert RayPorts.for_node(base, 0) == RayPorts.for_node(base + ports.JOB_SLOTS, 0)


def test_own_pids_trusts_a_recorded_session_only_when_it_looks_like_ours(tmp_path: Path) -> None:
    """Session ids are recorded per `ray start`; the kernel may reuse one later. A reused
    session of some other program must not be taken for Ray; orphaned, retitled Ray
    agents (argv ``ray::...``, environment unreadable) must be."""
    spec = make_spec(_job_ids(1)[0], tmp_path / "t", node_name="s")
    spec.temp_dir.mkdir(mode=0o700)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    orphan = subprocess.Popen(["ray::DashboardAgent", "60"], executable="sleep", start_new_session=True)
    try:
        (spec.temp_dir / "sessions").write_text(f"{stranger.pid}\n{orphan.pid}\n")
        found = ray_node.own_pids(spec)
        assert stranger.pid not in found
        assert orphan.pid in found
        assert ray_node.stop_own(spec, grace=1.0, remove_temp_dir=True) == [orphan.pid]
        assert stranger.poll() is None  # untouched
    finally:
        for proc in (stranger, orphan):
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def head_a(job_ids: list[int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayClusterSpec]:
    spec = make_spec(job_ids[0], tmp_path_factory.mktemp("a") / "ray.token", node_name="a")
    ray_node.start_head(spec)
    yield spec
    ray_node.stop_own(spec, remove_temp_dir=True)
    assert not spec.temp_dir.exists()


def test_token_file_is_private_and_random(head_a: RayClusterSpec) -> None:
    st = head_a.token_file.stat()
    assert st.st_mode & 0o777 == 0o600
    token = head_a.token_file.read_text()
    assert len(token) == 64 and int(token, 16)  # 256 random bits, hex


def test_driver_with_token_runs_a_task(head_a: RayClusterSpec, home: Path) -> None:
    out = driver_result(run_driver(client_env(head_a), home, head_a.address))
    [node] = out["nodes"]
    assert node["labels"][NODE_LABEL] == "a"
    assert node["cpus"] == 1  # what the spec granted, not the machine's cores
    assert out["tasks"]["slurm_node:a"]["node_id"] == node["id"]


def test_connect_works_even_after_ray_was_imported(head_a: RayClusterSpec, home: Path) -> None:
    """Ray reads RAY_AUTH_MODE once at import; connect() reloads it (a Tune driver may
    have imported ray long before it learns the cluster)."""
    code = (
        "import sys, pickle, ray; from cluster.ray_spec import connect; "
        "connect(pickle.loads(bytes.fromhex(sys.argv[1])), log_to_driver=False); "
        "print('NODES', len(ray.nodes()))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(home)
    res = subprocess.run(
        [sys.executable, "-c", code, pickle.dumps(head_a).hex()], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "NODES 1" in res.stdout


def test_client_without_the_token_is_refused(head_a: RayClusterSpec, home: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("0" * 64)
    wrong.chmod(0o600)
    # A refused client retries the GCS once a second, 20 times by default; 2 are enough to
    # see the refusal's reason.
    retries = {"RAY_gcs_server_port_wait_time_s": "2"}
    attempts = {
        "no token": retries,  # auth mode unset, no token anywhere (HOME is empty)
        "wrong token": {**retries, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(wrong)},
    }
    with ThreadPoolExecutor(2) as pool:
        futures = {k: pool.submit(run_driver, env, home, head_a.address) for k, env in attempts.items()}
        results = {k: f.result() for k, f in futures.items()}
    for name, res in results.items():
        assert res.returncode != 0, f"{name}: connected without the right token"
        assert "RESULT" not in res.stdout
        assert "InvalidAuthToken" in res.stderr or "Authentication token" in res.stderr, (
            f"{name}: failed for another reason:\n{res.stderr[-2000:]}"
        )


def test_dashboard_is_not_exposed_and_ports_are_explicit(head_a: RayClusterSpec, home: Path) -> None:
    # Run a driver first so worker processes (which listen too) exist.
    driver_result(run_driver(client_env(head_a), home, head_a.address))
    pids = ray_node.own_pids(head_a)
    assert pids, "no Ray processes found for the job"
    sockets = procs.listening(pids)
    assert sockets
    explicit = set(head_a.ports.all())
    p = head_a.ports
    for pid, ip, port in sockets:
        assert port in explicit, f"pid {pid} ({procs.cmdline(pid)[:1]}) listens on {ip}:{port}"
        if port in (p.dashboard, p.dashboard_agent_listen):
            assert ip in ("127.0.0.1", "::1"), f"dashboard port {port} exposed on {ip}"
    # The dashboard UI is off; the head's API server, if any, is loopback only.
    assert "--include-dashboard=false" in ray_node._head_args(head_a)
    # A driver on the node makes Ray chmod its temp dir 0777; our parent dir stays 0700.
    assert head_a.ray_temp_dir.parent == head_a.temp_dir
    assert head_a.temp_dir.stat().st_mode & 0o777 == 0o700


def test_two_heads_coexist_and_stop_is_selective(
    head_a: RayClusterSpec, job_ids: list[int], tmp_path: Path, home: Path
) -> None:
    spec_b = make_spec(job_ids[1], tmp_path / "b.token", node_name="b")
    assert not set(spec_b.ports.all()) & set(head_a.ports.all())
    a_pids = ray_node.own_pids(head_a)
    ray_node.start_head(spec_b)
    try:
        b_pids = ray_node.own_pids(spec_b)
        assert b_pids and not b_pids & a_pids
        assert spec_b.token_file.read_text() != head_a.token_file.read_text()
        out = driver_result(run_driver(client_env(spec_b), home, spec_b.address))
        assert [n["labels"][NODE_LABEL] for n in out["nodes"]] == ["b"]
    finally:
        stopped = ray_node.stop_own(spec_b, remove_temp_dir=True)
    assert stopped and not any(procs.alive(p) for p in b_pids)
    assert ray_node.own_pids(spec_b) == set()
    assert not spec_b.temp_dir.exists() and head_a.temp_dir.is_dir()
    # The other job's Ray is untouched and still serves.
    assert all(procs.alive(p) for p in a_pids)
    out = driver_result(run_driver(client_env(head_a), home, head_a.address))
    assert out["nodes"][0]["labels"][NODE_LABEL] == "a"


def test_restart_of_the_same_job_replaces_stale_state(job_ids: list[int], tmp_path: Path) -> None:
    """A requeued job starts again on the same node: leftovers die, new token, clean dir."""
    spec = make_spec(job_ids[2], tmp_path / "c.token", node_name="c")
    ray_node.start_head(spec)
    try:
        old_pids = ray_node.own_pids(spec)
        old_token = spec.token_file.read_text()
        (spec.temp_dir / "stale").write_text("from the previous run")
        ray_node.start_head(spec)  # no stop in between, like a preempted job
        new_pids = ray_node.own_pids(spec)
        assert not any(procs.alive(p) for p in old_pids)
        assert new_pids and not new_pids & old_pids
        assert not (spec.temp_dir / "stale").exists()
        assert spec.token_file.read_text() != old_token
        assert spec.temp_dir.stat().st_mode & 0o777 == 0o700
        [node] = ray_node.wait_for_nodes(spec, 1, timeout=60)
        assert node["labels"][NODE_LABEL] == "c"
    finally:
        stopped = ray_node.stop_own(spec)
    assert new_pids <= set(stopped)
    assert ray_node.own_pids(spec) == set()
    assert (spec.temp_dir / "r").is_dir()  # logs kept unless asked to remove them
    ray_node.stop_own(spec, remove_temp_dir=True)
    assert not spec.temp_dir.exists()


def test_worker_joins_and_leaves_when_the_head_stops(job_ids: list[int], tmp_path: Path, home: Path) -> None:
    """Two Ray nodes of one job on this machine (as on the dev Slurm cluster)."""
    token = tmp_path / "d.token"
    head_spec = make_spec(job_ids[3], token, node_name="h", num_nodes=2)
    worker_spec = make_spec(job_ids[3], token, node_index=1, node_name="w", num_nodes=2)
    assert not set(head_spec.ports.all()) & set(worker_spec.ports.all())
    assert head_spec.temp_dir != worker_spec.temp_dir
    code = (
        "import sys, pickle; from cluster.ray_roles import run_worker; "
        "run_worker(pickle.loads(bytes.fromhex(sys.argv[1])), poll=1.0)"
    )
    ray_node.start_head(head_spec)
    worker = subprocess.Popen(
        [sys.executable, "-c", code, pickle.dumps(worker_spec).hex()], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        nodes = ray_node.wait_for_nodes(head_spec, 2, timeout=120)
        assert sorted(n["labels"][NODE_LABEL] for n in nodes) == ["h", "w"]
        out = driver_result(run_driver(client_env(head_spec), home, head_spec.address))
        ids = {n["labels"][NODE_LABEL]: n["id"] for n in out["nodes"]}
        assert out["tasks"]["slurm_node:w"]["node_id"] == ids["w"]
        assert out["tasks"]["slurm_node:h"]["node_id"] == ids["h"]
        worker_pids = ray_node.own_pids(worker_spec)
        assert worker_pids
    finally:
        ray_node.stop_own(head_spec, remove_temp_dir=True)
    # The worker task notices the head is gone, stops its own Ray and returns.
    assert worker.wait(timeout=60) == 0, worker.stdout.read() if worker.stdout else ""
    assert not any(procs.alive(p) for p in worker_pids)
    assert not worker_spec.temp_dir.exists()  # clean exit: run_worker removed it
