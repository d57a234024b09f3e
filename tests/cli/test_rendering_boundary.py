"""The library returns values; only the CLI renders and parses options. Read from the source (every
import statement, top-level or inside a function), so a lazy import cannot slip past."""

from __future__ import annotations

import ast
from pathlib import Path

import featcache

PACKAGE = Path(featcache.__file__).parent
CLI_ONLY = ("rich", "typer", "click")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_rich_typer_and_click_are_imported_only_under_cli():
    offenders = sorted(
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in PACKAGE.rglob("*.py") if "cli" not in path.relative_to(PACKAGE).parts[:1]
        for name in sorted(_imported_roots(path) & set(CLI_ONLY)))
    assert offenders == []


def test_the_scan_sees_a_lazy_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from rich.table import Table\n    import typer.core\n")
    assert _imported_roots(source) == {"rich", "typer"}
