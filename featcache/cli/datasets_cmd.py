"""`featcache datasets list|check`: what loaders exist, and whether a dataset folder is usable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from featcache.cli.app import app, console
from featcache.data.check import CheckReport, SplitSummary, check_dataset
from featcache.data.registry import DATASETS, dataset_modality
from featcache.errors import ConfigError

datasets_app = typer.Typer(help="List dataset loaders and check dataset folders.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("list", epilog="Example: featcache datasets list")
def list_datasets() -> None:
    """Show every registered dataset loader with its modality and expected layout."""
    table = Table(title="dataset loaders")
    for column in ("name", "modality", "layout"):
        table.add_column(column)
    for name, entry in sorted(DATASETS.items()):
        table.add_row(name, dataset_modality(name) or "-", entry.summary)
    console.print(table)


def _parse_options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are YAML scalars or lists ('2', '[-160, 240]', 'liver')."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"option {item!r} must look like KEY=VALUE, e.g. axis=2")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"option {item!r}: the value is not valid YAML") from None
    return options


def _size(summary: SplitSummary) -> str:
    if summary.min_hw is None or summary.max_hw is None:
        return "-"
    lo, hi = summary.min_hw, summary.max_hw
    return f"{lo[0]}x{lo[1]}" if lo == hi else f"{lo[0]}x{lo[1]} - {hi[0]}x{hi[1]}"


def _split_table(report: CheckReport) -> Table:
    """Per split: samples and sizes, then foreground (segmentation) and samples per class
    (classification; segmentation with several classes: samples showing each)."""
    title = f"{report.dataset} ({report.modality}, {report.channels} channel(s), {report.task})"
    table = Table(title=title)
    classify = report.task == "classification"
    per_class = list(report.classes) if classify or len(report.classes) > 1 else []
    extra = ([] if classify else ["mean foreground", "empty masks"]) + per_class
    for column in ("split", "samples", "size HxW (min - max)", *extra):
        table.add_column(column, justify="left" if column in ("split", "size HxW (min - max)")
                         else "right")
    for split, s in report.splits.items():
        cells = [] if classify else ["-" if s.mean_foreground is None else f"{s.mean_foreground:.4f}",
                                     str(s.empty_masks)]
        cells += [str(s.labels.get(k, 0)) for k in range(len(per_class))]
        table.add_row(split, str(s.samples), _size(s), *cells)
    return table


def _print_report(report: CheckReport) -> None:
    console.print(_split_table(report))
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if report.problems:
        problems = Table(title=f"{len(report.problems)} problem(s)")
        problems.add_column("file", overflow="fold")  # a path is useless once cut
        problems.add_column("problem", overflow="fold")
        for p in report.problems:
            problems.add_row(p["path"], p["reason"])
        console.print(problems)


_SKIP_HELP = "Report problems without failing (those files are left out, as skip_bad=True does)."
_OPTION_HELP = "Loader option KEY=VALUE, repeatable; values are YAML (axis=2, window='[-160, 240]')."


@datasets_app.command("check", epilog="Example: featcache datasets check --dataset folder --root my-data")
def check(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Registered dataset name.")],
    root: Annotated[Path | None, typer.Option("--root", "-r", help="Dataset folder.")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help=_SKIP_HELP)] = False,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help=_OPTION_HELP)] = None,
) -> None:
    """Decode every sample; print counts per split, sizes, foreground and every problem found."""
    report = check_dataset(dataset, root, **_parse_options(option or []))
    _print_report(report)
    if report.problems and not skip_bad:
        console.print(f"[bold red]{len(report.problems)} problem(s) found[/]: fix the files listed above "
                      "or pass --skip-bad to leave them out", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]ok[/]: {report.splits['all'].samples} sample(s) load cleanly"
                  + (f", {len(report.problems)} file(s) left out" if report.problems else ""),
                  highlight=False)
