"""The run's CSV logs cut back on resume, whichever epoch numbering wrote them."""

from __future__ import annotations

import csv
from pathlib import Path

from featcache.runs.logs import append_csv, truncate_csv


def _epochs(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return [r["epoch"] for r in csv.DictReader(f)]


def test_resume_keeps_the_epochs_before_the_resume_point(tmp_path):
    log = tmp_path / "metrics.csv"
    append_csv(log, [{"epoch": e, "split": "train"} for e in (1, 2, 3)], new=True)
    truncate_csv(log, start_epoch=2)  # epochs 0 and 1 (0-based) done: rows 1 and 2 stay
    assert _epochs(log) == ["1", "2"]


def test_a_log_numbered_from_zero_is_renumbered_before_it_is_cut(tmp_path):
    """Runs written before epochs were numbered from 1 resume without a duplicated epoch."""
    log = tmp_path / "metrics.csv"
    append_csv(log, [{"epoch": e, "split": s} for e in (0, 1, 2) for s in ("train", "val")], new=True)
    truncate_csv(log, start_epoch=2)
    assert _epochs(log) == ["1", "1", "2", "2"]
