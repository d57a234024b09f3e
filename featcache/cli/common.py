"""All rendering: the one table helper, progress bars, and the tables of evaluation results.

The library returns values; only the CLI (and the scripts in pipelines/) turn them into rich
output."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    """Live bars on a terminal; elsewhere (a log file under nohup, a scheduler, a pipe) one line per
    tenth of the work, per minute at most apart, and per epoch (LineProgress)."""
    if not console.is_terminal:
        with LineProgress(console) as progress:
            yield progress
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TaskProgressColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as progress:
        yield progress


@dataclass
class _Line:
    description: str
    total: float | None
    completed: float = 0
    info: str = ""
    started: float = field(default_factory=lambda: time.monotonic())
    said_at: float = field(default_factory=lambda: time.monotonic())
    said_tenth: int = 0
    said_done: bool = False


class LineProgress:
    """rich.progress.Progress's add_task/update/advance/remove_task as plain log lines, for output
    that is not a terminal, where live bars print nothing until they end. A task says a line when
    it passes a tenth of its total, when `every_s` seconds have passed since its last line, when
    an update passes `milestone=True` (an epoch's end) and when it completes."""

    def __init__(self, out: Any, every_s: float = 60.0) -> None:
        self.out, self.every_s = out, every_s
        self.tasks: dict[int, _Line] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self.tasks.values():
            if not task.said_done and task.completed:
                self._say(task)

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 info: str = "", **fields: Any) -> int:
        self.tasks[len(self.tasks)] = _Line(description, total, completed, info)
        return len(self.tasks) - 1

    def remove_task(self, task_id: int) -> None:
        task = self.tasks.pop(task_id)
        if not task.said_done and task.completed:
            self._say(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, info: str | None = None,
               milestone: bool = False, **fields: Any) -> None:
        task = self.tasks[task_id]
        task.total = task.total if total is None else total
        task.completed = completed if completed is not None else task.completed + (advance or 0)
        task.description = description or task.description
        task.info = task.info if info is None else info
        tenth = int(10 * task.completed / task.total) if task.total else 0
        done = bool(task.total) and task.completed >= task.total
        late = time.monotonic() - task.said_at >= self.every_s
        if milestone or late or tenth > task.said_tenth or (done and not task.said_done):
            task.said_tenth, task.said_done = max(tenth, task.said_tenth), done
            self._say(task)

    def _say(self, task: _Line) -> None:
        task.said_at = time.monotonic()
        elapsed = task.said_at - task.started
        count = f"{task.completed:g}/{task.total:g} ({100 * task.completed / task.total:.0f}%)" \
            if task.total else f"{task.completed:g}"
        eta = ""
        if task.total and 0 < task.completed < task.total:
            eta = f", about {_clock(elapsed * (task.total - task.completed) / task.completed)} left"
        self.out.print(f"{task.description}: {count} {task.info}".rstrip()
                       + f" [{_clock(elapsed)} elapsed{eta}]", highlight=False, markup=False)


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}"


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
