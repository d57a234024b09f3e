"""The run's CSV logs (metrics.csv, gates.csv, probes.csv): rows appended per epoch, and cut back
to an epoch when a killed run is resumed, so a resumed run's logs read as one run's."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from featcache.events import epoch_number


def append_csv(path: Path, rows: list[dict[str, Any]], new: bool) -> None:
    """Append rows (the header is the union of their keys, in order); new: rewrite the file."""
    if not rows:
        return
    new = new or not path.exists()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w" if new else "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def truncate_csv(path: Path, start_epoch: int) -> None:
    """Keep only the rows of epochs before the 0-based index start_epoch (the files number epochs
    from 1: featcache.events.epoch_number). A log written before epochs were numbered from 1 (it
    has an epoch 0) is renumbered first, so a resumed old run's rows all count from 1."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    if any(int(r["epoch"]) == 0 for r in rows):
        rows = [{**r, "epoch": str(int(r["epoch"]) + 1)} for r in rows]
    rows = [r for r in rows if int(r["epoch"]) < epoch_number(start_epoch)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
