"""A run's validation history as training keeps it: the best checkpoint score and its epoch, every
epoch's scores per dataset (metrics.csv's val rows, validation.py), and the warnings the
end-of-training summary gives when a task collapsed (the rules: featcache/runs/val_log.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featcache.distill.tasks import Classification, Tasks
from featcache.distill.validation import ValidationTally, ValScores, unique_names
from featcache.runs.val_log import collapse_warnings, val_rows


class Scoreboard:
    def __init__(self, tasks: Tasks, names: list[str], class_names: list[tuple[str, ...]]) -> None:
        self.tally = ValidationTally(tasks, names, class_names)
        self.best, self.best_epoch = -1.0, -1
        self.rows: list[dict[str, Any]] = []  # metrics.csv's val rows, one per epoch
        self.chance = {name: 1 / task.classes for name, task in zip(unique_names(names), tasks.by_dataset,
                                                                    strict=True)
                       if isinstance(task, Classification)}

    @classmethod
    def of(cls, tasks: Tasks, sources: list[Any]) -> Scoreboard:
        """For a run's tasks and its data sources (build.py's Source: the datasets by index)."""
        return cls(tasks, [s.dataset.name for s in sources], [tuple(s.dataset.classes) for s in sources])

    def record(self, epoch: int, scores: ValScores) -> tuple[dict[str, Any], bool]:
        """The epoch's val row, and whether its score is the best so far."""
        row = {"epoch": epoch, "split": "val", **scores.row()}
        self.rows.append(row)
        improved = scores.score > self.best
        if improved:
            self.best, self.best_epoch = scores.score, epoch
        return row, improved

    def resume(self, best: float, best_epoch: int, metrics_csv: Path, start_epoch: int) -> None:
        """Put back the best so far and the val rows of the epochs before start_epoch."""
        self.best, self.best_epoch = best, best_epoch
        self.rows = [r for r in val_rows(metrics_csv) if r["epoch"] < start_epoch]

    def kept(self) -> dict[str, float]:
        """The val columns of the kept checkpoint's epoch ({} before any)."""
        row = next((r for r in self.rows if r["epoch"] == self.best_epoch), {})
        return {k: v for k, v in row.items() if k.startswith("val_")}

    def warnings(self) -> list[str]:
        return collapse_warnings(self.rows, self.best_epoch, self.chance)
