"""`featcache teachers ...`: what teachers exist, their levels and where their weights come from."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import typer
from rich.table import Table

from featcache.cli.app import app, as_flags, console, option_flags

if TYPE_CHECKING:  # the teachers (torch) load when a teachers command runs, not with the CLI
    from featcache.teachers.base import LevelSpec

teachers_app = typer.Typer(help="Inspect the available teachers.", no_args_is_help=True)
app.add_typer(teachers_app, name="teachers")


def _shape(level: LevelSpec) -> str:
    return f"{level.name} {level.channels}x{level.grid[0]}x{level.grid[1]} (/{level.stride})"


# The settings a teacher description names, printed as the flags `featcache extract` takes them as.
_SETTINGS = ("arch", "checkpoint", "random_init")


def _extract_flags(ctx: click.Context) -> dict[str, str]:
    root = ctx.find_root()
    return option_flags(root.command.get_command(root, "extract"))


@teachers_app.command("list", epilog="Example: featcache teachers list")
def list_teachers(ctx: typer.Context) -> None:
    """List the built-in teachers with default levels, input size and weight sources (loads no weights)."""
    from featcache.teachers.registry import describe_teachers

    flags = _extract_flags(ctx)
    table = Table(title="featcache teachers", show_lines=True)
    for column in ("name", "architectures", "default levels", "other levels", "input", "weights"):
        table.add_column(column, overflow="fold")
    for info in describe_teachers():
        default = "\n".join(_shape(lv) for lv in info.default_levels) or "depends on --arch"
        if info.note:
            default += f"\n[dim]{info.note}[/]"
        p = info.preprocess
        size = f"{p.size} px, {p.resize}" if p else "model's own size"
        others = ", ".join(info.other_levels)
        table.add_row(info.name, as_flags(info.architectures, _SETTINGS, flags), default, others, size,
                      as_flags(info.weights, _SETTINGS, flags))
    console.print(table)
