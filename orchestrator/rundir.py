"""Creating and reading a run directory (contract: "Run directory (RUN_DIR)")."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from orchestrator import manifest, toml_out
from orchestrator.study import Study, validate
from trainables.contract import UsageError, read_toml, write_atomic

STUDY_FILE = "study.toml"


def tune_dir(run_dir: Path) -> Path:
    """RUN_DIR/tune: Ray Tune's storage (experiment state, checkpoints) and the sweep's records."""
    return Path(run_dir).resolve() / "tune"


def default_run_dir(study: Study, root: Path = Path("runs")) -> Path:
    return root / f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_new(run_dir: Path) -> None:
    """A new run must not write into an existing, non-empty directory."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(f"--out: {run_dir} exists and is not empty (use --resume {run_dir} to continue it)")


def create(run_dir: Path, study: Study) -> Path:
    """Make RUN_DIR, freeze the resolved study in it and record what made it (manifest)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = "# Resolved study, frozen at launch.\n" + toml_out.dumps(manifest.resolved(study))
    write_atomic(run_dir / STUDY_FILE, text)
    manifest.write(run_dir, study)
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
