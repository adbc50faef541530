"""The house: ``ls edgecls/`` reads like ``edgecls --help``, no import circles, modules of a readable size.

The layering itself (CLI > pipeline > bench > stages > … > runtime > base) is import-linter's
contracts in pyproject.toml, run by ``make lint``; these tests hold what a layers contract does not
see: circles inside one layer or package (function-level imports included), and the size of the rooms.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgecls"
MAX_ENTRIES = 16  # `ls edgecls/`: a stage or a role a user knows, each
MAX_MODULE_LINES = 450  # STYLE.md: about 400 a module


def _entries() -> list[Path]:
    """The rooms of ``edgecls/``; ``py.typed`` is PEP 561's marker (type checkers read the hints), not a room."""
    return sorted(p for p in PACKAGE.iterdir() if p.name not in ("__pycache__", "py.typed"))


def test_the_package_lists_at_most_sixteen_entries_each_saying_its_job():
    entries = _entries()
    assert len(entries) <= MAX_ENTRIES, [p.name for p in entries]
    for entry in entries:
        module = entry / "__init__.py" if entry.is_dir() else entry
        assert module.is_file(), f"{entry.name}: a folder of edgecls/ is a package with an __init__.py"
        docstring = ast.get_docstring(ast.parse(module.read_text()))
        assert docstring and len(docstring.splitlines()[0]) > 20, f"{module}: its first docstring line says its job"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_the_size_guide(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)}: {lines} lines; split it by role"


def import_circles(graph) -> list[list[str]]:
    """Every set of modules that import each other in a loop: Tarjan's strongly connected components of
    grimp's import graph, which holds every import, function-level (deferred) ones included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return circles


def test_no_import_circle_among_edgecls_modules():
    grimp = pytest.importorskip("grimp")  # import-linter's graph builder (the dev extra)
    assert import_circles(grimp.build_graph("edgecls", cache_dir=None)) == []


def test_a_circle_closed_by_a_deferred_import_is_found(tmp_path, monkeypatch):
    """The check above can fail: ``a`` imports ``b`` inside a function, ``b`` imports ``a`` at the top."""
    grimp = pytest.importorskip("grimp")
    package = tmp_path / "loop_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from loop_pkg import b\n")
    (package / "b.py").write_text("from loop_pkg import a\n")
    (package / "c.py").write_text("from loop_pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_circles(grimp.build_graph("loop_pkg", cache_dir=None)) == [["loop_pkg.a", "loop_pkg.b"]]
