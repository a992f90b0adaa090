"""Creating and reading a run directory (contract: "Run directory (RUN_DIR)")."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from orchestrator import toml_out
from orchestrator.errors import UsageError
from orchestrator.study import Study, read_toml, validate

STUDY_FILE = "study.toml"


def default_run_dir(study: Study, root: Path = Path("runs")) -> Path:
    return root / f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_new(run_dir: Path) -> None:
    """A new run must not write into an existing, non-empty directory."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(f"--out: {run_dir} exists and is not empty (use --resume {run_dir} to continue it)")


def create(run_dir: Path, study: Study) -> Path:
    """Make RUN_DIR and freeze the resolved study in it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = study.model_dump(mode="json", exclude_none=True)
    data["trainable_config"] = study.trainable_settings().model_dump(mode="json", exclude_none=True)
    text = "# Resolved study, frozen at launch.\n" + toml_out.dumps(data)
    (run_dir / STUDY_FILE).write_text(text)
    return run_dir


def remove_written(run_dir: Path, keep_dir: bool) -> None:
    """Undo ``create`` after a failed launch; a directory the user made (empty, as
    ``check_new`` demands) is kept, emptied of what the launch wrote."""
    if keep_dir:
        for p in run_dir.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    else:
        shutil.rmtree(run_dir, ignore_errors=True)


def load_frozen(run_dir: Path) -> Study:
    """The study a run was launched with (for ``--resume``)."""
    path = Path(run_dir) / STUDY_FILE
    if not path.is_file():
        raise UsageError(f"--resume: {run_dir} has no {STUDY_FILE}; not a run directory")
    return validate(read_toml(path))


def check_not_running(run_dir: Path, stale_after_s: float = 120.0) -> None:
    """Refuse to resume a run whose sweep is still alive: two drivers would write into the
    same curves/ and tune/. Alive means a Slurm job of the run still queued or running, or
    a progress snapshot refreshed in the last ``stale_after_s`` by a live local process."""
    from cluster import procs
    from orchestrator.progress import read_snapshot

    jobs = sorted({p.name.split("_")[0] for p in (Path(run_dir) / "slurm").glob("*_submitted.pkl")})
    if jobs and shutil.which("squeue"):
        from cluster.slurm import job_state

        alive = [j for j in jobs if job_state(j) is not None]
        if alive:
            raise UsageError(f"--resume: Slurm job {alive[0]} of {run_dir} is still queued or running "
                             f"(scancel it first)")
    snap = read_snapshot(Path(run_dir))
    if snap and not snap.get("done") and time.time() - snap.get("updated", 0) < stale_after_s:
        pid = int(snap.get("pid", 0))
        if snap.get("host") == socket.gethostname() and procs.alive(pid):
            raise UsageError(f"--resume: the sweep of {run_dir} is still running (pid {pid})")
