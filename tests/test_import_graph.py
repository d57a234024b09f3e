"""The package's import graph, read from the source: every import statement, top-level or inside a
function (a lazy import is still a dependency), except under `if TYPE_CHECKING:` (never run).
Extraction and distillation are siblings, and no featcache modules import each other in a ring."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import featcache

PACKAGE = Path(featcache.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(nodes: Iterable[ast.AST]) -> list[ast.Import | ast.ImportFrom]:
    found = []
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found += _imports(node.orelse)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        else:
            found += _imports(ast.iter_child_nodes(node))
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports}; `from pkg.a import b` counts as pkg.a.b when b
    is a module, else as pkg.a."""
    paths = {_module_name(p, root): p for p in root.rglob("*.py")}

    def known(name: str) -> str:
        while name not in paths:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _imports([ast.parse(path.read_text(), filename=str(path))]):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
                continue
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names}
        graph[name] = {known(t) for t in targets if t.split(".")[0] == root.name} - {name, ""}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = [stack.pop()]
            while group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_extract_and_distill_do_not_import_each_other():
    graph = import_graph(PACKAGE)
    crossings = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                       for a, b in (("extract", "distill"), ("distill", "extract"))
                       if m.startswith(f"featcache.{a}") and t.startswith(f"featcache.{b}"))
    assert crossings == []


def test_no_import_cycles():
    assert cycles(import_graph(PACKAGE)) == []


def test_the_scan_sees_lazy_and_relative_imports_but_not_type_checking_ones(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    import pkg.a\nelse:\n    import os\nimport pkg.sub.b\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.sub.b"}
    assert cycles(graph) == [["pkg.sub.b", "pkg.sub.c"]]
