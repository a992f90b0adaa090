"""Smoke test of bench/: each benchmark runs in its quick mode, with tiny sizes, and writes a
results file in the common format (bench/common.py). The figures are never checked: on a
shared 2-core machine they measure the machine as much as the code.

The demo's tiny sweep is kept and reused by the orchestration and sink benchmarks (their
--fashion-run / --sweep-run), as ``make bench`` does with the full study.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support import REPO

# one batch size, two learning rates, 30 steps: two trials of a second or two
TINY_STUDY = [
    "--set",
    "search.batch_sizes=[256]",
    "--set",
    "search.lr={min=0.02, max=0.04, points=2}",
    "--set",
    "budget.max_steps=30",
]


def run_bench(script: str, out: Path, *args: str, timeout: float = 180) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", "--out", str(out), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    check_format(result)
    return result


def check_format(r: dict[str, Any]) -> None:
    sys.path.insert(0, str(REPO))
    from bench.common import REQUIRED_KEYS

    assert set(REQUIRED_KEYS) <= set(r), set(REQUIRED_KEYS) - set(r)
    assert isinstance(r["name"], str) and isinstance(r["benchmark"], str) and isinstance(r["command"], str)
    assert r["mode"] == "quick" and isinstance(r["date_utc"], str) and isinstance(r["bench_wall_s"], float)
    m = r["machine"]
    assert isinstance(m["cpu"], str) and isinstance(m["cores"], int) and isinstance(m["memory_gib"], float)
    assert all(isinstance(r["versions"][k], str) for k in ("python", "ray", "torch", "pyarrow"))
    assert isinstance(r["goal"]["text"], str) and r["goal"]["checks"]
    for c in r["goal"]["checks"]:
        assert set(c) == {"figure", "op", "target", "measured", "met"} and c["op"] in (">=", "<=", "<", ">")
        assert isinstance(c["target"], int | float) and isinstance(c["met"], bool)
        assert c["measured"] is None or isinstance(c["measured"], int | float)
    assert isinstance(r["goal_met"], bool) and r["goal_met"] == all(c["met"] for c in r["goal"]["checks"])
    assert isinstance(r["figures"], dict) and isinstance(r["evidence"], dict)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("bench")
    run = tmp / "run"
    result = run_bench("bench_demo.py", tmp / "demo.json", "--keep", str(run), *TINY_STUDY)
    return result, run


def test_demo(demo: tuple[dict[str, Any], Path]) -> None:
    result, run = demo
    assert result["name"] == "demo" and result["figures"]["trials"] == 2
    assert isinstance(result["figures"]["busy_fraction"], float)
    assert (run / "bench_probe.json").is_file() and (run / "bench_sweep.json").is_file()


def test_orchestration(demo: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    _, run = demo
    r = run_bench(
        "bench_orchestration.py",
        tmp_path / "o.json",
        "--trials",
        "4",
        "--work-s",
        "0.1",
        "--reports",
        "2",
        "--fashion-run",
        str(run),
    )
    assert r["name"] == "orchestration" and len(r["goal"]["checks"]) == 2
    one = r["figures"]["one_second_trials"]
    for arm in ("batchscale", "stock_tune"):
        assert one[arm]["runs"][0]["trials"] == 4
        assert isinstance(one[arm]["busy_fraction"], float) and isinstance(one[arm]["cpu_per_trial_s"], float)
    assert r["figures"]["fashion_mnist"]["trials"] == 2


def test_sink(demo: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    _, run = demo
    r = run_bench("bench_sink.py", tmp_path / "s.json", "--no-sweep", "--sweep-run", str(run))
    assert r["name"] == "sink" and isinstance(r["figures"]["rows_per_cpu_s"], int)
    assert len(r["goal"]["checks"]) == 2


def test_report(tmp_path: Path) -> None:
    r = run_bench("bench_report.py", tmp_path / "r.json", "--trials", "40", "--rows", "20", "--n-boot", "20")
    assert r["name"] == "report" and isinstance(r["figures"]["seconds"], float)


def test_noise_scale(tmp_path: Path) -> None:
    r = run_bench("bench_noise_scale.py", tmp_path / "n.json")
    assert r["name"] == "noise_scale" and isinstance(r["figures"]["worst_overhead"], float)
