"""Shared fixtures.

`devslurm` (session): the real two-node dev Slurm cluster of ``cluster.devslurm``, brought
up idempotently and stopped at the end only if this session started it.
`slurm_env` (function): os.environ pointed at that cluster (SLURM_CONF), for code that
shells out to sbatch/srun or uses submitit.

    .venv/bin/python -m pytest -m slurm tests/test_devslurm.py

`make test` runs the suite on two pytest-xdist workers (``-n 2 --dist loadgroup``): one takes
every test of the dev Slurm cluster in order (one cluster, `test_devslurm` stops and starts
it, and the bad-input tests assert that squeue shows no new job), the other the local tests,
module by module (a module's fixtures, and the shared smoke run of ``shared_smoke``, run
once). Most of a Slurm test's time is spent waiting on the
scheduler and Ray's start, so the two halves overlap well on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster import devslurm as _devslurm

# the modules that read the one smoke run of tests/shared_smoke.py
SHARED_SMOKE = {"test_tracking", "test_report_browser", "test_readers"}
# modules whose Ray nodes take the port blocks of (fake) Slurm job ids: beside a real job
# of the dev cluster, one in 53 would share its ports (cluster.ports)
ON_JOB_PORTS = {"test_ray_cluster"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        if (
            item.get_closest_marker("slurm")
            or "devslurm" in getattr(item, "fixturenames", ())
            or module in ON_JOB_PORTS
        ):
            group = "slurm"
        elif module in SHARED_SMOKE:
            group = "shared-smoke"
        else:
            group = module
        item.add_marker(pytest.mark.xdist_group(group))


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
