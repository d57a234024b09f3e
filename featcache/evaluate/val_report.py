"""The report's validation section: each dataset's validation numbers at the kept checkpoint (its
epoch's val row of metrics.csv) and the warnings training gave when a task collapsed (recomputed
from the same rows by featcache/runs/val_log.py's rules, so the report says what training said)."""

from __future__ import annotations

import math

from featcache.evaluate.document import Block, Bullets, Heading, Para, Table
from featcache.evaluate.tables import fmt
from featcache.events import epoch_number
from featcache.runs import Checkpoint, Run
from featcache.runs.val_log import CONVENTION, collapse_warnings, val_rows


def validation_section(run: Run, checkpoint: Checkpoint) -> list[Block]:
    rows = val_rows(run.metrics_csv)
    if not rows or "val_score" not in rows[0]:
        return []  # a run trained before validation per dataset: its curves say what there is
    epoch = checkpoint.best_epoch if checkpoint.best_epoch is not None else int(rows[-1]["epoch"])
    kept = next((r for r in rows if int(r["epoch"]) == epoch), rows[-1])
    by: dict[str, dict[str, float]] = {}
    for key, value in kept.items():
        metric, _, where = key.partition("/")
        if key.startswith("val_") and where:
            by.setdefault(where, {})[metric[4:]] = value
    metrics = list(dict.fromkeys(m for values in by.values() for m in values))
    table = Table(["dataset", *metrics], [[where, *(fmt(values.get(m, math.nan)) for m in metrics)]
                                         for where, values in by.items()])
    blocks: list[Block] = [
        Heading(2, "Validation per dataset"),
        Para(f"At the kept checkpoint's epoch {epoch_number(epoch)} (checkpoint score "
             f"{fmt(kept['val_score'])}: the geometric mean over datasets of each one's score, Dice or "
             f"accuracy). Dice: {CONVENTION}; pooled Dice over the split beside it. Each dataset's "
             "curve is in the training curves below."), table]
    chance = {name: 1 / n for name, n in checkpoint.student_config.classifiers.items()}
    warnings = collapse_warnings(rows, epoch, chance)
    if warnings:
        blocks += [Para("A task collapsed in training:", emphasis=True), Bullets(warnings)]
    return blocks
