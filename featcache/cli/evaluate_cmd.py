"""The commands that take a trained run (`--run`, `--checkpoint`): `featcache eval`, `predict`,
`report` and `export`. They parse options, call featcache.evaluate, and print with rich."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from featcache.cli.app import app, console
from featcache.cli.common import classification_table, failures_table, progress_bar, summary_table
from featcache.errors import ConfigError, DatasetError
from featcache.events import epoch_number

if TYPE_CHECKING:
    from featcache.evaluate.predict import PredictSummary
    from featcache.evaluate.served import Served

Which = Annotated[str, typer.Option("--checkpoint", help="Which checkpoint of the run: best or last.")]
RunDir = Annotated[Path, typer.Option("--run", help="The run directory written by `featcache distill`.")]


@app.command("eval", short_help="Score a run on a split: Dice, HD95 per image; accuracy, AUC, kappa.",
             epilog="Example: featcache eval --run runs/demo --split val")
def eval_(
    run: RunDir,
    split: Annotated[str, typer.Option(help="Split to evaluate: test, val, train or all.")] = "test",
    dataset: Annotated[str | None, typer.Option(help="Only this dataset of the run.")] = None,
    checkpoint: Which = "best",
    empty: Annotated[str, typer.Option(
        help="Empty prediction vs empty mask: empty_as_one (scores 1) or empty_excluded "
             "(left out, nnU-Net style).")] = "empty_as_one",
    threshold: Annotated[float, typer.Option(help="Probability threshold for the mask.")] = 0.5,
) -> None:
    """Per-image Dice, IoU, HD95, precision, recall (mean ± std, median) and pooled Dice; per
    class and their mean for multi-class masks; accuracy, balanced accuracy, weighted P/R/F1, AUC
    (and kappa for graded labels) for classification datasets.

    Writes RUN/eval/per_image.csv, summary.json, overlays/ and, for classification datasets,
    per_image_classes.csv.
    """
    from featcache.evaluate.run_eval import evaluate_run

    with progress_bar() as bar:
        task = bar.add_task(f"evaluating {split}", total=None, info="")
        result = evaluate_run(run, split, checkpoint, dataset, empty, threshold,
                              progress=lambda d, t: bar.update(task, completed=d, total=t))
    epoch = epoch_number(result.checkpoint.epoch)
    title = f"{run} · {checkpoint} checkpoint (epoch {epoch})"
    if result.summary["groups"]:
        console.print(summary_table(result.summary, title=title))
    if result.summary.get("classification"):
        console.print(classification_table(result.summary, title=f"{title} · classification"))
    classes = f"; class probabilities: {result.classes_csv}" if result.classes_csv else ""
    console.print(f"per-image results: {result.csv}{classes}; overlays: {result.overlays}; "
                  f"run directory: {run}", soft_wrap=True)


@app.command(short_help="Segment (and classify) new images or volumes with a trained student.",
             epilog="Example: featcache predict --run runs/demo --input scans/ --out predictions/")
def predict(
    input: Annotated[Path, typer.Option("--input", help="An image or volume file, or a folder of them "
                                                        "(nnU-Net CASE_0000 files are read per case), "
                                                        "or a folder of DICOM files (one input per "
                                                        "series; NIfTI and DICOM-SEG out).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (masks/, overlays/).")],
    run: Annotated[Path | None, typer.Option("--run", help="The run directory written by "
                                                           "`featcache distill`.")] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", help="Instead of --run: a student exported by `featcache export --format onnx`, "
                        "run by ONNX Runtime (no torch needed).")] = None,
    checkpoint: Which = "best",
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="Read inputs with this training dataset's recipe (needed only when the run's "
                          "datasets read the same kind of file differently).")] = None,
    threshold: Annotated[float, typer.Option(help="Foreground probability threshold.")] = 0.5,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="Write the good inputs when some "
                                                                  "fail; list failures at the end.")] = False,
    masks: Annotated[Path | None, typer.Option(
        "--masks", help="Folder of ground-truth masks named like the inputs, or like their cases "
                        "(nnU-Net labelsTr): drawn and scored.")] = None,
) -> None:
    """Segment images or volumes with a trained student; write masks (label maps for multi-class
    students) on each input's own grid and overlays, and for students with classification heads
    OUT/class_probabilities.csv. Each input is read with the recipe its training dataset was read
    with (the intensity scaling, slicing and orientation saved in the run or the exported model).

    With --masks, inputs that have a mask are scored as `featcache eval` scores a split (Dice, IoU,
    precision, recall, HD95; mean ± std, median, pooled Dice) into OUT/per_image.csv and summary.json.
    """
    from featcache.evaluate.predict import predict_paths

    predictor = _served(run, model, checkpoint, threshold)
    summary = predict_paths(predictor, input, out, masks, keep_going, dataset)
    for note in predictor.classes.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    _print_predictions(summary, list(predictor.classes.heads), out)
    if masks is not None:
        _print_scores(summary, out, {"run": str(run or model), "checkpoint": checkpoint,
                                     "threshold": threshold, "masks": str(masks)})
    if summary.failures:
        console.print(failures_table(summary.failures))
        raise DatasetError(f"{len(summary.failures)} of {len(summary.failures) + len(summary.results)} "
                           f"inputs failed (listed above); the others were written to {out}")


def _served(run: Path | None, model: Path | None, checkpoint: str, threshold: float) -> Served:
    """The student to predict with: a run's checkpoint (PyTorch) or an exported ONNX file."""
    if (run is None) == (model is None):
        raise ConfigError("give the student as --run DIR or as --model FILE.onnx (one of them)",
                          fields=("run", "model"))
    if model is not None:
        from featcache.evaluate.onnx_predictor import OnnxPredictor

        return OnnxPredictor(model, threshold)
    from featcache.evaluate.predictor import Predictor

    return Predictor.from_run(run, checkpoint, threshold)


def _print_predictions(summary: PredictSummary, heads: list[str], out: Path) -> None:
    from featcache.evaluate.tables import fmt

    table = Table(title=f"Predictions in {out}")
    for column in ("input", "shape", "foreground", "dice", "mask", *heads):
        table.add_column(column)
    for r in summary.results:
        table.add_row(r.source.name, "×".join(map(str, r.shape)),
                      "—" if r.foreground is None else f"{r.foreground:.1%}", fmt(r.dice),
                      str(r.outputs[0].relative_to(out)) if r.outputs else "—",
                      *[r.classes.get(h, "—") for h in heads])
    if summary.results:
        console.print(table)
    if summary.class_csv is not None:
        console.print(f"class probabilities: {summary.class_csv}", soft_wrap=True)


def _print_scores(summary: PredictSummary, out: Path, info: dict) -> None:
    from featcache.evaluate.outputs import summary_dict
    from featcache.evaluate.predict import write_scores

    written = write_scores(summary, out, info)
    if written is None:
        console.print(f"[yellow]note:[/] no input had a mask of the same name in {info['masks']}; "
                      "nothing was scored", highlight=False, soft_wrap=True)
        return
    console.print(summary_table(summary_dict(summary.scores, info), title=f"Scores against {info['masks']}"))
    console.print(f"per-image results: {written[0]}; summary: {written[1]}", soft_wrap=True)


@app.command(short_help="Write RUN/report/report.md and a self-contained report.html.",
             epilog="Example: featcache report --run runs/demo")
def report(
    run: RunDir,
    checkpoint: Which = "best",
    split: Annotated[str, typer.Option(help="Whose scores to report: the split `featcache eval` "
                                            "scored (test: RUN/eval; another: RUN/eval-SPLIT).")] = "test",
) -> None:
    """Write RUN/report/report.md and report.html: metrics, training curves, gate weights, best and
    worst cases, provenance. The HTML page embeds its pictures: it opens offline and can be sent as is."""
    from featcache.evaluate.report import build_report

    result = build_report(run, checkpoint, split=split)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    console.print(f"wrote [bold]{result.path}[/] with {len(result.plots)} plot(s), and the same page as "
                  f"one self-contained file, [bold]{result.html}[/]", soft_wrap=True)


@app.command(epilog="Example: featcache export --run runs/demo --format onnx")
def export(
    run: RunDir,
    format: Annotated[str, typer.Option("--format", help="onnx or torchscript.")],
    image_size: Annotated[int | None, typer.Option("--image-size", help="Input size S (default: the "
                                                                        "training size).")] = None,
    checkpoint: Which = "best",
    out: Annotated[Path | None, typer.Option("--out", help="Output file (default: RUN/export/...).")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs for the median latency.")] = 20,
) -> None:
    """Export the student with every head to ONNX or TorchScript, with its input recipe (in the ONNX
    metadata and as STEM.recipe.json beside the file); check it matches PyTorch, and time it on CPU.
    `featcache predict --model FILE.onnx` serves the file with ONNX Runtime alone."""
    from featcache.evaluate.export import export_run

    r = export_run(run, format, out, image_size, checkpoint, runs)
    table = Table(title=f"Exported {r.format} student", show_header=False)
    table.add_row("file", str(r.path))
    table.add_row("input", f"(B, C, {r.image_size}, {r.image_size}), batch B dynamic")
    table.add_row("parameters", f"{r.params:,} (the whole student, every head)")
    table.add_row("outputs", ", ".join(r.outputs) + " (mask logits, then each classification head's)")
    table.add_row("input recipe", f"{r.recipe} (and in the ONNX metadata): how to read, scale and slice "
                                  "inputs, and the outputs' classes" if r.format == "onnx" else str(r.recipe))
    table.add_row("file size", f"{r.file_bytes / 1e6:.2f} MB")
    table.add_row("parity", f"max |Δ output| {r.max_abs_diff:.2e} ≤ {r.tolerance:.1e}")
    table.add_row("CPU latency, batch 1", f"PyTorch {r.torch_ms:.1f} ms, {r.runtime} {r.runtime_ms:.1f} ms "
                                          f"(median of {runs}, {r.threads} thread(s))")
    console.print(table)
