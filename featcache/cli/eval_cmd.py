"""`featcache eval`: per-image metrics of a trained run on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featcache.cli.app import app, console
from featcache.cli.common import progress_bar


@app.command("eval")
def eval_(
    run: Annotated[Path, typer.Option(help="Run directory written by `featcache distill`.")],
    split: Annotated[str, typer.Option(help="Split to evaluate: test, val, train or all.")] = "test",
    dataset: Annotated[str | None, typer.Option(help="Only this dataset of the run.")] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    empty: Annotated[str, typer.Option(
        help="Empty prediction vs empty mask: empty_as_one (scores 1) or empty_excluded "
             "(left out, nnU-Net style).")] = "empty_as_one",
    threshold: Annotated[float, typer.Option(help="Probability threshold for the mask.")] = 0.5,
) -> None:
    """Per-image Dice, IoU, HD95, precision, recall (mean ± std, median) and pooled Dice.

    Writes RUN/eval/per_image.csv, summary.json and overlays/.
    """
    from featcache.evaluate.run_eval import evaluate_run
    from featcache.evaluate.tables import summary_table

    with progress_bar() as bar:
        task = bar.add_task(f"evaluating {split}", total=None, info="")
        result = evaluate_run(run, split, checkpoint, dataset, empty, threshold,
                              progress=lambda d, t: bar.update(task, completed=d, total=t))
    from featcache.evaluate.outputs import read_eval_summary

    epoch = result["payload"]["epoch"] + 1
    console.print(summary_table(read_eval_summary(run),
                                title=f"{run} · {checkpoint} checkpoint (epoch {epoch})"))
    console.print(f"per-image results: {result['csv']}; overlays: {run / 'eval' / 'overlays'}; "
                  f"run directory: {run}")
