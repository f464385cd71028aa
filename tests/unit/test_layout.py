"""The layout the architecture promises: the processes stand on the core, the development
tools beside it, and no two modules share a name unless they play one role per package."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("api", "cdc_listener", "writer")
# One per process package, each the same role there: its command line, its errors (under
# mescache.errors), its Prometheus series, its settings (under mescache.settings), and the
# step that applies a change (to Redis in the listener, to PostgreSQL in the writer).
ROLES = {"__init__", "cli", "errors", "metrics", "settings", "apply"}


def _imported(package: str) -> dict[str, set[str]]:
    """{module path: top-level packages it imports} over one package's modules."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_core_imports_no_process_and_no_development_tool() -> None:
    wrong = {
        module: sorted(names & {*PROCESSES, "devtools"})
        for module, names in _imported("mescache").items()
        if names & {*PROCESSES, "devtools"}
    }
    assert wrong == {}


def test_no_process_imports_another_or_the_development_tools() -> None:
    wrong = {
        module: sorted(names & ({*PROCESSES, "devtools"} - {process}))
        for process in PROCESSES
        for module, names in _imported(process).items()
        if names & ({*PROCESSES, "devtools"} - {process})
    }
    assert wrong == {}


def test_module_names_say_what_they_hold() -> None:
    by_name: defaultdict[str, list[str]] = defaultdict(list)
    for package in (*PROCESSES, "mescache", "devtools"):
        for path in sorted((ROOT / package).glob("*.py")):
            by_name[path.stem].append(package)
    shared = {name: where for name, where in by_name.items() if len(where) > 1}
    assert set(shared) <= ROLES, shared
