"""One smoke study through the real launcher, shared by the tests of the trackers, of the
report in a browser and of the dataframe readers (test_tracking, test_report_browser,
test_readers): the noisy quadratic model's smoke budget (3 batch sizes x 3 LRs, 150 steps)
with a target it reaches (so every figure is drawn) and every tracker on, run once per
pytest session into its temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import launch

SMOKE = (
    "--cluster",
    "local",
    "--study",
    "nqm",
    "--budget",
    "smoke",
    "--set",
    "target.value=2.6",
    "--set",
    "tracking.mlflow=true",
    "--set",
    "tracking.tensorboard=true",
    "--set",
    'tracking.wandb="offline"',
)

_runs: dict[str, Path | str] = {}


def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN_DIR of the shared smoke run (launched on the first call; a failure fails every caller)."""
    if "run" not in _runs:
        run_dir = tmp_path_factory.mktemp("shared-smoke") / "run"
        r = launch(*SMOKE, "--out", str(run_dir), timeout=300)
        _runs["run"] = (
            run_dir if r.returncode == 0 else f"the shared smoke run failed ({r.returncode}): {r.stderr[-3000:]}"
        )
        _runs["stdout"], _runs["stderr"] = r.stdout, r.stderr
    got = _runs["run"]
    if isinstance(got, str):
        pytest.fail(got)
    return got
