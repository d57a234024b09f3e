"""What a run's validation log says (metrics.csv's val rows, written by distill/validation.py and
read by the trainer on resume, the end-of-training summary and the report): the rows themselves,
the Dice convention, and the warnings when a task collapsed.

A task has collapsed when, at the checkpoint the run keeps (best.pt) or failing that at its last
epoch:
* a segmentation dataset (or one class of it) is at validation Dice < 0.05: it finds nothing, or
* a classification dataset's balanced accuracy is within 0.05 of chance (1 / classes): it answers
  as if it guessed, or
* its score is below half of its own best in the run: it was given up for another task.
The rules read the val rows only, so a resumed run (its rows read back from metrics.csv) and a
report written later warn as the training did.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from featcache.events import epoch_number

NOTHING_FOUND = 0.05  # Dice below this finds nothing
NEAR_CHANCE = 0.05  # balanced accuracy within this of 1 / classes guesses
FELL_BELOW = 0.5  # a score below this share of its own best has collapsed
CONVENTION = ("per-image mean Dice; an image with a class in neither prediction nor mask is left out of "
              "that class's mean (nnU-Net's convention), not scored 1")


def val_rows(metrics_csv: Path) -> list[dict[str, Any]]:
    """metrics.csv's val rows, numbers as floats, "epoch" the 0-based index (the file numbers
    epochs from 1: featcache.events.epoch_number); [] without the file."""
    if not metrics_csv.is_file():
        return []
    with metrics_csv.open(newline="") as fh:
        return [{**{k: _number(v) for k, v in r.items()}, "epoch": int(r["epoch"]) - epoch_number(0),
                 "split": "val"} for r in csv.DictReader(fh) if r.get("split") == "val"]


def _number(text: str) -> Any:
    try:
        return float(text) if text != "" else math.nan
    except ValueError:
        return text


def collapse_warnings(rows: list[dict[str, Any]], best_epoch: int, chance: dict[str, float]) -> list[str]:
    """One line per collapsed task (see the module docstring). rows: val rows (val_METRIC/DATASET
    columns, "epoch" 0-based), best_epoch the kept one; chance: classification dataset -> 1 / classes."""
    if not rows:
        return []
    last = rows[-1]
    kept = next((r for r in rows if int(r["epoch"]) == best_epoch), last)
    out, warned = [], set()
    for column in rows[0]:  # a dataset's columns come before its classes'
        metric, _, where = column.partition("/")
        if metric not in ("val_dice", "val_accuracy") or where.split("/")[0] in warned:
            continue
        series = [float(r[column]) for r in rows if not math.isnan(float(r.get(column, math.nan)))]
        if not series:
            continue
        for when, row in (("the kept checkpoint", kept), ("the last epoch", last)):
            problem = _problem(metric, where, row, max(series), chance)
            if problem:
                out.append(f"{where}: {problem} at {when} (epoch {epoch_number(int(row['epoch']))})")
                warned.add(where)
                break
            if kept is last:
                break
    return out


def _problem(metric: str, where: str, row: dict[str, Any], best: float, chance: dict[str, float]) -> str:
    value = float(row.get(f"{metric}/{where}", math.nan))
    name = metric[4:]
    if math.isnan(value):
        return ""
    if metric == "val_dice" and value < NOTHING_FOUND:
        return f"validation Dice {value:.3f}: it finds nothing"
    dataset = where.split("/")[0]
    if metric == "val_accuracy" and dataset in chance:
        balanced = float(row.get(f"val_balanced_accuracy/{dataset}", math.nan))
        if balanced <= chance[dataset] + NEAR_CHANCE:
            return (f"validation balanced accuracy {balanced:.3f}, chance is {chance[dataset]:.3f}: "
                    "it answers as if guessing")
    if value < FELL_BELOW * best:
        return f"validation {name} {value:.3f}, below half its best in this run ({best:.3f})"
    return ""
