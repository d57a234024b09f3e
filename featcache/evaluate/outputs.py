"""The format of the files `featcache eval` leaves in a run directory (`Run.eval`, a
`ScoredFolder`), and how to read them back; `predict --masks` writes the same two files into its
output folder. Their names are run.py's.

  RUN/eval/per_image.csv   one row per image: id, dataset, split, dice, iou, precision, recall, hd95,
                           hd95_unit, pred_pixels, gt_pixels (NaN written as an empty cell); with
                           multi-class datasets a `class` column after split, one row per image and
                           class plus one per image with class "mean"
  RUN/eval/per_image_classes.csv   classification datasets only: id, dataset, split, true_class,
                           predicted_class, p_<class> per class
  RUN/eval/summary.json    {"format": "featcache-eval/1", "empty_convention", "empty_convention_text",
                            "pooled_dice_label", "metrics", "groups": [summary rows], "info": {...}}
                           (NaN written as null); groups of multi-class datasets carry "class";
                           with classification datasets also "classification_metrics" (names) and
                           "classification": [per (dataset, split): n, classes, graded, metrics,
                           confusion (row = true, column = predicted)]
  RUN/eval/overlays/DATASET/ID.png   optional overlays (see `eval_overlay_path`)
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featcache.errors import CheckpointError
from featcache.evaluate.accumulator import POOLED_LABEL, MetricAccumulator
from featcache.evaluate.metrics import CONVENTION_TEXT, METRICS
from featcache.runs import Run, ScoredFolder

if TYPE_CHECKING:  # scikit-learn loads only where classification datasets are scored
    from featcache.evaluate.class_scores import ClassificationScores

EVAL_FORMAT = "featcache-eval/1"
PER_IMAGE_COLUMNS = ("id", "dataset", "split", *METRICS, "hd95_unit", "pred_pixels", "gt_pixels")
CLASS_COLUMNS = ("id", "dataset", "split", "true_class", "predicted_class")  # then p_<class>


def eval_overlay_path(run_dir: Path, dataset: str, sample_id: str) -> Path:
    """Where eval writes (and report looks for) the overlay of one sample."""
    return Run(run_dir).eval_overlay(dataset, sample_id)


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def summary_dict(accumulator: MetricAccumulator, info: dict[str, Any] | None = None,
                 classification: ClassificationScores | None = None) -> dict[str, Any]:
    """What summary.json holds (NaN as None); `summary_table` and `classification_table` print it.
    The classification keys are present only when classification datasets were scored."""
    extra: dict[str, Any] = {}
    if classification is not None and len(classification):
        from featcache.evaluate.classification import CLASSIFICATION_METRICS

        extra = {"classification_metrics": [*CLASSIFICATION_METRICS, "kappa"],
                 "classification": [{k: _nan_to_none(v) for k, v in row.items()}
                                    for row in classification.summary_rows()]}
    return {
        "format": EVAL_FORMAT,
        "empty_convention": accumulator.empty,
        "empty_convention_text": CONVENTION_TEXT[accumulator.empty],
        "pooled_dice_label": POOLED_LABEL,
        "metrics": list(METRICS),
        "groups": [{k: _nan_to_none(v) for k, v in row.items()} for row in accumulator.summary_rows()],
        **extra,
        "info": info or {},
    }


def _write_csv(path: Path, columns: list[str] | tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if _nan_to_none(v) is None else v for k, v in row.items()})


def write_metric_files(out: Path, accumulator: MetricAccumulator, info: dict[str, Any] | None = None,
                       classification: ClassificationScores | None = None) -> tuple[Path, Path]:
    """Write per_image.csv and summary.json into the folder `out` (eval and predict --masks both
    use it), and per_image_classes.csv when classification datasets were scored; `info`
    (checkpoint, epoch, threshold, …) is stored as is in the summary."""
    folder = ScoredFolder(Path(out))
    folder.path.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder.per_image_csv, folder.summary_json
    columns = list(PER_IMAGE_COLUMNS)
    if accumulator.has_classes:
        columns.insert(columns.index("split") + 1, "class")
    _write_csv(csv_path, columns, accumulator.per_image_rows())
    folder.per_image_classes_csv.unlink(missing_ok=True)  # never a stale one beside new scores
    if classification is not None and len(classification):
        _write_csv(folder.per_image_classes_csv, [*CLASS_COLUMNS, *classification.prob_columns()],
                   classification.per_image_rows())
    summary = summary_dict(accumulator, info, classification)
    json_path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return csv_path, json_path


def write_eval_outputs(run_dir: Path, accumulator: MetricAccumulator, info: dict[str, Any] | None = None,
                       classification: ClassificationScores | None = None) -> tuple[Path, Path]:
    """per_image.csv and summary.json (and per_image_classes.csv) under RUN/eval. Returns the
    first two paths."""
    return write_metric_files(Run(run_dir).eval.path, accumulator, info, classification)


def read_eval_summary(run_dir: Path, split: str = "test") -> dict[str, Any] | None:
    """The summary.json of `featcache eval` on that split (RUN/eval, RUN/eval-SPLIT) as a dict
    (nulls stay None), or None when that split has not been evaluated."""
    return read_summary(Run(run_dir).eval_of(split).path)


def read_summary(folder: Path) -> dict[str, Any] | None:
    """The summary.json that `write_metric_files` wrote into `folder`, or None when absent."""
    path = ScoredFolder(Path(folder)).summary_json
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); "
                              "re-run `featcache eval`") from None
    if not isinstance(summary, dict) or summary.get("format") != EVAL_FORMAT:
        raise CheckpointError(f"{path} is not a {EVAL_FORMAT} summary; re-run `featcache eval`")
    return summary


def read_per_image(run_dir: Path, split: str = "test") -> list[dict[str, Any]] | None:
    """per_image.csv of eval on that split with metrics as floats (empty cells as NaN), or None
    when absent."""
    path = Run(run_dir).eval_of(split).per_image_csv
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not set(PER_IMAGE_COLUMNS) <= set(rows[0]):
        raise CheckpointError(f"{path} lacks columns {sorted(set(PER_IMAGE_COLUMNS) - set(rows[0]))}; "
                              "re-run `featcache eval`")
    for row in rows:
        row.setdefault("class", "")  # binary datasets, and eval outputs from before classes
        for name in METRICS:
            row[name] = float(row[name]) if row[name] not in ("", None) else math.nan
    return rows


def read_per_image_classes(run_dir: Path, split: str = "test") -> list[dict[str, Any]] | None:
    """per_image_classes.csv of eval on that split with the p_<class> cells as floats (None where
    empty), or None when eval scored no classification dataset."""
    path = Run(run_dir).eval_of(split).per_image_classes_csv
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in [k for k in row if k.startswith("p_")]:
            row[key] = float(row[key]) if row[key] not in ("", None) else None
    return rows
