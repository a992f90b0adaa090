"""Ray inside real jobs of the dev Slurm cluster: a two-node job whose srun tasks play
the head()/run_worker() roles of the submitit job, and the epilog that stops the Ray a
cancelled job leaves behind.

    .venv/bin/python -m pytest -m slurm tests/test_ray_slurm.py -v

These live apart from tests/test_ray_cluster.py because that module keeps a fake-id Ray
head up across its tests, whose ports a real job one in 53 would share.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ray_cluster import CHECKS

from cluster import devslurm, procs
from cluster.ray_spec import MARKER_ENV, NODE_LABEL, default_temp_dir
from cluster.slurm import job_state
from support import REPO

# One Slurm task of a job (srun, one per node): the roles cluster.job.SweepJob plays.
SLURM_TASK = (
    CHECKS
    + """
import sys
from cluster.ray_roles import head, run_worker
from cluster.ray_spec import RayClusterSpec, connect

spec = RayClusterSpec.from_slurm(token_file=sys.argv[1])
if spec.is_head:
    with head(spec, join_timeout=120):
        connect(spec, log_to_driver=False)
        try:
            report()
        finally:
            ray.shutdown()
else:
    run_worker(spec, join_timeout=120)
"""
)


@pytest.mark.slurm
def test_two_node_slurm_job_runs_a_secure_ray_head_and_worker(slurm_env: dict[str, str], tmp_path: Path) -> None:
    """sbatch on the dev cluster, one srun task per node playing its role: head() on n1
    (the driver connects in-process and sees both nodes), run_worker() on n2."""
    task = tmp_path / "task.py"
    task.write_text(SLURM_TASK)
    token = tmp_path / "ray.token"
    out = tmp_path / "job.out"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --nodes=2 --ntasks-per-node=1 --cpus-per-task=2 --gres=gpu:2\n"
        f"export PYTHONPATH={REPO}\n"
        f"srun {sys.executable} {task} {token}\n"
    )
    t0 = time.monotonic()
    job_id = int(subprocess.run(
        ["sbatch", "--parsable", f"--output={out}", f"--chdir={REPO}", str(script)],
        capture_output=True, text=True, check=True,
    ).stdout.strip())  # fmt: skip
    info = devslurm.wait_job(job_id, timeout=300)
    log = out.read_text() if out.exists() else ""
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log[-4000:]
    line = next(ln for ln in log.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    by_label = {n["labels"][NODE_LABEL]: n for n in result["nodes"]}
    assert sorted(by_label) == ["n1", "n2"]
    assert all(n["cpus"] == 2 and n["gpus"] == 2 for n in by_label.values())  # Slurm's grant
    # Each task ran on the Ray node of the Slurm node it asked for.
    for name in ("n1", "n2"):
        task = result["tasks"][f"slurm_node:{name}"]
        assert task["node_id"] == by_label[name]["id"]
        assert task["slurmd"] == name
    assert token.stat().st_mode & 0o777 == 0o600
    # Nothing of the job's Ray survives it, and both nodes cleaned their temp dirs.
    for index, name in enumerate(("n1", "n2")):
        temp_dir = default_temp_dir(job_id, name)
        assert not temp_dir.exists()
        marker = f"{job_id}/{index}/{name}"
        assert not [
            p for p in procs.all_pids()
            if procs.alive(p) and (procs.environ(p).get(MARKER_ENV) == marker
                                   or any(str(temp_dir) in a for a in procs.cmdline(p)))
        ]  # fmt: skip
    print(f"2-node Slurm Ray job took {time.monotonic() - t0:.1f}s")


@pytest.mark.slurm
def test_epilog_stops_ray_left_behind_by_a_cancelled_job(slurm_env: dict[str, str], tmp_path: Path) -> None:
    """proctrack/linuxproc can't see Ray's daemonized processes; the dev cluster's
    epilog (ray_node.cleanup) stops them when the job ends."""
    started = tmp_path / "started"
    script = tmp_path / "job.sh"
    start = (
        "import sys; from cluster.ray_node import start_head; "
        "from cluster.ray_spec import RayClusterSpec; "
        "start_head(RayClusterSpec.from_slurm(token_file=sys.argv[1]))"
    )
    script.write_text(
        "#!/bin/bash\n"
        f"export PYTHONPATH={REPO}\n"
        f"{sys.executable} -c '{start}' {tmp_path / 'token'} || exit 1\n"
        f"touch {started}\n"
        "sleep 600\n"
    )
    job_id = subprocess.run(
        ["sbatch", "--parsable", "-N1", f"--output={tmp_path / 'out'}", str(script)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert job_state(job_id) is not None and time.monotonic() < deadline, (tmp_path / "out").read_text()
            time.sleep(0.5)
        node = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True).stdout.strip()
        temp_dir = default_temp_dir(int(job_id), node)
        sessions = {int(x) for x in (temp_dir / "sessions").read_text().split()}
        ray_pids = {p for p in procs.all_pids() if procs.session_id(p) in sessions}
        assert ray_pids
    finally:
        subprocess.run(["scancel", job_id], check=False)
    deadline = time.monotonic() + 60
    while any(procs.alive(p) for p in ray_pids) or temp_dir.exists():
        assert time.monotonic() < deadline, f"Ray of cancelled job {job_id} survived"
        time.sleep(0.5)
