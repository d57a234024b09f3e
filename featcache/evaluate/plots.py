"""Training-curve plots from a run's metrics.csv and gates.csv (matplotlib, Agg backend, PNG).

metrics.csv: columns epoch, split, then numeric columns (loss terms, val_dice, ...); a cell may be
empty where a split does not log that column. gates.csv: epoch, dataset, stage (the student stage
whose gate it is), teacher, weight; several rows for one (epoch, dataset, stage, teacher) are averaged.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from featcache.errors import CheckpointError  # noqa: E402


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    with Path(path).open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise CheckpointError(f"{path} lacks columns {missing}; it was not written by featcache distill")
        return list(reader)


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _series(rows: list[dict[str, str]], column: str, split: str) -> tuple[list[float], list[float]]:
    points = [(_float(r["epoch"]), _float(r.get(column))) for r in rows if r["split"] == split]
    points = [(e, v) for e, v in points if not (math.isnan(e) or math.isnan(v))]
    return [e for e, _ in points], [v for _, v in points]


def plot_metrics(metrics_csv: Path, out: Path) -> Path:
    """Loss terms (left, log scale when all positive) and Dice columns (right) against epoch."""
    rows = read_csv(metrics_csv, ("epoch", "split"))
    columns = [c for c in (rows[0].keys() if rows else []) if c not in ("epoch", "split")]
    splits = sorted({r["split"] for r in rows})
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4))
    positive = True
    for column in columns:
        ax = ax_dice if "dice" in column.lower() else ax_loss
        for split in splits:
            xs, ys = _series(rows, column, split)
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=f"{split} {column}")
                positive &= ax is ax_dice or min(ys) > 0
    if positive and ax_loss.lines:
        ax_loss.set_yscale("log")
    for ax, title in ((ax_loss, "loss terms"), (ax_dice, "Dice")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return _save(fig, out)


def plot_gates(gates_csv: Path, out: Path) -> Path:
    """One panel per (dataset, student stage); one line per teacher: mean gate weight against epoch."""
    rows = read_csv(gates_csv, ("epoch", "dataset", "stage", "teacher", "weight"))
    acc: dict[tuple[str, str], dict[str, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        acc[(r["dataset"], r["stage"])][r["teacher"]][_float(r["epoch"])].append(_float(r["weight"]))
    panels = sorted(acc) or [("", "")]
    teachers = sorted({r["teacher"] for r in rows})
    colour = {t: f"C{i % 10}" for i, t in enumerate(teachers)}  # one colour per teacher in every panel
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.2 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for teacher, by_epoch in sorted(acc.get(panel, {}).items()):
            epochs = sorted(by_epoch)
            ax.plot(epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs], label=teacher,
                    color=colour[teacher])
        ax.set_title(f"{panel[0]} / {panel[1]}" if panel[0] else "no gate rows", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("gate weight")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    return _save(fig, out)


def _save(fig: plt.Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
