"""Classification metrics of a binary prediction: confusion counts, ROC, AUC, Youden threshold.

Class 1 is high grade. A patient is called high grade when ``p_high > threshold``; with the
default 0.5 this is the argmax of the two softmax outputs (a tie goes to low grade, as argmax does).
The metric functions accept one prediction, shape ``(n,)``, or a stack of resamples, ``(..., n)``,
and return NaN where a metric is undefined (e.g. sensitivity without high-grade patients).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

METRICS = ("auc", "precision", "sensitivity", "specificity", "f1", "accuracy", "brier")


def _ratio(numerator, denominator):
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1),
                        np.nan)[()]


def classify(p, threshold: float = 0.5) -> np.ndarray:
    """1 (high grade) where ``p > threshold``, else 0."""
    return (np.asarray(p, float) > threshold).astype(int)


def confusion_counts(y, predicted) -> dict[str, np.ndarray]:
    """True/false negatives/positives along the last axis: keys tn, fp, fn, tp."""
    y, predicted = np.asarray(y, bool), np.asarray(predicted, bool)
    return {"tn": (~y & ~predicted).sum(-1), "fp": (~y & predicted).sum(-1),
            "fn": (y & ~predicted).sum(-1), "tp": (y & predicted).sum(-1)}


def auc(y, p):
    """Area under the ROC curve as the Mann-Whitney statistic (ties count one half).

    NaN where the last axis holds one class only.
    """
    y = np.asarray(y, bool)
    ranks = rankdata(np.asarray(p, float), axis=-1)  # midranks: a tied pair counts one half
    n_pos = y.sum(-1)
    n_neg = y.shape[-1] - n_pos
    u = (ranks * y).sum(-1) - n_pos * (n_pos + 1) / 2
    return _ratio(u, n_pos * n_neg)


def binary_metrics(y, p, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """AUC, precision, sensitivity, specificity, F1, accuracy and Brier score at `threshold`."""
    y, p = np.asarray(y, int), np.asarray(p, float)
    c = confusion_counts(y, classify(p, threshold))
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    return {
        "auc": auc(y, p),
        "precision": _ratio(tp, tp + fp),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, y.shape[-1]),
        "brier": np.mean((p - y) ** 2, axis=-1)[()],
    }


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct score, calling ``p >= t`` positive.

    Returns ``(fpr, tpr, thresholds)`` from (0, 0) at ``t = inf`` to (1, 1) at the lowest score.
    """
    y, p = np.asarray(y, bool), np.asarray(p, float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("an ROC curve needs both classes")
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p) - 1]
    tp = np.cumsum(y_sorted)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    return (np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], np.r_[np.inf, p_sorted[last_of_tie]])


def youden_threshold(y, p) -> float:
    """The threshold t maximising sensitivity + specificity - 1 with the rule ``p > t``.

    The cut is placed halfway between the last score called high and the next lower score, so that
    it transfers to another cohort without sitting on one training patient's value.
    """
    fpr, tpr, thresholds = roc_curve(y, p)
    best = int(np.argmax(tpr - fpr))   # first maximum: the highest threshold among ties
    scores = thresholds[1:]            # distinct scores, descending
    if best == 0:
        return float(scores[0])
    if best == len(scores):
        return float(np.nextafter(scores[-1], -np.inf))
    return float((scores[best - 1] + scores[best]) / 2)
