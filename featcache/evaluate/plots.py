"""Training-curve plots from a run's metrics.csv and gates.csv, and confusion matrices
(matplotlib, Agg backend, PNG).

metrics.csv: columns epoch, split, then numeric columns (loss terms, w_<term> loss weights, lr,
seconds, val_score, val_METRIC/DATASET[/CLASS], ...); a cell may be empty where a split does not
log that column. gates.csv:
epoch, dataset, stage (the student stage whose gate it is), teacher, weight; several rows for one
(epoch, dataset, stage, teacher) are averaged. A (dataset, stage) with a single teacher has nothing
to weigh: its panel says "one teacher".
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


def _panel_of(column: str) -> str:
    """Which panel a metrics.csv column belongs to: losses, weights, lr, time or validation."""
    if column == "lr":
        return "lr"
    if column == "seconds":
        return "time"
    if column.startswith("w_"):
        return "weights"
    if column.startswith("val_") and column.count("/") > 1:  # val_dice/DATASET/CLASS
        return "classes"
    if column.startswith("val_") or "dice" in column.lower():
        return "validation"
    return "losses"


# panel -> (title, y label); each panel has its own axis so seconds or the learning rate never
# squash the loss terms.
_PANELS = {"losses": ("loss terms", "loss"), "weights": ("loss weights", "weight"),
           "lr": ("learning rate", "lr"), "time": ("epoch time", "seconds"),
           "validation": ("validation per dataset", "score"),
           "classes": ("validation per class", "Dice")}


def _log_scale_fits(values: list[float]) -> bool:
    """Log scale where every value is positive and they span more than a factor of 20."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 20


def plot_metrics(metrics_csv: Path, out: Path) -> Path:
    """One panel per kind of column against epoch: loss terms, learned loss weights, learning
    rate, epoch time and validation scores (panels without data are left out); loss terms and
    the learning rate on a log scale where they span orders of magnitude."""
    rows = read_csv(metrics_csv, ("epoch", "split"))
    columns = [c for c in (rows[0].keys() if rows else []) if c not in ("epoch", "split")]
    splits = sorted({r["split"] for r in rows})
    series: dict[str, list[tuple[str, list[float], list[float]]]] = defaultdict(list)
    for column in columns:
        for split in splits:
            xs, ys = _series(rows, column, split)
            if xs:
                series[_panel_of(column)].append((f"{split} {column}", xs, ys))
    panels = [p for p in _PANELS if series.get(p)] or ["losses"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=True):
        values = []
        for label, xs, ys in series.get(panel, []):
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
            values += ys
        if panel in ("losses", "lr") and _log_scale_fits(values):
            ax.set_yscale("log")
        title, ylabel = _PANELS[panel]
        ax.set_title(title)
        ax.set_ylabel(ylabel)
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
        ax.set_title(f"{panel[0]} / {panel[1]}" if panel[0] else "no gate rows", fontsize=9)
        if len(acc.get(panel, {})) == 1:  # nothing to weigh: say so instead of a flat line at 1
            ax.text(0.5, 0.5, f"one teacher\n({next(iter(acc[panel]))})", ha="center", va="center",
                    transform=ax.transAxes, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for teacher, by_epoch in sorted(acc.get(panel, {}).items()):
            epochs = sorted(by_epoch)
            ax.plot(epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs], label=teacher,
                    color=colour[teacher])
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


def plot_confusion(matrix: list[list[int]], classes: list[str], title: str, out: Path) -> Path:
    """A (K, K) confusion matrix (row = true class, column = predicted) as a heat map with the
    count in each cell; rows are shaded by their share of the row so rare classes stay readable."""
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = 1.6 + 0.55 * len(classes)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    return _save(fig, out)


def _save(fig: plt.Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
