"""What a run was made with: the code, the key package versions and the resolved study.

``RUN_DIR/manifest.json`` is written at launch. ``--resume`` compares it with the code and
the study it would continue with, and refuses (unless ``--force``) when they differ, so
that curves from two versions of a trainable or two configs never mix in one dataset.

    from orchestrator import manifest
    manifest.differences(run_dir, study)   # ['code: 3f2a1c… -> 9b0e77…', 'torch: 2.13.0 -> 2.14.1']
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from analysis.environment import git_commit
from orchestrator.study import Study
from trainables.contract import write_atomic

MANIFEST_FILE = "manifest.json"
PACKAGES = ("torch", "ray", "pyarrow", "numpy", "pydantic", "submitit")
_SOURCE = Path(__file__).resolve().parents[1]


def code_hash() -> str:
    """SHA-256 over the Python sources that produce the curves (trainables/ and the sweep's
    orchestrator/): any edit there, committed or not, changes it; analysis/ and cluster/
    change how curves are read or where they are made, not what they hold."""
    h = hashlib.sha256()
    for pkg in ("orchestrator", "trainables"):
        for path in sorted((_SOURCE / pkg).rglob("*.py")):
            h.update(str(path.relative_to(_SOURCE)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def resolved(study: Study) -> dict[str, Any]:
    """The study as the sweep uses it, the trainable's defaults filled in."""
    data = study.model_dump(mode="json", exclude_none=True)
    data["trainable_config"] = study.trainable_settings().model_dump(mode="json", exclude_none=True)
    return data


def current(study: Study) -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "code_sha256": code_hash(),
        "git_commit": git_commit(_SOURCE)["commit"],
        "python": platform.python_version(),
        "packages": {name: version(name) for name in PACKAGES},
        "study": resolved(study),
    }


def write(run_dir: Path, study: Study) -> None:
    write_atomic(Path(run_dir) / MANIFEST_FILE, json.dumps(current(study), indent=1, sort_keys=True))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def differences(run_dir: Path, study: Study) -> list[str]:
    """What differs between the run's manifest and a resume with ``study`` now (a run
    without a manifest, made before there were manifests, differs in nothing known)."""
    try:
        then = json.loads((Path(run_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return []
    now = current(study)
    out = []
    if then.get("code_sha256") != now["code_sha256"]:
        out.append(
            f"code: commit {str(then.get('git_commit'))[:10]} (sha256 {str(then.get('code_sha256'))[:8]}) "
            f"-> commit {str(now['git_commit'])[:10]} (sha256 {now['code_sha256'][:8]})"
        )
    before, after = _flat(then), _flat(now)
    studies = sorted(k for k in set(before) | set(after) if k.startswith("study."))
    for key in ("python", *(f"packages.{p}" for p in PACKAGES), *studies):
        a, b = before.get(key), after.get(key)
        if a != b:
            out.append(f"{key.removeprefix('packages.')}: {a} -> {b}")
    return out
