"""All rendering: the one table helper, progress bars, and the tables of evaluation results.

The library returns values; only the CLI (and the scripts in pipelines/) turn them into rich
output."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

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
def sigterm_as_interrupt():
    """SIGTERM (a scheduler or `kill` stopping the job) unwinds like Ctrl-C: `finally` blocks run,
    so an extract releases its shard claims and writer lease instead of leaving them for another
    host to wait out (claims of a dead process are expired at once only on its own host)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def progress_bar():
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TaskProgressColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as progress:
        yield progress


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]],
          caption: str | None = None) -> Table:
    """A table of text cells (values shown with str), long cells folded, the caption left-aligned."""
    t = Table(title=title, caption=caption, caption_justify="left")
    for c in columns:
        t.add_column(str(c), overflow="fold")
    for r in rows:
        t.add_row(*[str(v) for v in r])
    return t


def summary_table(summary: dict[str, Any], title: str = "Evaluation") -> Table:
    """One row per (dataset, split) of a summary.json dict: mean ± std (median) of each metric and
    the pooled Dice. The caption states the empty-mask convention."""
    from featcache.evaluate.metrics import METRICS
    from featcache.evaluate.tables import fmt, mean_std

    caption = (f"Empty masks: {summary.get('empty_convention_text', summary.get('empty_convention'))}. "
               f"{summary.get('pooled_dice_label', 'pooled Dice')}: 2ΣTP/(Σ|P|+Σ|G|) over all pixels. "
               "mean ± std (median); std with ddof=0.")
    t = Table(title=title, caption=caption, caption_justify="left")
    groups = summary.get("groups", [])
    classes = any("class" in row for row in groups)  # multi-class datasets: one row per class
    for column in ("dataset", "split", *(("class",) if classes else ()), "n"):
        t.add_column(column, justify="right" if column == "n" else "left")
    for name in METRICS:
        t.add_column(name, justify="right")
    t.add_column("pooled Dice", justify="right")
    for row in groups:
        cells = [str(row["dataset"]), str(row["split"]), *((str(row.get("class", "")),) if classes else ()),
                 str(row["n"])]
        for name in METRICS:
            text = f"{mean_std(row, name)} ({fmt(row.get(f'{name}_median'))})"
            cells.append(text + (f" {row.get('hd95_unit', '')}" if name == "hd95" else ""))
        cells.append(fmt(row.get("pooled_dice")))
        t.add_row(*cells)
    return t


def classification_table(summary: dict[str, Any], title: str = "Classification") -> Table:
    """One row per (dataset, split) of a summary.json's "classification" entries: accuracy,
    balanced accuracy, weighted precision/recall/F1, macro one-vs-rest AUC and, for graded
    datasets, quadratic weighted kappa."""
    from featcache.evaluate.tables import fmt

    names = summary.get("classification_metrics", [])
    caption = ("precision, recall, F1 weighted by class support; AUC one-vs-rest, macro over the "
               "classes present; kappa quadratic-weighted, for graded labels only.")
    t = Table(title=title, caption=caption, caption_justify="left")
    for column in ("dataset", "split", "n", *names):
        t.add_column(column.replace("_", " "), justify="left" if column in ("dataset", "split") else "right")
    for row in summary.get("classification", []):
        t.add_row(str(row["dataset"]), str(row["split"]), str(row["n"]),
                  *[fmt(row.get(name)) for name in names])
    return t


def failures_table(failures: list[tuple[str, str]], title: str = "Failed inputs") -> Table:
    """(input, reason) pairs."""
    t = Table(title=title, title_style="bold red")
    t.add_column("input", overflow="fold")
    t.add_column("reason", overflow="fold")
    for source, reason in failures:
        t.add_row(source, reason)
    return t
