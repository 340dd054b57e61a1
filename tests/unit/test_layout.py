"""The package's shape: no import circle between its modules, and no module too long to read in one
sitting.

Imports are read with `ast` from the source, never executed. What counts is what runs when a module
is imported: its module-level imports (also inside `try`, `with`, class bodies and `if` blocks),
following `from x import y` to the module `x.y` when there is one, and to the packages above an
imported module (Python runs their `__init__` first) unless the importer lives inside them already.
Imports inside functions and under `if TYPE_CHECKING:` don't count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import timers

PACKAGE = Path(timers.__file__).parent
MAX_LINES = 400
# Generated, one per schema change, and never edited afterwards.
LONG_ALLOWED_UNDER = PACKAGE / "migrations" / "versions"

# Known circles, each broken here at one import (importer, imported) with the reason, to be
# removed with the import. None today; this list must only shrink.
KNOWN_CYCLE_IMPORTS: dict[tuple[str, str], str] = {}

# Modules allowed over MAX_LINES (none: keep it so; an entry needs a reason beside it).
KNOWN_LONG_MODULES: frozenset[str] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def import_time_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when a module with this body is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not is_type_checking(node.test):
                yield from import_time_imports(node.body)
            yield from import_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from import_time_imports(block)
            for handler in node.handlers:
                yield from import_time_imports(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from import_time_imports(node.body)


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that importing module `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in import_time_imports(tree.body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from x import y` needs the module x.y if there is one, else x (all of its body).
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for target in targets:
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                step = ".".join(parts[:end])
                inside = name == step or name.startswith(step + ".")
                if step in modules and step != name and (end == len(parts) or not inside):
                    found.add(step)
    return found


def import_graph() -> dict[str, set[str]]:
    files = package_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_a_circle_and_follows_from_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    imports = import_graph()
    assert (
        "timers.callbacks.http" in imports["timers.callbacks"]
    )  # `from timers.callbacks import http`
    assert "timers.callbacks.base" in imports["timers.callbacks.http"]
    # The package of one's own module is already importing: not an edge back to it.
    assert "timers.callbacks" not in imports["timers.callbacks.http"]


def test_no_import_circle() -> None:
    graph = import_graph()
    for importer, imported in KNOWN_CYCLE_IMPORTS:
        graph[importer].discard(imported)
    found = circles(graph)
    assert not found, "import circles (module-level imports): " + "; ".join(
        " <-> ".join(group) for group in found
    )


def test_no_module_over_the_line_limit() -> None:
    too_long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in PACKAGE.rglob("*.py")
        if not path.is_relative_to(LONG_ALLOWED_UNDER)
        and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    unexpected = {path: lines for path, lines in too_long.items() if path not in KNOWN_LONG_MODULES}
    assert not unexpected, f"modules over {MAX_LINES} lines: {unexpected}"


def test_the_known_exceptions_are_still_needed() -> None:
    graph = import_graph()
    gone = [edge for edge in KNOWN_CYCLE_IMPORTS if edge[1] not in graph.get(edge[0], set())]
    assert not gone, f"no longer imported, remove from KNOWN_CYCLE_IMPORTS: {gone}"
    short = [
        path
        for path in KNOWN_LONG_MODULES
        if not (PACKAGE.parent / path).exists()
        or len((PACKAGE.parent / path).read_text().splitlines()) <= MAX_LINES
    ]
    assert not short, f"split or short enough now, remove from KNOWN_LONG_MODULES: {short}"
