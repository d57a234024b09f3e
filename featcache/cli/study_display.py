"""Rich progress for `featcache study` and pipelines/paper.py: one bar for
extraction, one for the cells, one for the current training run. `StudyDisplay` is the
`progress(event, info)` callback that featcache.study's runners call."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from featcache.events import EpochDone, TrainingStarted, TrainingStep


class StudyDisplay:
    """Context manager; call the instance with (event, info) from the study runners."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=console)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> StudyDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def _task(self, name: str, description: str, total: int | None, info: str = "") -> TaskID:
        if name in self.tasks:
            self.progress.remove_task(self.tasks[name])
        self.tasks[name] = self.progress.add_task(description, total=total, info=info)
        return self.tasks[name]

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event}", None)
        if handler is not None:
            handler(info)

    def _on_extract_start(self, info: dict[str, Any]) -> None:
        self._task("extract", f"extract {info['label']}", None, "checking the store")

    def _on_extract_progress(self, info: dict[str, Any]) -> None:
        what = "images" if info["event"] == "images" else "feature statistics"
        self.progress.update(self.tasks["extract"], completed=info["done"], total=info["total"], info=what)

    def _on_extract_done(self, info: dict[str, Any]) -> None:
        self.progress.remove_task(self.tasks.pop("extract"))
        self.console.print(f"extract {info['teacher']} × {info['dataset']}: [bold]{info['status']}[/] "
                           f"({info['seconds']:.0f} s) {info['key']}")

    def _on_cells_start(self, info: dict[str, Any]) -> None:
        self._task("cells", "runs", info["total"])

    def _on_cell_start(self, info: dict[str, Any]) -> None:
        if "cells" in self.tasks:
            self.progress.update(self.tasks["cells"], info=info["label"])

    def _on_train(self, info: dict[str, Any]) -> None:
        event = info["event"]  # a featcache.events training event
        if isinstance(event, TrainingStarted):
            self._task("train", "  training", event.epochs * event.steps_per_epoch)
            self.progress.update(self.tasks["train"], completed=event.start_epoch * event.steps_per_epoch)
        elif isinstance(event, TrainingStep) and "train" in self.tasks:
            self.progress.update(self.tasks["train"], advance=1,
                                 info=f"epoch {event.epoch + 1} loss {event.loss:.3f}")
        elif isinstance(event, EpochDone) and "train" in self.tasks:
            self.progress.update(self.tasks["train"], info=f"epoch {event.epoch + 1} val Dice "
                                                           f"{event.val_score:.3f}")

    def _on_eval_start(self, info: dict[str, Any]) -> None:
        self._task("eval", "  evaluating", None)

    def _on_eval(self, info: dict[str, Any]) -> None:
        self.progress.update(self.tasks["eval"], completed=info["done"], total=info["total"])

    def _on_cell_done(self, info: dict[str, Any]) -> None:
        for name in ("train", "eval"):
            if name in self.tasks:
                self.progress.remove_task(self.tasks.pop(name))
        if "cells" in self.tasks:
            self.progress.advance(self.tasks["cells"])
        row = info["row"]
        how = "reused (finished before)" if info["skipped"] else f"{row['train_seconds']:.0f} s"
        self.console.print(f"{info['label']}: test Dice {row['dice_mean']:.4f}, {how}")
