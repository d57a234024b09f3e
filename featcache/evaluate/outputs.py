"""The format of the files `featcache eval` leaves in a run directory (`Run.eval`, a
`ScoredFolder`), and how to read them back; `predict --masks` writes the same two files into its
output folder. Their names are run.py's.

  RUN/eval/per_image.csv   one row per image: id, dataset, split, dice, iou, precision, recall, hd95,
                           hd95_unit, pred_pixels, gt_pixels (NaN written as an empty cell)
  RUN/eval/summary.json    {"format": "featcache-eval/1", "empty_convention", "empty_convention_text",
                            "pooled_dice_label", "metrics", "groups": [summary rows], "info": {...}}
                           (NaN written as null)
  RUN/eval/overlays/DATASET/ID.png   optional overlays (see `eval_overlay_path`)
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from featcache.distill.run import Run, ScoredFolder
from featcache.errors import CheckpointError
from featcache.evaluate.accumulator import POOLED_LABEL, MetricAccumulator
from featcache.evaluate.metrics import CONVENTION_TEXT, METRICS

EVAL_FORMAT = "featcache-eval/1"
PER_IMAGE_COLUMNS = ("id", "dataset", "split", *METRICS, "hd95_unit", "pred_pixels", "gt_pixels")


def eval_overlay_path(run_dir: Path, dataset: str, sample_id: str) -> Path:
    """Where eval writes (and report looks for) the overlay of one sample."""
    return Run(run_dir).eval_overlay(dataset, sample_id)


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def summary_dict(accumulator: MetricAccumulator, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """What summary.json holds (NaN as None); `summary_table` prints it."""
    return {
        "format": EVAL_FORMAT,
        "empty_convention": accumulator.empty,
        "empty_convention_text": CONVENTION_TEXT[accumulator.empty],
        "pooled_dice_label": POOLED_LABEL,
        "metrics": list(METRICS),
        "groups": [{k: _nan_to_none(v) for k, v in row.items()} for row in accumulator.summary_rows()],
        "info": info or {},
    }


def write_metric_files(out: Path, accumulator: MetricAccumulator,
                       info: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write per_image.csv and summary.json into the folder `out` (eval and predict --masks both
    use it); `info` (checkpoint, epoch, threshold, …) is stored as is in the summary."""
    folder = ScoredFolder(Path(out))
    folder.path.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder.per_image_csv, folder.summary_json
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PER_IMAGE_COLUMNS)
        writer.writeheader()
        for row in accumulator.per_image_rows():
            writer.writerow({k: "" if _nan_to_none(v) is None else v for k, v in row.items()})
    json_path.write_text(json.dumps(summary_dict(accumulator, info), indent=2, allow_nan=False) + "\n")
    return csv_path, json_path


def write_eval_outputs(run_dir: Path, accumulator: MetricAccumulator,
                       info: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """per_image.csv and summary.json under RUN/eval. Returns both paths."""
    return write_metric_files(Run(run_dir).eval.path, accumulator, info)


def read_eval_summary(run_dir: Path) -> dict[str, Any] | None:
    """RUN/eval/summary.json as a dict (nulls stay None), or None when eval has not been run."""
    return read_summary(Run(run_dir).eval.path)


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


def read_per_image(run_dir: Path) -> list[dict[str, Any]] | None:
    """RUN/eval/per_image.csv with metrics as floats (empty cells as NaN), or None when absent."""
    path = Run(run_dir).eval.per_image_csv
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not set(PER_IMAGE_COLUMNS) <= set(rows[0]):
        raise CheckpointError(f"{path} lacks columns {sorted(set(PER_IMAGE_COLUMNS) - set(rows[0]))}; "
                              "re-run `featcache eval`")
    for row in rows:
        for name in METRICS:
            row[name] = float(row[name]) if row[name] not in ("", None) else math.nan
    return rows
