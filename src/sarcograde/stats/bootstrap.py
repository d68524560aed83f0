"""Patient-level bootstrap: percentile confidence intervals and the ROC confidence band.

Patients are drawn with replacement (not stratified, so the class balance varies between
resamples as it would between cohorts). A resample where a statistic is undefined, e.g. the AUC
of a resample with one class only, is skipped for that statistic and counted.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .metrics import roc_curve

Statistic = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]
CHUNK = 256  # resamples evaluated at once; bounds memory on large cohorts


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n)`` patient indices drawn with replacement, reproducible from `seed`."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap(statistic: Statistic, y, p, indices: np.ndarray) -> dict[str, np.ndarray]:
    """`statistic` (a function of stacked ``(y, p)``) on each resample: name -> values."""
    y, p = np.asarray(y), np.asarray(p, float)
    parts = [statistic(y[chunk], p[chunk]) for chunk in np.array_split(
        indices, max(1, -(-len(indices) // CHUNK)))]
    return {name: np.concatenate([np.atleast_1d(part[name]) for part in parts])
            for name in parts[0]}


def percentile_ci(samples, level: float = 0.95) -> tuple[list[float] | None, int]:
    """Percentile interval over the finite resamples, and how many there were."""
    samples = np.asarray(samples, float)
    valid = samples[np.isfinite(samples)]
    if valid.size == 0:
        return None, 0
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(valid, [tail, 100 - tail])
    return [float(low), float(high)], int(valid.size)


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The piecewise-linear ROC curve's TPR at each false positive rate in `grid`.

    At a vertical step (several points with one FPR) the upper point is taken.
    """
    k = np.searchsorted(fpr, grid, side="right") - 1
    nxt = np.minimum(k + 1, len(fpr) - 1)
    run = fpr[nxt] - fpr[k]
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(run > 0, (tpr[nxt] - tpr[k]) / run, 0.0)
    return tpr[k] + slope * (grid - fpr[k])


def roc_band(y, p, indices: np.ndarray, grid: np.ndarray, level: float = 0.95
             ) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the TPR at fixed FPRs over the resamples with both classes."""
    y, p = np.asarray(y, bool), np.asarray(p, float)
    curves = []
    for idx in indices:
        yi = y[idx]
        if yi.all() or not yi.any():
            continue
        fpr, tpr, _ = roc_curve(yi, p[idx])
        curves.append(tpr_at(fpr, tpr, grid))
    if not curves:
        nan = np.full(len(grid), np.nan)
        return nan, nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(np.stack(curves), [tail, 100 - tail], axis=0)
    return low, high
