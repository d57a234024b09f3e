"""Code a newcomer can read: no function in featcache/ runs over 60 lines (a typer command's
option list aside: each option is a few declarative lines), and the training loop's class stays
under 150."""

from __future__ import annotations

import ast
from pathlib import Path

import featcache

PACKAGE = Path(featcache.__file__).parent
MAX_FUNCTION, MAX_TRAINER = 60, 150


def _is_cli_command(node: ast.FunctionDef) -> bool:
    return any(".command" in ast.unparse(d) for d in node.decorator_list)


def _long_functions(root: Path, limit: int) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_cli_command(node):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_over_60_lines():
    assert _long_functions(PACKAGE, MAX_FUNCTION) == []


def test_the_trainer_is_under_150_lines():
    tree = ast.parse((PACKAGE / "distill" / "trainer.py").read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    assert trainer.end_lineno - trainer.lineno + 1 < MAX_TRAINER


def test_the_check_sees_a_long_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (tmp_path / "pkg" / "m.py").write_text(f"def long():\n{body}\n\n@app.command()\ndef cli():\n{body}\n")
    assert _long_functions(tmp_path / "pkg", MAX_FUNCTION) == ["pkg/m.py:1 long (62 lines)"]
