"""The command line's reference, generated from the typer app itself: every command (sub-groups
included) with its help, usage, arguments, options with their defaults, and its example. The
documentation site renders it at build time (docs/conf.py), so the reference cannot drift from
the code; tests walk the same tree to check every command's `--help` ends with an example."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from featcache.cli import app as _registered  # noqa: F401  (importing the package registers every command)
from featcache.cli.app import app

EXAMPLE_PREFIX = "Example: "


def root_command() -> Any:
    """The click command typer builds from the app (a group holding every command)."""
    return typer.main.get_command(app)


def commands() -> Iterator[tuple[str, Any]]:
    """("featcache datasets check", command) for every command that runs, sub-groups' included,
    in the order `featcache --help` lists them."""
    root = root_command()
    yield from _walk("featcache", root, typer.Context(root, info_name="featcache"))


def _walk(path: str, command: Any, ctx: Any) -> Iterator[tuple[str, Any]]:
    if not hasattr(command, "list_commands"):  # a command, not a group
        yield path, command
        return
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            yield from _walk(f"{path} {name}", sub, typer.Context(sub, info_name=name, parent=ctx))


def example_of(command: Any) -> str:
    """The command's example line (its epilog without the "Example: " prefix); '' when it has none."""
    epilog = (command.epilog or "").strip()
    return epilog[len(EXAMPLE_PREFIX):].strip() if epilog.startswith(EXAMPLE_PREFIX) else ""


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _param_rows(command: Any, ctx: Any) -> list[str]:
    """One table row per argument and option, from the same help record `--help` prints (the
    flags with their value's type, the help with its default)."""
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None and record[0] != "--help":
            names, text = record
            rows.append(f"| `{_cell(names)}` | {_cell(text)} |")
    return rows


def _section(path: str, command: Any, ctx: Any, level: int) -> str:
    lines = [f"{'#' * level} `{path}`", "", (command.help or "").strip(), ""]
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines += ["```text", f"{path} {usage}".rstrip(), "```", ""]
    rows = _param_rows(command, ctx)
    if rows:
        lines += ["| argument or option | meaning |", "| --- | --- |", *rows, ""]
    if example_of(command):
        lines += ["Example:", "", "```bash", example_of(command), "```", ""]
    return "\n".join(lines)


def cli_markdown(heading_level: int = 1) -> str:
    """The reference as Markdown: an index of commands, then one section per command."""
    root = root_command()
    ctx = typer.Context(root, info_name="featcache")
    found = list(commands())
    lines = ["| command | what it does |", "| --- | --- |"]
    lines += [f"| `{path}` | {_cell(cmd.get_short_help_str(limit=200))} |" for path, cmd in found]
    sections = [_section(path, cmd, typer.Context(cmd, info_name=path, parent=ctx), heading_level)
                for path, cmd in found]
    return "\n".join(lines) + "\n\n" + "\n".join(sections)
