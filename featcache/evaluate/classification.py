"""Classification metrics: pure functions over class indices and class probabilities.

Every function takes `y_true` as (N,) class indices in 0..K-1 and either `y_pred` (N,) class
indices or `probs` (N, K) class probabilities (rows need not sum exactly to 1), with K the number
of classes the dataset declares, so a class absent from this split still has its row, column and
zero counts. The numbers come from scikit-learn; this module fixes the choices a report must state:
  * precision, recall and F1 are weighted by each class's support in `y_true` (the paper's
    choice); a class never predicted has precision 0 (sklearn's zero_division=0), not NaN;
  * AUC is one-vs-rest per class, macro-averaged over the classes that occur in `y_true` and not
    in every sample (AUC is undefined for a class without positives or without negatives); NaN if
    no class qualifies;
  * quadratic weighted kappa (the APTOS metric, for graded labels) weighs a disagreement of d
    grades by d**2; 1.0 when both sides hold one and the same grade everywhere.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics as skm

from featcache.errors import ConfigError

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc")


def _indices(values: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    """(N,) class indices in 0..K-1 as int64, or one ConfigError line."""
    a = np.asarray(values).reshape(-1)
    if a.size == 0:
        raise ConfigError(f"{name}: no samples to score")
    if not np.all((a >= 0) & (a < num_classes) & (np.mod(a, 1) == 0)):
        raise ConfigError(f"{name} must be class indices 0..{num_classes - 1}")
    return a.astype(np.int64)


def _labels(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and ranges -> (y_true, y_pred) as int64 (N,)."""
    t, p = _indices(y_true, "labels", num_classes), _indices(y_pred, "predictions", num_classes)
    if t.shape != p.shape:
        raise ConfigError(f"labels {t.shape} and predictions {p.shape} must be equal (N,) arrays")
    return t, p


def _probs(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (y_true int64 (N,), probs float64 (N, K))."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ConfigError(f"probabilities must be (N, K), got {p.shape}")
    t = _indices(y_true, "labels", p.shape[1])
    if p.shape[0] != t.size:
        raise ConfigError(f"probabilities must be (N, K) with N = {t.size} labels, got {p.shape}")
    return t, p


def accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    t, p = _labels(y_true, y_pred, num_classes)
    return float(skm.accuracy_score(t, p))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in `y_true` (absent classes have no recall)."""
    t, p = _labels(y_true, y_pred, num_classes)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": expected, not news
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(t, p))


def weighted_prf(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
                 ) -> tuple[float, float, float]:
    """(precision, recall, F1), each the support-weighted mean over classes."""
    t, p = _labels(y_true, y_pred, num_classes)
    prec, rec, f1, _ = skm.precision_recall_fscore_support(
        t, p, labels=list(range(num_classes)), average="weighted", zero_division=0)
    return float(prec), float(rec), float(f1)


def macro_ovr_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest ROC AUC of probs[:, k] (see the module docstring)."""
    t, p = _probs(y_true, probs)
    scores = [skm.roc_auc_score(t == k, p[:, k]) for k in range(p.shape[1])
              if 0 < np.count_nonzero(t == k) < t.size]
    return float(np.mean(scores)) if scores else math.nan


def quadratic_weighted_kappa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Cohen's kappa with quadratic weights over the grades 0..K-1."""
    t, p = _labels(y_true, y_pred, num_classes)
    if np.unique(np.concatenate([t, p])).size == 1:
        return 1.0  # perfect agreement on one grade; sklearn would return NaN (0 / 0)
    return float(skm.cohen_kappa_score(t, p, labels=list(range(num_classes)), weights="quadratic"))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (K, K): row = true class, column = predicted class."""
    t, p = _labels(y_true, y_pred, num_classes)
    return skm.confusion_matrix(t, p, labels=list(range(num_classes))).astype(np.int64)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, graded: bool = False
                           ) -> dict[str, float]:
    """Every metric of CLASSIFICATION_METRICS (+ "kappa" when `graded`) from (N,) labels and
    (N, K) probabilities; the prediction is the most probable class."""
    _, p = _probs(y_true, probs)
    k = p.shape[1]
    pred = p.argmax(axis=1)
    prec, rec, f1 = weighted_prf(y_true, pred, k)
    result = {"accuracy": accuracy(y_true, pred, k),
              "balanced_accuracy": balanced_accuracy(y_true, pred, k),
              "precision": prec, "recall": rec, "f1": f1, "auc": macro_ovr_auc(y_true, p)}
    if graded:
        result["kappa"] = quadratic_weighted_kappa(y_true, pred, k)
    return result
