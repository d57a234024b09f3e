"""Small helpers shared by command modules: rich progress bars and tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from featcache.cli.app import console


@contextmanager
def progress_bar():
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TaskProgressColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as progress:
        yield progress


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]],
          caption: str | None = None) -> Table:
    t = Table(title=title, caption=caption, show_lines=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[str(v) for v in r])
    return t
