"""Rich progress for `featcache study` and pipelines/paper.py: one bar for
extraction, one for the cells, one for the current training run. `StudyDisplay` is the
`progress(event)` callback that featcache.study's runners call with featcache.events."""

from __future__ import annotations

from typing import ClassVar

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

from featcache.cli.common import LineProgress
from featcache.cli.events import Display
from featcache.events import (
    EpochDone,
    EvaluationStarted,
    Event,
    ExtractionDone,
    ExtractionStarted,
    FeaturesResident,
    ImagesEvaluated,
    ImagesExtracted,
    PretrainReused,
    PretrainStarted,
    PretrainStep,
    RunDone,
    RunsPlanned,
    RunStarted,
    ShardsCommitted,
    StatisticsRead,
    TrainingStarted,
    TrainingStep,
    epoch_number,
)


class StudyDisplay(Display):
    """Context manager; the progress callback of the study runners (featcache.events)."""

    renders: ClassVar[dict[type[Event], str]] = {
        ExtractionStarted: "extraction_started", ImagesExtracted: "images_extracted",
        StatisticsRead: "statistics_read", ShardsCommitted: "shards_committed",
        ExtractionDone: "extraction_done", RunsPlanned: "runs_planned", RunStarted: "run_started",
        PretrainStarted: "pretrain_started", PretrainStep: "pretrain_step", PretrainReused: "pretrain_reused",
        FeaturesResident: "resident", TrainingStarted: "training_started", TrainingStep: "training_step",
        EpochDone: "epoch_done",
        EvaluationStarted: "evaluation_started", ImagesEvaluated: "images_evaluated", RunDone: "run_done"}

    def __init__(self, console: Console) -> None:
        self.console = console
        # Off a terminal (a log file, a scheduler) live bars print nothing until they end: lines.
        self.progress: Progress | LineProgress = LineProgress(console) if not console.is_terminal else \
            Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                     console=console)
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

    def extraction_started(self, e: ExtractionStarted) -> None:
        self._task("extract", f"extract {e.label}", None, "checking the store")

    def images_extracted(self, e: ImagesExtracted) -> None:
        self.progress.update(self.tasks["extract"], completed=e.done, total=e.total, info="images")

    def statistics_read(self, e: StatisticsRead) -> None:
        self.progress.update(self.tasks["extract"], completed=e.done, total=e.total,
                             info="feature statistics")

    def shards_committed(self, e: ShardsCommitted) -> None:
        pass  # the images bar says enough in a study

    def extraction_done(self, e: ExtractionDone) -> None:
        self.progress.remove_task(self.tasks.pop("extract"))
        self.console.print(f"extract {e.teacher} × {e.dataset}: [bold]{e.status}[/] ({e.seconds:.0f} s) "
                           f"{e.key}")

    def runs_planned(self, e: RunsPlanned) -> None:
        self._task("cells", "runs", e.total)

    def run_started(self, e: RunStarted) -> None:
        if "cells" in self.tasks:
            self.progress.update(self.tasks["cells"], info=e.label)

    def pretrain_started(self, e: PretrainStarted) -> None:
        self._task("train", "  feature pretraining", e.steps, f"{e.images} unlabelled images")

    def pretrain_step(self, e: PretrainStep) -> None:
        self.progress.update(self.tasks["train"], advance=1, info=f"loss {e.loss:.3f}")

    def pretrain_reused(self, e: PretrainReused) -> None:
        pass  # a study shares one pretraining across label fractions: nothing to say per run

    def resident(self, e: FeaturesResident) -> None:
        # its own line: targets are made resident after training has started its bar
        if e.total and e.done == 0:
            self._task("resident", "  resident features", e.total, f"{e.mib:,.0f} MiB in {e.where}")
        elif e.total and "resident" in self.tasks:
            self.progress.update(self.tasks["resident"], completed=e.done)
            if e.done >= e.total:
                self.progress.remove_task(self.tasks.pop("resident"))

    def training_started(self, e: TrainingStarted) -> None:
        self._task("train", "  training", e.steps)
        self.progress.update(self.tasks["train"], completed=e.done_steps)

    def training_step(self, e: TrainingStep) -> None:
        self.progress.update(self.tasks["train"], advance=1,
                             info=f"epoch {epoch_number(e.epoch)} loss {e.loss:.3f}")

    def epoch_done(self, e: EpochDone) -> None:
        self.progress.update(self.tasks["train"], milestone=True,
                             info=f"epoch {epoch_number(e.epoch)} val score {e.val_score:.3f}")

    def evaluation_started(self, e: EvaluationStarted) -> None:
        self._task("eval", "  evaluating", None)

    def images_evaluated(self, e: ImagesEvaluated) -> None:
        self.progress.update(self.tasks["eval"], completed=e.done, total=e.total)

    def run_done(self, e: RunDone) -> None:
        for name in ("train", "resident", "eval"):
            if name in self.tasks:
                self.progress.remove_task(self.tasks.pop(name))
        if "cells" in self.tasks:
            self.progress.advance(self.tasks["cells"])
        how = "reused (finished before)" if e.skipped else f"{e.row['train_seconds']:.0f} s"
        metric = "Dice" if e.row.get("metric", "dice") == "dice" else str(e.row["metric"])
        score = e.row.get("score", e.row.get("dice_mean"))
        shown = "–" if score is None else f"{score:.4f}"
        where = f" on {e.row['test']}" if e.row.get("test") else ""
        self.console.print(f"{e.label}: test {metric} {shown}{where}, {how}")
