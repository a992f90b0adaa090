"""Environment stamp for a report: versions, hardware, git commit, date, run size.

from analysis.environment import environment_stamp
environment_stamp()["packages"]["numpy"]
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES: tuple[str, ...] = ("batchscale", "numpy", "pandas", "pyarrow", "scipy", "matplotlib", "seaborn")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    # GIT_OPTIONAL_LOCKS=0: reading the commit must never touch the repository's index.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def git_commit(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the repository holding the analysis code (None outside git)."""
    where = path or Path(__file__).resolve().parent
    if shutil.which("git") is None:
        return {"commit": None, "dirty": None}
    commit = _run(["git", "rev-parse", "HEAD"], cwd=where)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where) if commit else None
    return {"commit": commit, "dirty": (status is not None) if commit else None}


def environment_stamp() -> dict[str, Any]:
    gpus = _run(["nvidia-smi", "-L"]) if shutil.which("nvidia-smi") else None
    return {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": gpus.splitlines() if gpus else [],
        "packages": {name: _version(name) for name in PACKAGES},
        "git": git_commit(),
    }
