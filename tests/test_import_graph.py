"""The package's import graph, read from the source: every import statement, top-level, inside a
function (a lazy import is still a dependency) or under `if TYPE_CHECKING:` (a type a module
names is a dependency a reader follows). No featcache modules import each other in a ring, and
no module imports a higher layer: the foundations, then data, teachers, store and the manifest,
then the run directory's format and the student network it holds (runs, student), then the two
sibling stages (extract and distill, which never import each other), then evaluation and
studies (which read runs but never import the training code), then the CLI and the Python API
on top."""

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
        if isinstance(node, (ast.Import, ast.ImportFrom)):
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


def test_evaluation_never_imports_the_training_code():
    """A trained student is served (eval, predict, export) from runs/ and student/ alone."""
    graph = import_graph(PACKAGE)
    crossings = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                       if m.startswith("featcache.evaluate") and t.startswith("featcache.distill"))
    assert crossings == []


def test_no_import_cycles():
    assert cycles(import_graph(PACKAGE)) == []


LAYERS = [  # lowest first; a module may import its own layer and those below
    ("featcache.errors", "featcache.registry", "featcache.yamlconfig", "featcache.devices",
     "featcache.events", "featcache.version"),
    ("featcache.data", "featcache.teachers", "featcache.store", "featcache.manifest"),
    ("featcache.runs", "featcache.student"),
    ("featcache.extract", "featcache.distill"),
    ("featcache.evaluate", "featcache.study", "featcache.starter"),
    ("featcache.cli", "featcache.api", "featcache.__main__", "featcache"),
]


def layer(module: str) -> int:
    """The layer of a module: that of the longest prefix listed in LAYERS."""
    best, found = -1, None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), rank
    assert found is not None, f"{module} has no layer: add it to LAYERS"
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                  if layer(t) > layer(m))


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph(PACKAGE)) == []


def test_the_layer_check_sees_an_upward_import():
    graph = {"featcache.store.reader": {"featcache.runs"}, "featcache.runs": set()}
    assert upward_imports(graph) == ["featcache.store.reader imports featcache.runs"]


def test_the_scan_sees_lazy_relative_and_type_checking_imports(tmp_path):
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
    assert graph["pkg.sub.c"] == {"pkg.a", "pkg.sub.b"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.sub.c"]]
