"""Classification metrics on six hand-checkable predictions, and their edge cases."""

import math

import numpy as np
import pytest

from featcache.errors import ConfigError
from featcache.evaluate.classification import (
    accuracy,
    balanced_accuracy,
    classification_metrics,
    confusion_matrix,
    macro_ovr_auc,
    quadratic_weighted_kappa,
    weighted_prf,
)

# Three classes, two samples each; confusion rows (true) [1 1 0], [0 2 0], [1 0 1].
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])


def test_confusion_accuracy_and_balanced_accuracy_by_hand():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert accuracy(Y_TRUE, Y_PRED, 3) == pytest.approx(4 / 6)
    assert balanced_accuracy(Y_TRUE, Y_PRED, 3) == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_weighted_precision_recall_f1_by_hand():
    # Per class: precision 1/2, 2/3, 1; recall 1/2, 1, 1/2; F1 1/2, 4/5, 2/3; equal supports.
    prec, rec, f1 = weighted_prf(Y_TRUE, Y_PRED, 3)
    assert prec == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert rec == pytest.approx(4 / 6)
    assert f1 == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)


def test_quadratic_weighted_kappa_by_hand():
    # Weights (i-j)^2/4. Observed disagreement: 1 * 1/4 (0->1) + 1 * 1 (2->0) = 5/4. Expected from
    # the margins (rows 2,2,2; columns 2,3,1; N=6): 7/4. kappa = 1 - (5/4)/(7/4) = 2/7.
    assert quadratic_weighted_kappa(Y_TRUE, Y_PRED, 3) == pytest.approx(2 / 7)
    assert quadratic_weighted_kappa(Y_TRUE, Y_TRUE, 3) == pytest.approx(1.0)
    assert quadratic_weighted_kappa([2, 2], [2, 2], 5) == 1.0  # one grade everywhere, agreed
    # A two-grade miss costs four times a one-grade miss.
    near = quadratic_weighted_kappa([0, 1, 2, 2], [0, 1, 2, 1], 3)
    far = quadratic_weighted_kappa([0, 1, 2, 2], [0, 1, 2, 0], 3)
    assert far < near


def test_macro_ovr_auc_by_hand_and_absent_classes():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8])  # positives 0.4, 0.8 vs negatives 0.1, 0.6: 3 of 4 pairs
    probs = np.stack([1 - p1, p1], axis=1)
    assert macro_ovr_auc(y, probs) == pytest.approx(0.75)
    # A declared class that never occurs has no AUC: the mean is over the classes that do.
    with_absent = np.concatenate([probs * 0.9, np.full((4, 1), 0.1)], axis=1)
    assert macro_ovr_auc(y, with_absent) == pytest.approx(0.75)
    assert math.isnan(macro_ovr_auc([1, 1], [[0.2, 0.8], [0.4, 0.6]]))  # one class only


def test_classification_metrics_use_the_most_probable_class():
    probs = np.eye(3)[Y_PRED] * 0.7 + 0.1
    result = classification_metrics(Y_TRUE, probs, graded=True)
    assert set(result) == {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc", "kappa"}
    assert result["accuracy"] == pytest.approx(4 / 6) and result["kappa"] == pytest.approx(2 / 7)
    assert "kappa" not in classification_metrics(Y_TRUE, probs)
    # A class never predicted: precision 0 for it (zero_division=0), no NaN anywhere.
    never = classification_metrics([0, 1, 2], [[0.9, 0.1, 0], [0.2, 0.8, 0], [0.6, 0.4, 0]])
    assert not any(math.isnan(v) for v in never.values())


@pytest.mark.parametrize("y_true, y_pred, match", [
    ([0, 3], [0, 1], r"labels must be class indices 0..2"),
    ([0, 1], [0, -1], r"predictions must be class indices 0..2"),
    ([0, 1], [0], r"must be equal \(N,\) arrays"),
    ([], [], "no samples to score"),
])
def test_bad_inputs_are_one_line(y_true, y_pred, match):
    with pytest.raises(ConfigError, match=match):
        accuracy(y_true, y_pred, 3)


def test_probabilities_must_match_the_labels():
    with pytest.raises(ConfigError, match=r"\(N, K\) with N = 3 labels"):
        classification_metrics([0, 1, 1], np.ones((2, 2)) / 2)
