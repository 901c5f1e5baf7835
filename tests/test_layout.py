"""The house rules of the code's layout, read from the source: no import cycle between
the top-level folders and modules of ``webapp``, and no module over 400 lines."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.no_database

PACKAGE = ROOT / "webapp"
# The factory (webapp/__init__.py) and the command line tie every feature together,
# and each other: they are the top, and may.
TOP = {"webapp", "cli"}
LONGEST = 400


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """The webapp modules ``path`` imports (``from . import x`` names ``x``)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module:
                found.add(target)
            else:
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "webapp"}


def _part(module: str) -> str:
    """The top-level folder or module of ``webapp`` that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "webapp"


def _folder_imports() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        here = _part(_module(path))
        for target in _imported(path):
            if _part(target) != here:
                edges[here].add(_part(target))
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts with more than one member (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_the_folders_of_webapp():
    edges = {
        part: {other for other in targets if other not in TOP}
        for part, targets in _folder_imports().items()
        if part not in TOP
    }
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_mail_going_out_stands_on_nothing_above_it():
    assert _folder_imports()["mailout"] <= {"db", "models", "sqlite_writers"}


def test_no_module_is_over_400_lines():
    long = {
        str(path.relative_to(ROOT)): length
        for folder in ("webapp", "emails")
        for path in (ROOT / folder).rglob("*.py")
        if "versions" not in path.parts and (length := len(path.read_text().splitlines())) > LONGEST
    }
    assert long == {}
