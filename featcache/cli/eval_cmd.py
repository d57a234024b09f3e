"""`featcache eval`: per-image metrics of a trained run on a dataset split."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from featcache.cli.app import app, console
from featcache.cli.common import progress_bar, table


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    total = int(pred.sum()) + int(gt.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & gt).sum()) / total


@app.command("eval")
def eval_(
    run: Annotated[Path, typer.Option(help="Run directory written by `featcache distill`.")],
    split: Annotated[str, typer.Option(help="Split to evaluate: test, val, train or all.")] = "test",
    dataset: Annotated[str | None, typer.Option(help="Only this dataset of the run.")] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
) -> None:
    """Per-image Dice (mean ± std, median) and pooled Dice; CSV and JSON in RUN/eval/."""
    from featcache.evaluate.run_eval import evaluate_run

    with progress_bar() as bar:
        task = bar.add_task(f"evaluating {split}", total=None, info="")
        rows = evaluate_run(run, split, checkpoint, dataset,
                            progress=lambda d, t: bar.update(task, completed=d, total=t))
    out = run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    per_image = [{"dataset": r["dataset"], "id": r["id"], "split": split,
                  "dice": _dice(r["pred"].astype(bool), r["gt"].astype(bool))} for r in rows]
    with (out / "per_image.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(per_image[0]))
        w.writeheader()
        w.writerows(per_image)
    summary = []
    for name in sorted({r["dataset"] for r in rows}):
        d = np.array([p["dice"] for p in per_image if p["dataset"] == name])
        sel = [r for r in rows if r["dataset"] == name]
        pooled = _dice(np.concatenate([r["pred"].ravel() for r in sel]).astype(bool),
                       np.concatenate([r["gt"].ravel() for r in sel]).astype(bool))
        summary.append({"dataset": name, "split": split, "n": len(d), "dice_mean": float(d.mean()),
                        "dice_std": float(d.std()), "dice_median": float(np.median(d)),
                        "pooled_dice": pooled})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(table(
        f"evaluation of {run} ({checkpoint} checkpoint)",
        ["dataset", "split", "images", "Dice mean ± std", "Dice median", "pooled Dice"],
        [(s["dataset"], s["split"], s["n"], f"{s['dice_mean']:.4f} ± {s['dice_std']:.4f}",
          f"{s['dice_median']:.4f}", f"{s['pooled_dice']:.4f}") for s in summary],
        caption="Per-image Dice is primary; empty prediction vs empty mask scores 1. Pooled Dice "
                "pools every pixel of the split (the MultiMedDistill code's convention)."))
    console.print(f"per-image results: {out / 'per_image.csv'}; run directory: {run}")
