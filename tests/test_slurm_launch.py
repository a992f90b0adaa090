"""`--cluster slurm` against the real two-node dev Slurm cluster (cluster.devslurm)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster import auth, lease, procs
from cluster.ports import RayPorts
from cluster.ray_spec import MARKER_ENV
from cluster.slurm import SlurmBackend
from cluster.slurm_flags import SlurmFlags
from support import REPO, launch
from trainables.contract import read_curves

pytestmark = pytest.mark.slurm

SMOKE = ["--cluster", "slurm", "--budget", "smoke", "--nodes", "2", "--cpus-per-node", "1", "--time", "00:15:00"]


def job_id_of(stdout: str) -> str:
    return next(line.split()[-1] for line in stdout.splitlines() if line.startswith("submitted Slurm job"))


def squeue_ids() -> set[str]:
    r = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return set(r.stdout.split())


def ray_pids_of(job_id: str) -> list[int]:
    return [p for p in procs.all_pids() if procs.environ(p).get(MARKER_ENV, "").startswith(f"{job_id}/")]


def wait_gone(job_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while job_id in squeue_ids() and time.monotonic() < deadline:
        time.sleep(1)


def assert_nothing_left(job_id: str) -> None:
    wait_gone(job_id, 60)
    assert job_id not in squeue_ids()
    deadline = time.monotonic() + 30  # Ray's last processes exit after the job's tasks
    while ray_pids_of(job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_pids_of(job_id) == []


def assert_complete_run(run_dir: Path, expect_nodes: set[str] | None = None) -> None:
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert len(trials) == 9
    assert "failed" not in set(trials.status)
    curves = read_curves(str(run_dir / "curves")).to_pandas()
    assert set(curves.trial_id) == set(trials.trial_id)
    assert not curves.duplicated(["trial_id", "step"]).any()
    last = curves.groupby("trial_id").step.max()
    assert all(last[t.trial_id] == t.steps for t in trials.itertuples())
    assert (run_dir / "report" / "report.md").is_file()
    assert stat.S_IMODE((run_dir / "slurm" / "ray.token").stat().st_mode) == 0o600
    if expect_nodes is not None:
        assert set(trials.node) == expect_nodes


def test_two_sweeps_at_once_follow_and_token(slurm_env, tmp_path: Path) -> None:
    """Sweep A with --follow and sweep B submitted beside it on the same two nodes: both
    complete, trials ran on n1 and n2, and a client without the token is refused. B gets
    USR2 mid-sweep, what Slurm sends before the time limit (--signal=USR2@120): submitit
    checkpoints the job and requeues it; it starts again, resumes from RUN_DIR/tune, and
    ends with every trial once and no duplicated row."""
    a, b = tmp_path / "a", tmp_path / "b"
    follow = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.launch", *SMOKE, "--out", str(a), "--follow"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    rb = launch(*SMOKE, "--out", str(b))
    assert rb.returncode == 0, rb.stderr[-2000:]
    job_b = job_id_of(rb.stdout)
    assert f"scancel {job_b}" in rb.stdout and str(b.resolve()) in rb.stdout

    # while B runs: its GCS answers, but not to a client without the token
    deadline = time.monotonic() + 180
    while not (b / "tune" / "progress.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (b / "tune" / "progress.json").is_file(), "sweep B never started"
    gcs = f"127.0.0.1:{RayPorts.for_node(int(job_b), 0).gcs}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    code = f"import ray; ray.init(address='{gcs}'); print('CONNECTED', len(ray.nodes())); ray.shutdown()"

    def probe(extra: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True, timeout=120
        )

    # a client with some other token (a fresh one of its own) is refused by the job's GCS
    without = probe(
        {
            **auth.client_env(auth.write_token(tmp_path / "other.token")),
            "HOME": str(tmp_path),
            "RAY_gcs_server_port_wait_time_s": "2",  # 2 refused retries, not Ray's 20
        }
    )
    assert "CONNECTED" not in without.stdout and without.returncode != 0
    assert "InvalidAuthToken" in without.stderr or "Authentication token" in without.stderr, without.stderr[-2000:]
    # the same client with the run's token file connects: the refusal was the token's
    with_token = probe(auth.client_env(b / "slurm" / "ray.token"))
    assert "CONNECTED 2" in with_token.stdout, with_token.stderr[-2000:]
    # the dashboard's servers listen on loopback only (0.0.0.0 would fail this)
    listeners = procs.listening(ray_pids_of(job_b))
    assert listeners, "found no listening socket of the job's Ray processes"
    for pid, host, port in listeners:
        if port in _dashboard_ports(int(job_b)):
            assert host in ("127.0.0.1", "::1"), (pid, host, port)

    deadline = time.monotonic() + 180
    while len(list((b / "curves").rglob("*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(list((b / "curves").rglob("*.parquet"))) >= 3, "sweep B never got going"
    subprocess.run(["scancel", "--signal=USR2", job_b], check=True, capture_output=True)
    follow_b = subprocess.run(
        [sys.executable, "-m", "orchestrator.follow", str(b)], cwd=REPO, capture_output=True, text=True, timeout=400
    )
    assert follow_b.returncode == 0, follow_b.stderr[-3000:]
    log = (b / "slurm" / f"{job_b}_0_log.err").read_text() + (b / "slurm" / f"{job_b}_0_log.out").read_text()
    # ("Requeued job" is logged after `scontrol requeue` returns, racing with its kill)
    assert "Calling checkpoint method" in log and "Caught signal SIGUSR2" in log
    assert log.count("Starting with JobEnvironment") == 2

    out, err = follow.communicate(timeout=400)
    assert follow.returncode == 0, err[-3000:]
    job_a = job_id_of(out)
    assert "trials done" in err and f"report: {a}/report/report.md" in out
    assert_complete_run(a, expect_nodes={"n1", "n2"})
    assert_complete_run(b)
    assert_nothing_left(job_a)
    assert_nothing_left(job_b)
    held = lease.read(b)  # the job's lease names it; a finished job does not block --resume
    assert held is not None and held.job_id == job_b and held.released
    assert not SlurmBackend(SlurmFlags()).is_alive(held)


def _dashboard_ports(job_id: int) -> set[int]:
    ports = RayPorts.for_node(job_id, 0)
    return {ports.dashboard, ports.dashboard_agent_listen}


def test_dry_run_shows_sbatch_and_submits_nothing(slurm_env, tmp_path: Path) -> None:
    before = squeue_ids()
    r = launch(
        "--cluster",
        "slurm",
        "--nodes",
        "2",
        "--time",
        "01:30:00",
        "--partition",
        "debug",
        "--dry-run",
        "--out",
        str(tmp_path / "run"),
    )
    assert r.returncode == 0, r.stderr
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --time=90",
        "#SBATCH --partition=debug",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in r.stdout
    assert "81 trials" in r.stdout
    assert squeue_ids() == before
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags,says",
    [
        (["--partition", "nosuchpartition"], "partition"),
        (["--nodes", "3"], "node"),
        (["--account", "ghost"], "invalid account"),  # the dev cluster enforces accounting (slurmdbd)
    ],
)
def test_sbatch_refusal_is_one_line_exit_2(slurm_env, tmp_path: Path, flags: list[str], says: str) -> None:
    before = squeue_ids()
    out = tmp_path / "run"
    users_own = says == "node"
    if users_own:  # an empty directory the user made: emptied of what launch wrote, kept
        out.mkdir()
    r = launch("--cluster", "slurm", "--budget", "smoke", *flags, "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: sbatch refused the job:"), r.stderr
    assert says in r.stderr.lower()
    assert squeue_ids() == before
    if users_own:
        assert out.is_dir() and list(out.iterdir()) == []
    else:
        assert not out.exists()
