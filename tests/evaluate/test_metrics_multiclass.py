"""Per-class Dice and metrics of multi-class label maps, on 4x4 maps checkable by hand."""

import math

import numpy as np
import pytest

from featcache.errors import ConfigError
from featcache.evaluate.metrics import EMPTY_EXCLUDED, dice_per_class, per_class_metrics

GT = np.array([[1, 1, 0, 0],
               [2, 2, 0, 0],
               [0, 0, 0, 0],
               [0, 0, 0, 0]])
PRED = np.array([[1, 0, 0, 0],
                 [2, 2, 2, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]])


def test_dice_per_class_by_hand():
    # class 1: TP 1, FN 1 -> 2/3; class 2: TP 2, FP 1 -> 4/5; class 3 in neither map -> 1.0.
    assert dice_per_class(PRED, GT, 3).tolist() == pytest.approx([2 / 3, 4 / 5, 1.0])
    excluded = dice_per_class(PRED, GT, 3, empty=EMPTY_EXCLUDED)
    assert excluded[:2].tolist() == pytest.approx([2 / 3, 4 / 5]) and math.isnan(excluded[2])
    wrong = PRED.copy()
    wrong[3, 3] = 3  # class 3 predicted where the ground truth has none: a failure, 0
    assert dice_per_class(wrong, GT, 3)[2] == 0.0


def test_per_class_metrics_score_each_class_as_a_binary_mask():
    rows = per_class_metrics(PRED, GT, 2, spacing=(1.0, 2.0))
    assert len(rows) == 2 and rows[0]["dice"] == pytest.approx(2 / 3)
    assert rows[1]["iou"] == pytest.approx(2 / 3) and rows[1]["recall"] == 1.0
    assert rows[0]["hd95"] >= 0.0
    volume = np.stack([GT, GT], axis=2)
    assert dice_per_class(volume, volume, 2).tolist() == [1.0, 1.0]  # volumes too


def test_label_values_outside_the_classes_are_refused():
    with pytest.raises(ConfigError, match=r"prediction label map must hold class values 0..1"):
        dice_per_class(PRED, GT, 1)
    with pytest.raises(ConfigError, match="must be equal"):
        dice_per_class(PRED, GT[:2], 2)
