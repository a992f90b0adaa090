"""Shared fixtures.

`devslurm` (session): the real two-node dev Slurm cluster of ``cluster.devslurm``, brought
up idempotently and stopped at the end only if this session started it.
`slurm_env` (function): os.environ pointed at that cluster (SLURM_CONF), for code that
shells out to sbatch/srun or uses submitit.

    .venv/bin/python -m pytest -m slurm tests/test_devslurm.py
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster import devslurm as _devslurm


@pytest.fixture(scope="session")
def devslurm() -> Iterator[_devslurm.DevSlurm]:
    """The dev Slurm cluster (n1, n2, partition `debug`); `.env` holds SLURM_CONF."""
    try:
        cluster = _devslurm.up()
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"cannot bring up the dev Slurm cluster: {exc}")
    yield cluster
    if cluster.started:
        _devslurm.down(cluster.state_dir)


@pytest.fixture
def slurm_env(devslurm: _devslurm.DevSlurm, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Set the dev cluster's client environment in os.environ for one test."""
    for key, value in devslurm.env.items():
        monkeypatch.setenv(key, value)
    # A test run from inside a Slurm job must not inherit that job's identity.
    for key in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_NODELIST", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(key, raising=False)
    return devslurm.env
