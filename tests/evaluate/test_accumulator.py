"""MetricAccumulator aggregation and the eval output files the `eval` command writes."""

import json
import math

import numpy as np
import pytest

from featcache.cli.common import summary_table
from featcache.errors import CheckpointError, ConfigError
from featcache.evaluate.accumulator import ALL_DATASETS, POOLED_LABEL, MetricAccumulator
from featcache.evaluate.metrics import EMPTY_AS_ONE, EMPTY_EXCLUDED
from featcache.evaluate.outputs import read_eval_summary, read_per_image, write_eval_outputs


def _mask(rows: slice, shape=(4, 4)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[rows] = True
    return m


def _filled(empty: str) -> MetricAccumulator:
    acc = MetricAccumulator(empty=empty)
    acc.add("a", "busi", "test", _mask(slice(0, 2)), _mask(slice(1, 3)))  # dice 0.5, 4 TP of 8+8
    acc.add("b", "busi", "test", _mask(slice(0, 4)), _mask(slice(0, 4)))  # dice 1, 16 TP of 16+16
    acc.add("c", "busi", "test", _mask(slice(0, 0)), _mask(slice(0, 0)))  # both empty
    acc.add("d", "kvasir", "val", _mask(slice(0, 1)), _mask(slice(0, 0)), spacing=(0.5, 0.5))
    return acc


def _row(acc, dataset, split):
    return next(r for r in acc.summary_rows() if r["dataset"] == dataset and r["split"] == split)


def test_mean_median_and_pooled_dice_with_empty_as_one():
    row = _row(_filled(EMPTY_AS_ONE), "busi", "test")
    assert row["n"] == 3 and row["n_dice"] == 3
    assert row["dice_mean"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert row["dice_median"] == 1.0
    assert row["dice_std"] == pytest.approx(np.std([0.5, 1, 1]))
    assert row["pooled_dice"] == pytest.approx(2 * (4 + 16) / (8 + 8 + 16 + 16))
    assert row["hd95_unit"] == "px"


def test_empty_excluded_drops_both_empty_images_from_means():
    acc = _filled(EMPTY_EXCLUDED)
    row = _row(acc, "busi", "test")
    assert row["n"] == 3 and row["n_dice"] == 2
    assert row["dice_mean"] == pytest.approx(0.75)
    kv = _row(acc, "kvasir", "val")  # a false alarm is still scored, as 0, in both conventions
    assert kv["dice_mean"] == 0.0 and kv["hd95_unit"] == "mm"
    assert kv["hd95_mean"] == pytest.approx(math.hypot(2.0, 2.0))


def test_groups_add_all_datasets_per_split():
    groups = _filled(EMPTY_AS_ONE).groups()
    assert groups == [("busi", "test", ""), ("kvasir", "val", ""), (ALL_DATASETS, "val", ""),
                      (ALL_DATASETS, "test", "")]


def test_unknown_convention_is_a_config_error():
    with pytest.raises(ConfigError, match="empty_as_one"):
        MetricAccumulator(empty="whatever")


def test_eval_outputs_roundtrip(tmp_path):
    acc = _filled(EMPTY_EXCLUDED)
    csv_path, json_path = write_eval_outputs(tmp_path, acc, {"checkpoint": "best", "threshold": 0.5})
    assert csv_path == tmp_path / "eval" / "per_image.csv"
    strict = json.loads(json_path.read_text())  # NaN became null: valid JSON for any reader
    assert strict["info"]["checkpoint"] == "best"
    summary = read_eval_summary(tmp_path)
    assert summary["empty_convention"] == EMPTY_EXCLUDED and summary["pooled_dice_label"] == POOLED_LABEL
    rows = read_per_image(tmp_path)
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[0]["dice"] == pytest.approx(0.5) and math.isnan(rows[2]["dice"])


def test_missing_and_damaged_summaries(tmp_path):
    assert read_eval_summary(tmp_path) is None and read_per_image(tmp_path) is None
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "summary.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="summary.json"):
        read_eval_summary(tmp_path)


def test_rich_table_states_the_convention(tmp_path):
    from rich.console import Console

    write_eval_outputs(tmp_path, _filled(EMPTY_EXCLUDED))
    console = Console(record=True, width=200)
    console.print(summary_table(read_eval_summary(tmp_path)))
    text = console.export_text()
    assert "excluded (NaN, nnU-Net style)" in text and "MultiMedDistill" in text
    assert "0.750 ± 0.250" in text  # busi/test Dice over the two scored images


def test_binary_outputs_have_no_class_column_and_no_classification_keys(tmp_path):
    """Binary runs write per_image.csv and summary.json exactly as before classes existed."""
    from featcache.evaluate.outputs import PER_IMAGE_COLUMNS

    csv_path, json_path = write_eval_outputs(tmp_path, _filled(EMPTY_AS_ONE))
    assert tuple(csv_path.read_text().splitlines()[0].split(",")) == PER_IMAGE_COLUMNS
    summary = json.loads(json_path.read_text())
    assert set(summary) == {"format", "empty_convention", "empty_convention_text", "pooled_dice_label",
                            "metrics", "groups", "info"}
    assert not any("class" in g for g in summary["groups"])
    assert not (tmp_path / "eval" / "per_image_classes.csv").exists()


def test_label_maps_add_a_row_per_class_and_their_mean():
    acc = MetricAccumulator(empty=EMPTY_EXCLUDED)
    gt = np.zeros((8, 8), np.uint8)
    gt[0:4, 0:4] = 1  # class "a" present; class "b" absent in both: NaN under empty_excluded
    pred = np.zeros_like(gt)
    pred[0:4, 0:2] = 1
    mean = acc.add_label_map("x", "ds", "test", pred, gt, ("a", "b"))
    assert mean["dice"] == pytest.approx(2 * 8 / (8 + 16))  # the NaN class is left out of the mean
    rows = {r["class"]: r for r in acc.per_image_rows()}
    assert set(rows) == {"a", "b", "mean"} and math.isnan(rows["b"]["dice"])
    assert [(g["dataset"], g.get("class")) for g in acc.summary_rows()] == [
        ("ds", "mean"), ("ds", "a"), ("ds", "b")]
    acc.add("y", "other", "test", pred > 0, gt > 0)  # a binary dataset beside it
    every = [g for g in acc.summary_rows() if g["dataset"] == ALL_DATASETS][0]
    assert every["n"] == 2 and "class" not in every  # each image once: x's mean and y
    with pytest.raises(ConfigError, match="label map must hold class values 0..2"):
        acc.add_label_map("z", "ds", "test", pred + 3, gt, ("a", "b"))
