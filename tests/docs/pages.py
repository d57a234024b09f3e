"""Reading the documentation pages the tests hold to the code."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"

_TREE_BRANCH = re.compile(r"^(?P<indent>(?:│   |    )*)(?:├── |└── )(?P<name>\S+)")


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under the first heading that contains `heading`, up to the next heading of the
    same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(#+) ", line)
        if match and heading in line:
            level = len(match.group(1))
            body = []
            for later in lines[i + 1:]:
                other = re.match(r"^(#+) ", later)
                if other and len(other.group(1)) <= level:
                    break
                body.append(later)
            return "\n".join(body)
    raise AssertionError(f"no heading containing {heading!r}")


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def tree_paths(tree: str) -> tuple[str, list[str]]:
    """The root folder and the relative paths of a `tree`-style drawing: one name per line,
    folders end in '/'; '…' lines stand for more of the same and are skipped."""
    lines = tree.strip().splitlines()
    root = lines[0].strip().rstrip("/")
    stack: list[str] = []
    paths = []
    for line in lines[1:]:
        match = _TREE_BRANCH.match(line)
        if match is None:
            raise AssertionError(f"not a tree line: {line!r}")
        depth = len(match.group("indent")) // 4
        name = match.group("name")
        del stack[depth:]
        if name == "…":
            continue
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
        else:
            paths.append("/".join([*stack, name]))
    return root, paths
