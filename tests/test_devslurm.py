"""The dev Slurm cluster really schedules: 2-node jobs, submitit, requeue, clean down.
(Accounting, QOS and limits: tests/test_accounting.py.)

    .venv/bin/python -m pytest -m slurm tests/test_devslurm.py -v
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster import devslurm as ds
from cluster import procs
from cluster.devslurm import accounting
from cluster.devslurm.daemons import port_open
from cluster.devslurm.layout import PORTS_PER_CLUSTER, Layout, daemon_ports

pytestmark = pytest.mark.slurm


def _run(env: dict[str, str], *argv: str, timeout: float = 60) -> str:
    res = subprocess.run(list(argv), env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{argv} failed: {res.stderr}"
    return res.stdout


def test_two_node_sbatch_runs_one_task_per_node(devslurm: ds.DevSlurm, tmp_path: Path) -> None:
    out = tmp_path / "tasks.out"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --nodes=2 --ntasks-per-node=1 --gres=gpu:2\n"
        "srun bash -c 'echo \"$SLURMD_NODENAME $SLURM_NODEID gpus=$CUDA_VISIBLE_DEVICES\"'\n"
    )
    job_id = _run(devslurm.env, "sbatch", "--parsable", f"--output={out}", str(script)).strip()
    info = ds.wait_job(job_id, timeout=120, path=devslurm.state_dir)
    assert info["JobState"] == "COMPLETED" and info["NodeList"] == "n[1-2]"
    lines = sorted(out.read_text().split("\n"))
    lines = [ln for ln in lines if ln]
    assert lines == ["n1 0 gpus=0,1", "n2 1 gpus=0,1"], out.read_text()


def test_submitit_executor_returns_result(slurm_env: dict[str, str], tmp_path: Path) -> None:
    import submitit

    def work(x: int) -> tuple[int, str | None, str | None]:
        # Defined inside the test so cloudpickle ships it by value to the job.
        return x * 2, os.environ.get("SLURMD_NODENAME"), os.environ.get("CUDA_VISIBLE_DEVICES")

    executor = submitit.SlurmExecutor(folder=tmp_path / "%j")
    executor.update_parameters(time=5, nodes=1, ntasks_per_node=1, gres="gpu:1")
    job = executor.submit(work, 21)
    deadline = time.monotonic() + 120
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.5)
    value, node, gpus = job.result()
    assert value == 42
    assert node in ds.NODES
    assert gpus == "0"


def test_requeue_reruns_the_job(devslurm: ds.DevSlurm, tmp_path: Path) -> None:
    """`scontrol requeue` (what submitit does on preemption) starts the job again."""
    marker = tmp_path / "runs"
    jid = _run(
        devslurm.env, "sbatch", "--parsable", "--requeue", f"--output={tmp_path / 'o'}",
        # SLURM_RESTART_COUNT is unset on the first run.
        f"--wrap=echo ${{SLURM_RESTART_COUNT:-0}} >> {marker}; sleep 60",
    ).strip()  # fmt: skip
    try:
        _poll(lambda: marker.exists(), 60, "first run")
        _run(devslurm.env, "scontrol", "requeue", jid)
        # cred_expire=10 in the dev config: the rerun may start ~11 s later (not 121 s).
        _poll(lambda: marker.read_text().split() == ["0", "1"], 90, "requeued run")
    finally:
        subprocess.run(["scancel", jid], env={**os.environ, **devslurm.env}, check=False)


def _poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _free_port_block() -> int:
    """A base port p with p .. p+4 free (slurmctld, 2 slurmd, slurmdbd, mariadbd), so a
    second cluster can't collide."""
    n = PORTS_PER_CLUSTER
    for base in range(9000, 9500, n):
        if all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free ports in 9000..9499")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_up_is_idempotent_and_down_stops_every_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private cluster in its own dir (with its own MariaDB and slurmdbd): up, up
    again, status, down, up on the kept database, down; nothing survives, no port stays
    open, and the database holds each account and association once."""
    # Not under pytest's 0700 tmp dirs: munged wants its socket's parents world-executable.
    root = Path(tempfile.mkdtemp(prefix="bs-devslurm-"))
    root.chmod(0o755)
    monkeypatch.setenv(ds.ENV_PORT, str(_free_port_block()))
    lay = Layout(root)
    ports = daemon_ports(root)

    def associations() -> list[str]:
        out = accounting.sacctmgr(lay, "-n", "-P", "show", "assoc", "format=cluster,account,user")
        return sorted(out.split())

    try:
        t0 = time.monotonic()
        first = ds.up(root)
        print(f"first up (new database): {time.monotonic() - t0:.1f} s")
        assert first.started
        assert first.env["SLURM_CONF"] == str(root / "etc" / "slurm.conf")
        assert (root / "etc" / "slurmdbd.conf").stat().st_mode & 0o777 == 0o600
        st = ds.status(root)
        assert st["running"] and st["nodes"] == {"n1": "idle", "n2": "idle"}
        assert list(st["daemons"]) == lay.daemons()
        pids = [p for p in st["daemons"].values() if p]
        assert len(pids) == 6 and all(procs.alive(p) for p in pids)
        assert all(port_open(p) for p in ports.values())
        assocs = associations()
        user = accounting.current_user()
        assert {f"batchscale-dev|{a}|{user}" for a in ("lab-a", "lab-b")} <= set(assocs)

        t0 = time.monotonic()
        again = ds.up(root)
        print(f"second up (running): {time.monotonic() - t0:.1f} s")
        assert not again.started
        assert ds.status(root)["daemons"] == st["daemons"]  # same processes

        t0 = time.monotonic()
        stopped = ds.down(root)
        print(f"down: {time.monotonic() - t0:.1f} s")
        assert set(pids) <= set(stopped)
        _assert_nothing_left(root, pids, ports)
        assert not ds.status(root)["running"]
        assert ds.down(root) == []  # down twice is fine too

        t0 = time.monotonic()
        assert ds.up(root).started
        print(f"up on the kept database: {time.monotonic() - t0:.1f} s")
        assert associations() == assocs  # nothing added twice
        pids = [p for p in ds.status(root)["daemons"].values() if p]
        ds.down(root)
        _assert_nothing_left(root, pids, ports)
    finally:
        ds.down(root)
        shutil.rmtree(root, ignore_errors=True)


def _assert_nothing_left(root: Path, pids: list[int], ports: dict[str, int]) -> None:
    """No pid of ours alive, no process naming the state dir (argv) or its slurm.conf
    (environment: slurmdbd, job steps), and every port of the cluster refuses."""
    assert not any(procs.alive(p) for p in pids)
    conf = str(root / "etc" / "slurm.conf")
    leftovers = [
        p
        for p in procs.all_pids()
        if procs.alive(p)
        and (any(str(root) in a for a in procs.cmdline(p)) or procs.environ(p).get("SLURM_CONF") == conf)
    ]
    assert leftovers == []
    assert [d for d, port in ports.items() if port_open(port)] == []
