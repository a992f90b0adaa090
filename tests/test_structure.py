"""Facts of the house that anyone can check: no import circle among the packages,
trainables import neither Ray nor the other packages, analysis no cluster or orchestrator,
cluster no orchestrator, and no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support import REPO

PACKAGES = ("orchestrator", "trainables", "cluster", "analysis")


def _modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for pkg in PACKAGES
        for p in (REPO / pkg).rglob("*.py")
    }


def _imports(name: str, path: Path, type_checking: bool = True) -> set[str]:
    """Every module ``path`` imports (top level or inside functions), absolute names;
    without ``type_checking``, not those under a top-level ``if TYPE_CHECKING:``."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    if not type_checking:
        tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return out


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for name, path in _modules().items():
        top = name.split(".")[0]
        graph[top] |= {m.split(".")[0] for m in _imports(name, path)} & set(PACKAGES) - {top}
    return graph


def test_packages_form_no_import_circle() -> None:
    graph = _package_graph()
    # the layers, bottom up: trainables (its contract module is the shared leaf), analysis
    # and cluster on it, orchestrator on all three
    assert graph == {
        "trainables": set(),
        "analysis": {"trainables"},
        "cluster": {"trainables"},
        "orchestrator": {"trainables", "analysis", "cluster"},
    }


def test_contract_is_a_leaf_and_trainables_import_no_ray() -> None:
    mods = _modules()
    # the contract's one import of the project is the schedule a trial carries, itself a leaf
    # but for the type it names only while type checking
    contract = _imports("trainables.contract", mods["trainables.contract"])
    assert {m for m in contract if m.split(".")[0] in PACKAGES} <= {
        "trainables.schedule",
        "trainables.schedule.Plan",
        "trainables.schedule.Ramp",
    }
    schedule = _imports("trainables.schedule", mods["trainables.schedule"], type_checking=False)
    assert not {m for m in schedule if m.split(".")[0] in PACKAGES}
    for name, path in mods.items():
        if name.startswith("trainables"):
            assert not {m for m in _imports(name, path) if m.split(".")[0] == "ray"}, name


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_over_400_lines(name: str) -> None:
    lines = _modules()[name].read_text().count("\n")
    assert lines <= 400, f"{name}: {lines} lines"
