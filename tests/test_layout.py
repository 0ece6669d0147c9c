"""The house's layout rules, checked over the source as text.

No import cycle between runner's modules (imports anywhere in a module count: top level,
inside functions and under `TYPE_CHECKING`), no module over the size one reads in a sitting,
and every exception class in `runner/errors.py`.
"""

from __future__ import annotations

import ast
import builtins
import importlib
from collections.abc import Iterator
from pathlib import Path

import runner

ROOT = Path(runner.__file__).parent
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _base(name: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names, relative imports resolved against `name`."""
    if not node.level:
        return node.module or ""
    package = name.split(".")
    is_package = _MODULES[name].name == "__init__.py"
    keep = len(package) - node.level + (1 if is_package else 0)
    return ".".join([*package[:keep], *([node.module] if node.module else [])])


def _imports(name: str, text: str | None = None) -> Iterator[str]:
    """The runner modules `name` imports, anywhere in its text (or in `text`, given one)."""
    tree = ast.parse(_MODULES[name].read_text(encoding="utf-8") if text is None else text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, node)
            # `from runner.x import y` imports the module runner.x.y when y is one.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in _MODULES else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in _MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


_MODULES = _modules()


def _cycles() -> list[list[str]]:
    """The import cycles, each as the modules on it (Tarjan's strongly connected components)."""
    graph = {name: sorted(set(_imports(name))) for name in _MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def test_no_import_cycle() -> None:
    assert _cycles() == []


def test_the_cycle_finder_sees_imports_in_functions_and_relative_ones() -> None:
    text = (
        "def f() -> None:\n    from runner.store.atomic import atomic_write\nfrom .. import plan\n"
    )
    assert set(_imports("runner.report.write", text)) == {"runner.store.atomic", "runner.plan"}


def test_no_module_over_the_limit() -> None:
    long = {
        name: n
        for name, path in _MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def _exception_classes() -> set[tuple[str, str]]:
    """(module, class) of every class in runner deriving from an exception, read as text.

    A class is one when a base's name is a builtin exception or a class found so far (repeated
    until nothing is added), so that a subclass of a subclass is found too.
    """
    classes = [
        (name, node)
        for name, path in _MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
    ]
    known = {
        n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)
    }
    found: set[tuple[str, str]] = set()
    while True:
        more = {
            (name, node.name)
            for name, node in classes
            if any(ast.unparse(base).rpartition(".")[2] in known for base in node.bases)
        }
        if more <= found:
            return found
        found |= more
        known |= {cls for _, cls in more}


def test_every_exception_lives_in_errors() -> None:
    assert ("runner.errors", "VlbenchError") in _exception_classes()  # the finder finds
    outside = sorted(f"{m}.{c}" for m, c in _exception_classes() if m != "runner.errors")
    assert outside == []


def _typed_imports() -> dict[str, str]:
    """The names `runner/__init__` imports under `if TYPE_CHECKING:`, with their modules."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    blocks = [
        n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
    ]
    return {
        alias.name: node.module or ""
        for block in blocks
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_every_public_name_imports_from_the_front_door_with_its_type() -> None:
    typed = _typed_imports()
    assert set(typed) == set(runner.__all__) - {"__version__"}
    for name in runner.__all__:
        space: dict[str, object] = {}
        exec(f"from runner import {name} as value", space)
        if name in typed:  # the object a type checker sees is the one callers get
            assert space["value"] is getattr(importlib.import_module(typed[name]), name), name
