"""The dev Slurm cluster really schedules: 2-node jobs, submitit, requeue, clean down.

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

pytestmark = pytest.mark.slurm


def _run(env: dict[str, str], *argv: str, timeout: float = 60) -> str:
    res = subprocess.run(
        list(argv), env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"{argv} failed: {res.stderr}"
    return res.stdout


def test_two_node_sbatch_runs_one_task_per_node(devslurm: ds.DevSlurm, tmp_path: Path) -> None:
    out = tmp_path / "tasks.out"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --nodes=2 --ntasks-per-node=1 --gres=gpu:2\n"
        'srun bash -c \'echo "$SLURMD_NODENAME $SLURM_NODEID gpus=$CUDA_VISIBLE_DEVICES"\'\n'
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


def _free_port_triple() -> int:
    """A base port p with p, p+1, p+2 free (so a second cluster can't collide)."""
    for base in range(7900, 8000, 3):
        if all(_free(base + i) for i in range(3)):
            return base
    raise RuntimeError("no free ports in 7900..7999")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_up_is_idempotent_and_down_stops_every_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private cluster in its own dir: up, up again, status, down; nothing survives."""
    # Not under pytest's 0700 tmp dirs: munged wants its socket's parents world-executable.
    root = Path(tempfile.mkdtemp(prefix="bs-devslurm-"))
    root.chmod(0o755)
    monkeypatch.setenv(ds.ENV_PORT, str(_free_port_triple()))
    try:
        first = ds.up(root)
        assert first.started
        assert first.env["SLURM_CONF"] == str(root / "etc" / "slurm.conf")
        st = ds.status(root)
        assert st["running"] and st["nodes"] == {"n1": "idle", "n2": "idle"}
        pids = [p for p in st["daemons"].values() if p]
        assert len(pids) == 4 and all(procs.alive(p) for p in pids)

        again = ds.up(root)
        assert not again.started
        assert ds.status(root)["daemons"] == st["daemons"]  # same processes

        stopped = ds.down(root)
        assert set(pids) <= set(stopped)
        assert not any(procs.alive(p) for p in pids)
        # No process of ours at all: nothing mentions this state dir any more.
        leftovers = [
            p
            for p in procs.all_pids()
            if procs.alive(p) and any(str(root) in a for a in procs.cmdline(p))
        ]
        assert leftovers == []
        assert not ds.status(root)["running"]
        assert ds.down(root) == []  # down twice is fine too
    finally:
        ds.down(root)
        shutil.rmtree(root, ignore_errors=True)
