"""Rich tables for the CLI: the eval summary and a list of failed inputs."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from featcache.evaluate.metrics import METRICS


def fmt(value: Any, digits: int = 3) -> str:
    """A number for display; None/NaN as an em dash."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def mean_std(row: dict[str, Any], name: str, digits: int = 3) -> str:
    mean, std = row.get(f"{name}_mean"), row.get(f"{name}_std")
    return "—" if mean is None or mean != mean else f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def summary_table(summary: dict[str, Any], title: str = "Evaluation") -> Table:
    """One row per (dataset, split) of a summary.json dict: mean ± std (median) of each metric and
    the pooled Dice. The caption states the empty-mask convention."""
    caption = (f"Empty masks: {summary.get('empty_convention_text', summary.get('empty_convention'))}. "
               f"{summary.get('pooled_dice_label', 'pooled Dice')}: 2ΣTP/(Σ|P|+Σ|G|) over all pixels. "
               "mean ± std (median); std with ddof=0.")
    table = Table(title=title, caption=caption, caption_justify="left")
    for column in ("dataset", "split", "n"):
        table.add_column(column, justify="right" if column == "n" else "left")
    for name in METRICS:
        table.add_column(name, justify="right")
    table.add_column("pooled Dice", justify="right")
    for row in summary.get("groups", []):
        cells = [str(row["dataset"]), str(row["split"]), str(row["n"])]
        for name in METRICS:
            text = f"{mean_std(row, name)} ({fmt(row.get(f'{name}_median'))})"
            cells.append(text + (f" {row.get('hd95_unit', '')}" if name == "hd95" else ""))
        cells.append(fmt(row.get("pooled_dice")))
        table.add_row(*cells)
    return table


def failures_table(failures: list[tuple[str, str]], title: str = "Failed inputs") -> Table:
    """(input, reason) pairs."""
    table = Table(title=title, title_style="bold red")
    table.add_column("input", overflow="fold")
    table.add_column("reason", overflow="fold")
    for source, reason in failures:
        table.add_row(source, reason)
    return table
