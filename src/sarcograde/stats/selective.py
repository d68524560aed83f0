"""Selective prediction: keep the patients whose prediction is most reliable, abstain on the rest.

The reliability score is a spread (the ensemble's SD of p_high over its fold models): lower is
more reliable. Keeping a share c of n patients keeps the ``ceil(c * n)`` with the lowest spread,
ties in the order given (a stable sort), so the same data keep the same patients. In a
bootstrap resample the selection is redone among the resampled patients, so that the interval
covers the selection as well as the metric.
"""

from __future__ import annotations

import math

import numpy as np

from .metrics import auc, classify


def n_kept(n: int, coverage: float) -> int:
    """How many of n patients a coverage keeps: ceil(coverage * n), at least one."""
    if not 0 < coverage <= 1:
        raise ValueError("coverage must lie in (0, 1]")
    return max(1, math.ceil(round(coverage * n, 9)))


def most_reliable(spread, indices: np.ndarray, k: int) -> np.ndarray:
    """Of each row of patient `indices` (``(..., n)``), the k with the lowest spread, in
    order of spread (``(..., k)``)."""
    spread = np.asarray(spread, float)
    order = np.argsort(spread[indices], axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(indices, order, axis=-1)


def selective_curve(y, p, spread, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """AUC and accuracy of the k most reliable patients for every k = 1..n.

    Returns ``n_kept``, ``coverage`` (k / n), ``max_spread`` (the largest spread kept), ``auc``
    (NaN while the kept patients hold one class) and ``accuracy`` (at ``p > threshold``)."""
    y, p, spread = np.asarray(y, int), np.asarray(p, float), np.asarray(spread, float)
    n = len(y)
    order = most_reliable(spread, np.arange(n), n)
    kept = np.arange(1, n + 1)
    correct = np.cumsum(classify(p[order], threshold) == y[order])
    return {"n_kept": kept, "coverage": kept / n, "max_spread": spread[order],
            "auc": np.array([auc(y[order[:k]], p[order[:k]]) for k in kept]),
            "accuracy": correct / kept}
