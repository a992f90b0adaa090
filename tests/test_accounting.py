"""The dev cluster enforces accounts, QOS and limits like a real site (slurmdbd on MariaDB):
Slurm itself refuses what a user may not ask for, runs what they may, and sacct records it.

    .venv/bin/python -m pytest -m slurm tests/test_accounting.py -v
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from cluster import devslurm as ds
from cluster.devslurm import accounting
from cluster.devslurm.layout import CLUSTER_NAME, Layout

pytestmark = pytest.mark.slurm
T = TypeVar("T")


def _slurm(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def _refused(env: dict[str, str], *args: str) -> str:
    """Submit `args` for real (`sbatch --wrap true`); assert Slurm refused it at
    submission (no job id) and return its message."""
    res = _slurm(env, "sbatch", "--parsable", "--output=/dev/null", *args, "--wrap=true")
    assert res.returncode == 1 and res.stdout == "", (res.stdout, res.stderr)
    return res.stderr


def _test_only(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _slurm(env, "sbatch", "--test-only", *args, "--wrap=true")


def _poll(check: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


def test_accounting_is_set_up_once(devslurm: ds.DevSlurm) -> None:
    """Accounts, QOS and the user's associations are in slurmdbd; setting up again
    (what every `up` does) finds nothing to change."""
    lay = Layout(devslurm.state_dir)
    user = accounting.current_user()
    rows = accounting.sacctmgr(
        lay, "-n", "-P", "show", "assoc", f"cluster={CLUSTER_NAME}", f"user={user}",
        "format=account,qos,defaultqos",
    ).split()  # fmt: skip
    mine = {r.split("|")[0]: r.split("|")[1:] for r in rows}
    for acct in ("lab-a", "lab-b"):
        qos, default_qos = mine[acct]
        assert sorted(qos.split(",")) == ["normal", "short"] and default_qos == "normal"
    out = accounting.sacctmgr(lay, "-n", "-P", "show", "qos", "format=name,maxwall,maxtrespu,flags")
    qos_table = {ln.split("|")[0]: ln.split("|")[1:] for ln in out.split()}
    assert qos_table["short"] == ["00:10:00", "gres/gpu=1", "DenyOnLimit"]
    assert "restricted" in qos_table  # exists, yet no association of the user allows it
    out = accounting.sacctmgr(lay, "-n", "-P", "show", "user", f"name={user}", "format=defaultaccount")
    assert out.split() == ["lab-a"]
    assert accounting.provision(lay) == ([], True)


def test_unknown_account_is_refused_up_front(slurm_env: dict[str, str]) -> None:
    res = _test_only(slurm_env, "--account=ghost")
    assert res.returncode == 1
    assert "Invalid account or account/partition combination specified" in res.stderr
    err = _refused(slurm_env, "--account=ghost")
    assert "Batch job submission failed: Invalid account or account/partition" in err


def test_qos_the_user_may_not_use_is_refused(slurm_env: dict[str, str]) -> None:
    res = _test_only(slurm_env, "--qos=restricted")
    assert res.returncode == 1 and "Invalid qos specification" in res.stderr
    assert "Batch job submission failed: Invalid qos specification" in _refused(slurm_env, "--qos=restricted")


def test_time_over_the_qos_limit_is_refused(slurm_env: dict[str, str]) -> None:
    res = _test_only(slurm_env, "--qos=short", "--time=01:00:00")
    assert res.returncode == 1 and "QOSMaxWallDurationPerJobLimit" in res.stderr
    assert "Job violates accounting/QOS policy" in _refused(slurm_env, "--qos=short", "--time=01:00:00")
    # The limit is short's (MaxWall 00:10:00, inclusive), not a general one.
    assert _test_only(slurm_env, "--qos=short", "--time=00:10:00").returncode == 0
    assert _test_only(slurm_env, "--qos=normal", "--time=01:00:00").returncode == 0


def test_gpus_over_the_qos_per_user_limit_are_refused(slurm_env: dict[str, str]) -> None:
    res = _test_only(slurm_env, "--qos=short", "--gres=gpu:2")
    assert res.returncode == 1 and "QOSMaxGRESPerUser" in res.stderr
    ok = _test_only(slurm_env, "--qos=short", "--gres=gpu:1")
    assert ok.returncode == 0 and "to start at" in ok.stderr


def test_job_within_limits_runs_and_sacct_lists_it(
    devslurm: ds.DevSlurm, slurm_env: dict[str, str], tmp_path: Path
) -> None:
    args = ("--account=lab-b", "--qos=short", "--time=00:01:00")
    res = _slurm(slurm_env, "sbatch", "--parsable", f"--output={tmp_path / 'o'}", *args,
                 "--wrap=true")  # fmt: skip
    assert res.returncode == 0, res.stderr
    jid = res.stdout.strip()
    info = ds.wait_job(jid, timeout=60, path=devslurm.state_dir)
    assert (info["JobState"], info["Account"], info["QOS"]) == ("COMPLETED", "lab-b", "short")

    def recorded() -> dict[str, str]:
        # slurmdbd lags the job by a few seconds; the job's line fills in as it ends.
        job = [r for r in ds.sacct(jid, devslurm.state_dir) if r["JobID"] == jid]
        return job[0] if job and job[0]["State"] == "COMPLETED" and job[0]["QOS"] == "short" else {}

    job = _poll(recorded, 30, f"sacct to list job {jid} as COMPLETED")
    assert (job["Account"], job["ExitCode"], job["NodeList"]) == ("lab-b", "0:0", info["NodeList"])
    steps = {r["JobID"] for r in ds.sacct(jid, devslurm.state_dir)}
    assert f"{jid}.batch" in steps


def test_requeue_shows_in_sacct(devslurm: ds.DevSlurm, slurm_env: dict[str, str], tmp_path: Path) -> None:
    """A running job that is requeued (what submitit does on preemption) leaves a
    REQUEUED record; it ran under the user's defaults (account lab-a, QOS normal)."""
    res = _slurm(slurm_env, "sbatch", "--parsable", "--requeue", f"--output={tmp_path / 'o'}",
                 "--time=00:05:00", "--wrap=sleep 60")  # fmt: skip
    assert res.returncode == 0, res.stderr
    jid = res.stdout.strip()
    try:
        _poll(lambda: ds.job_info(jid, devslurm.state_dir).get("JobState") == "RUNNING", 60, "run")
        assert _slurm(slurm_env, "scontrol", "requeue", jid).returncode == 0

        def requeued() -> list[dict[str, str]]:
            rows = [r for r in ds.sacct(jid, devslurm.state_dir, duplicates=True) if r["JobID"] == jid]
            return rows if any(r["State"] == "REQUEUED" for r in rows) else []

        rows = _poll(requeued, 30, f"sacct -D to show job {jid} REQUEUED")
        first = next(r for r in rows if r["State"] == "REQUEUED")
        # (sacct's QOS of a run requeued within a second of its start may read Unknown.)
        assert (first["User"], first["Account"]) == (accounting.current_user(), "lab-a")
        assert "Unknown" not in (first["Start"], first["End"]) and first["Start"] <= first["End"]
        info = ds.job_info(jid, devslurm.state_dir)
        assert (info["Restarts"], info["Account"], info["QOS"]) == ("1", "lab-a", "normal")
    finally:
        _slurm(slurm_env, "scancel", jid)
