"""Decision curve analysis: the net benefit of treating the patients a model calls positive.

Vickers & Elkin, Med Decis Making 2006; 26:565-574. At threshold probability t a patient is
treated when ``p > t`` (the rule of every other metric here), and

    net benefit(t) = TP / n - FP / n * t / (1 - t)

(true positives gained, false positives weighed by the odds of the threshold). The references are
treating nobody (0) and treating everybody: ``prevalence - (1 - prevalence) * t / (1 - t)``.
Like the other statistics these take one prediction, shape ``(n,)``, or a stack of resamples,
``(..., n)``; an array of thresholds adds a last axis.
"""

from __future__ import annotations

import numpy as np

from .bootstrap import bootstrap

# The thresholds of the curve: 0.05 to 0.95 in steps of 0.01 (rounded, so that 0.3 is 0.3).
THRESHOLDS = np.round(np.arange(5, 96) / 100, 2)


def _odds(thresholds) -> np.ndarray:
    """t / (1 - t); NaN where t is not strictly between 0 and 1 (no net benefit is defined)."""
    t = np.asarray(thresholds, float)
    inside = (t > 0) & (t < 1)
    return np.where(inside, t / np.where(inside, 1 - t, 1), np.nan)


def net_benefit(y, p, thresholds=THRESHOLDS):
    """Net benefit of treating ``p > t``: shape ``(..., len(thresholds))``, or ``(...)`` for one
    scalar threshold."""
    y, p = np.asarray(y, bool), np.asarray(p, float)
    t = np.asarray(thresholds, float)
    treated = p[..., None, :] > np.atleast_1d(t)[:, None]       # (..., T, n)
    n = y.shape[-1]
    tp = (treated & y[..., None, :]).sum(-1)
    fp = (treated & ~y[..., None, :]).sum(-1)
    benefit = tp / n - fp / n * _odds(np.atleast_1d(t))
    return benefit[..., 0] if t.ndim == 0 else benefit


def treat_all(y, thresholds=THRESHOLDS):
    """Net benefit of treating every patient: prevalence - (1 - prevalence) * t / (1 - t)."""
    prevalence = np.asarray(y, float).mean(-1)
    t = np.asarray(thresholds, float)
    benefit = prevalence[..., None] - (1 - prevalence[..., None]) * _odds(np.atleast_1d(t))
    return benefit[..., 0] if t.ndim == 0 else benefit


def decision_curve(y, p, indices: np.ndarray, thresholds=THRESHOLDS, level: float = 0.95
                   ) -> dict[str, np.ndarray]:
    """The model's net benefit at each threshold with its pointwise percentile band over the
    bootstrap resamples `indices` (``(n_resamples, n)``, the other metrics' resamples), and the
    treat-all reference."""
    y, p = np.asarray(y, bool), np.asarray(p, float)
    samples = bootstrap(lambda yi, pi: {"net_benefit": net_benefit(yi, pi, thresholds)},
                        y, p, indices)["net_benefit"]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return {"threshold": np.asarray(thresholds, float),
            "net_benefit": net_benefit(y, p, thresholds), "low": low, "high": high,
            "treat_all": treat_all(y, thresholds)}
