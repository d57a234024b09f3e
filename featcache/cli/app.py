"""The typer app and the one place where library errors become a clean exit.

User errors (FeatcacheError) print one red line and exit 1; usage errors exit 2 (click's own);
`--debug` shows the traceback instead. The settings an error names as library fields (`threshold`)
are printed as the flags of the command that ran (`--threshold`).
"""

from __future__ import annotations

import re
import sys
import warnings
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from featcache.errors import FeatcacheError, FeatcacheWarning
from featcache.version import __version__

# Teacher packages import timm's deprecated module paths; users cannot act on that warning.
warnings.filterwarnings("ignore", message="Importing from timm", category=FutureWarning)

# Logs and CI capture output without a terminal: give tables room instead of rich's 80 columns.
_width = None if sys.stdout.isatty() else 140
console = Console(width=_width)
err_console = Console(stderr=True, width=_width)
_show_warning = warnings.showwarning


def _show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Library FeatcacheWarnings are one yellow line; other warnings print as Python prints them."""
    if issubclass(category, FeatcacheWarning):
        err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


warnings.showwarning = _show


# `featcache --help` lists the commands in the order a newcomer uses them, under the stage they
# belong to; a command not named here is listed last, under "Other".
PANELS: dict[str, tuple[str, ...]] = {
    "Start: your data and the teachers": ("datasets", "teachers", "init"),
    "Stage 1: run the teachers once into the store": ("extract",),
    "Stage 2: distil the student from the cache": ("probe", "distill", "study"),
    "Evaluate and ship": ("eval", "report", "predict", "export"),
    "The store": ("ls", "info", "verify", "rm", "gc"),
}
_ORDER = [name for names in PANELS.values() for name in names]


class _Group(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for panel, names in PANELS.items():
            for name in names:
                if name in self.commands:
                    self.commands[name].rich_help_panel = panel

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FeatcacheError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            text = as_flags(one_line(exc), exc.fields, command_flags(self, ctx))
            err_console.print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


# Library fields whose CLI parameter has another name (`featcache distill --set` gives overrides).
FIELD_PARAMS = {"override": "set_"}


def command_flags(group: click.Group, ctx: click.Context) -> dict[str, str]:
    """{field: its long flag} for the command that ran (every subcommand of a group): a library
    field is the CLI parameter of the same name (`image_size` -> `--image-size`) or the one
    FIELD_PARAMS names."""
    command = group.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    commands = [command] if command is not None else []
    if hasattr(command, "list_commands"):  # a group (typer's own click: no isinstance on click's types)
        commands += [command.get_command(ctx, name) for name in command.list_commands(ctx)]
    flags = option_flags(*commands)
    return {**flags, **{field: flags[name] for field, name in FIELD_PARAMS.items() if name in flags}}


def option_flags(*commands: click.Command) -> dict[str, str]:
    """{parameter name: its long flag} of the commands' options (`image_size` -> `--image-size`)."""
    return {param.name: max(param.opts, key=len) for cmd in commands for param in cmd.params
            if param.param_type_name == "option" and param.name}


def as_flags(message: str, fields: tuple[str, ...], flags: dict[str, str]) -> str:
    """The message with each field it names written as the flag that set it; whole words only
    (`training.device`, `checkpoints/`, `run/checkpoint/best.pt` stay as they are)."""
    for field in fields:
        if field in flags:
            word = rf"(?<![\w./-]){re.escape(field)}(?![\w/-]|\.\w)"
            message = re.sub(word, lambda _, flag=flags[field]: flag, message)
    return message


def one_line(exc: FeatcacheError) -> str:
    """The error's own message. A torch DataLoader re-raises a worker's exception as the same type
    with "Caught X in DataLoader worker process 0. Original Traceback ..." as its message: the
    original message is the traceback's last line, after "module.X: "."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    name = f"{type(exc).__module__}.{type(exc).__name__}: "
    return last.split(name, 1)[1] if name in last else last


app = typer.Typer(
    cls=_Group,
    name="featcache",
    help="Run foundation-model teachers once over your images into a Zarr feature store, then "
         "distil a small student (segmentation and classification) from the cache alone.\n\n"
         "The flow: datasets check, init, extract, distill, eval and report, export. "
         "Each command's --help ends with an example; the documentation is docs/index.md.",
    epilog="Example: featcache extract --manifest manifests/demo.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        console.print(f"featcache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    ctx.obj = {"debug": debug}


def main() -> None:
    app()
