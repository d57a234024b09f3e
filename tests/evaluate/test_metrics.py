"""Metrics: hand-computed 4x4 cases, the empty-mask conventions, and medpy as a reference."""

import math

import numpy as np
import pytest

from featcache.errors import ConfigError
from featcache.evaluate.metrics import (
    EMPTY_AS_ONE,
    EMPTY_EXCLUDED,
    all_metrics,
    dice,
    hd95,
    iou,
    precision,
    recall,
)


def _rows(*rows: int) -> np.ndarray:
    m = np.zeros((4, 4), dtype=np.uint8)
    m[list(rows)] = 1
    return m


def test_half_overlap_by_hand():
    pred, gt = _rows(0, 1), _rows(1, 2)  # TP=4, FP=4, FN=4
    assert dice(pred, gt) == pytest.approx(0.5)
    assert iou(pred, gt) == pytest.approx(1 / 3)
    assert precision(pred, gt) == pytest.approx(0.5)
    assert recall(pred, gt) == pytest.approx(0.5)
    # Surfaces are the whole 2-row blocks: half the distances are 0, half are one row.
    assert hd95(pred, gt) == pytest.approx(1.0)
    assert hd95(pred, gt, spacing=(2.0, 0.5)) == pytest.approx(2.0)


def test_asymmetric_precision_recall_by_hand():
    pred, gt = _rows(0), _rows(0, 1, 2)  # TP=4, FP=0, FN=8
    assert precision(pred, gt) == 1.0
    assert recall(pred, gt) == pytest.approx(1 / 3)
    assert dice(pred, gt) == pytest.approx(8 / 16)


def test_single_pixels_hd95_in_pixels_and_mm():
    pred, gt = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    pred[0, 0], gt[3, 3] = True, True
    assert dice(pred, gt) == 0.0
    assert hd95(pred, gt) == pytest.approx(math.sqrt(18))
    assert hd95(pred, gt, spacing=(1.0, 2.0)) == pytest.approx(math.sqrt(9 + 36))


def test_identical_masks_are_perfect():
    m = _rows(1, 2)
    assert all_metrics(m, m) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95": 0.0}


def test_both_empty_follows_the_convention():
    z = np.zeros((4, 4), np.uint8)
    assert all_metrics(z, z, empty=EMPTY_AS_ONE) == {
        "dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95": 0.0}
    assert all(math.isnan(v) for v in all_metrics(z, z, empty=EMPTY_EXCLUDED).values())


@pytest.mark.parametrize("empty", [EMPTY_AS_ONE, EMPTY_EXCLUDED])
def test_one_empty_is_the_worst_value_in_both_conventions(empty):
    z, m = np.zeros((4, 4), np.uint8), _rows(1)
    missed = all_metrics(z, m, spacing=(3.0, 4.0), empty=empty)  # nothing predicted
    assert missed["dice"] == 0.0 and missed["precision"] == 0.0 and missed["recall"] == 0.0
    assert missed["hd95"] == pytest.approx(math.hypot(12.0, 16.0))  # image diagonal in mm
    false_alarm = all_metrics(m, z, empty=empty)
    assert false_alarm["iou"] == 0.0 and false_alarm["recall"] == 0.0
    assert false_alarm["hd95"] == pytest.approx(math.hypot(4, 4))


def test_bad_inputs_raise_config_errors():
    with pytest.raises(ConfigError, match="equal"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ConfigError, match="convention"):
        dice(np.zeros((4, 4)), np.zeros((4, 4)), empty="zero")
    with pytest.raises(ConfigError, match="positive"):
        hd95(_rows(0), _rows(1), spacing=(0.0, 1.0))


def _blobs(rng: np.random.Generator, shape=(48, 40)) -> np.ndarray:
    """Random masks with some structure: thresholded smoothed noise."""
    from scipy import ndimage
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=3)
    return noise > np.quantile(noise, rng.uniform(0.5, 0.9))


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_medpy(seed):
    binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(seed)
    pred, gt = _blobs(rng), _blobs(rng)
    spacing = (float(rng.uniform(0.3, 2)), float(rng.uniform(0.3, 2)))
    assert dice(pred, gt) == pytest.approx(binary.dc(pred, gt), abs=1e-12)
    assert iou(pred, gt) == pytest.approx(binary.jc(pred, gt), abs=1e-12)
    assert precision(pred, gt) == pytest.approx(binary.precision(pred, gt), abs=1e-12)
    assert recall(pred, gt) == pytest.approx(binary.recall(pred, gt), abs=1e-12)
    assert hd95(pred, gt) == pytest.approx(binary.hd95(pred, gt), abs=1e-9)
    assert hd95(pred, gt, spacing) == pytest.approx(binary.hd95(pred, gt, voxelspacing=spacing), abs=1e-9)


def test_volumes_are_scored_in_3d_with_a_voxel_size():
    pred = np.zeros((6, 6, 4), bool)
    gt = np.zeros((6, 6, 4), bool)
    pred[1:4, 1:4, 0:2] = True
    gt[1:4, 1:4, 2:4] = True  # the same cube, moved two slices along z
    assert dice(pred, gt) == 0.0
    # Every nearest surface voxel lies straight along z (2 voxels away): 2 x 2.5 mm with the voxel size.
    assert hd95(pred, gt) == pytest.approx(2.0)
    assert hd95(pred, gt, spacing=(1.0, 1.0, 2.5)) == pytest.approx(5.0)
    with pytest.raises(ConfigError, match="3 positive values"):
        hd95(pred, gt, spacing=(1.0, 1.0))
