"""Faults of a Slurm sweep on the real two-node dev cluster, injected as they happen for
real (SIGKILL of a node's processes, scancel): no trial lost or run twice, no row
duplicated or missing, and one command to recover where one is needed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_slurm_launch import SMOKE, assert_complete_run, assert_nothing_left, job_id_of, squeue_ids, wait_gone

from cluster import procs
from cluster.ray_node import own_pids
from cluster.ray_spec import RayClusterSpec
from support import REPO, launch
from trainables.contract import read_curves, step_cap
from trainables.schedule import eval_steps

pytestmark = pytest.mark.slurm


def _follow(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.follow", str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )


def _no_step_missing(run_dir: Path) -> None:
    curves = read_curves(run_dir / "curves").to_pandas()
    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert not curves.duplicated(["trial_id", "step"]).any()
    for t in trials.itertuples():
        steps = sorted(curves.loc[curves.trial_id == t.trial_id, "step"])
        schedule = eval_steps(step_cap(t.batch_size, 150, 20_000))
        expect = [s for s in schedule if s <= steps[-1]]
        if t.status == "diverged":
            expect = [s for s in schedule if s < steps[-1]] + [steps[-1]]
        assert steps == expect, (t.trial_id, t.status)


def _step_tasks(job: str, node: str) -> list[int]:
    """The job's processes that a slurmstepd on ``node`` launched: its tasks of the Slurm step."""
    return [
        p
        for p in procs.all_pids()
        if procs.environ(p).get("SLURM_JOB_ID") == job
        and procs.environ(p).get("SLURMD_NODENAME") == node
        and (procs.cmdline(procs.ppid(p) or 0) or [""])[0].startswith("slurmstepd")
    ]


def test_a_worker_node_dies_and_its_trials_finish_on_the_other(slurm_env, tmp_path: Path) -> None:
    """While a trial runs on n2, SIGKILL first the Slurm step's task on n2 alone (the job
    goes on), then every Ray process of the job there (raylet, agents, the trial's worker):
    with nobody left on n2 to rejoin, Tune retries that trial (a lost node is not the
    trial's fault) on n1, from its last checkpoint."""
    run_dir = tmp_path / "run"
    r = launch(*SMOKE, "--out", str(run_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    job = job_id_of(r.stdout)
    n2 = RayClusterSpec(
        job_id=int(job),
        node_index=1,
        node_name="n2",
        head_host="",
        node_ip="",
        num_nodes=2,
        token_file=Path("/dev/null"),
        num_cpus=0,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # a trial is running on n2: a Ray worker there runs it
        if any((procs.cmdline(p) or [""])[0].startswith("ray::ImplicitFunc") for p in own_pids(n2)):
            break
        time.sleep(0.3)
    else:
        pytest.fail("no trial ever ran on n2")
    tasks = _step_tasks(job, "n2")
    assert len(tasks) == 1, tasks
    os.kill(tasks[0], signal.SIGKILL)
    time.sleep(5)
    assert job in squeue_ids(), "the job ended when one worker task died"
    # every process of the job's Ray node on n2: raylet, agents, the trial's worker
    for p in own_pids(n2):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    f = _follow(run_dir)
    assert f.returncode == 0, f.stderr[-3000:]
    assert_complete_run(run_dir)
    _no_step_missing(run_dir)
    assert_nothing_left(job)


def test_scancel_then_resume_and_no_resume_while_the_job_lives(slurm_env, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    r = launch(*SMOKE, "--out", str(run_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    job = job_id_of(r.stdout)
    # queued or running: --resume is refused, and submits nothing
    refused = launch("--cluster", "slurm", "--resume", str(run_dir))
    assert refused.returncode == 2 and f"still running: Slurm job {job} (scancel it first)" in refused.stderr
    deadline = time.monotonic() + 240
    while len(list((run_dir / "curves").rglob("*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    subprocess.run(["scancel", job], check=True)
    wait_gone(job, 120)
    assert not (run_dir / "trials.parquet").exists()
    before = read_curves(run_dir / "curves").to_pandas()

    again = launch(
        "--cluster",
        "slurm",
        "--resume",
        str(run_dir),
        "--nodes",
        "2",
        "--cpus-per-node",
        "1",
        "--time",
        "00:15:00",
        "--follow",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    second = job_id_of(again.stdout)
    assert second != job
    assert_complete_run(run_dir)
    _no_step_missing(run_dir)
    after = read_curves(run_dir / "curves").to_pandas()
    kept = before.merge(after, on=["trial_id", "step"], suffixes=("_b", "_a"))
    assert len(kept) == len(before)  # nothing written before the cancel was lost or changed
    assert_nothing_left(job)
    assert_nothing_left(second)


SLURM_BAD_INPUT = [
    (["--set", "search.lr.min=-1"], "search.lr.min"),
    (["--set", "target.metrik=val_loss"], "target.metrik"),
    (["--study", "no-such-study"], "--study"),
    (["--time", "8h"], "--time"),
    (["--nodes", "0"], "--nodes"),
    (["--nodes", "3"], "sbatch refused the job"),  # the partition has 2 nodes
    (["--partition", "nosuchpartition"], "sbatch refused the job"),
    (["--gpus-per-node", "5"], "sbatch refused the job"),  # the nodes have 2 GPUs each
    (["--account", "ghost"], "Invalid account"),  # the dev cluster enforces accounting
    (["--cpus-per-node", "1", "--set", "resources.cpus_per_trial=2"], "--cpus-per-node"),
]


@pytest.mark.parametrize("flags,key", SLURM_BAD_INPUT)
def test_bad_input_on_the_slurm_path_submits_nothing(
    slurm_env, tmp_path: Path, capsys, flags: list[str], key: str
) -> None:
    from test_slurm_launch import squeue_ids

    from orchestrator.launch import main

    before = squeue_ids()
    out = tmp_path / "run"
    assert main(["--cluster", "slurm", "--budget", "smoke", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and key in err, err
    assert squeue_ids() == before
    assert not out.exists()
