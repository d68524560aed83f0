"""Calibration of predicted probabilities: the reliability curve and logistic recalibration.

Both recalibration numbers are logistic regressions of the true label on ``logit(p)``
(Van Calster et al., J Clin Epidemiol 2016; Steyerberg, Clinical Prediction Models):

- calibration slope: ``y ~ a + b * logit(p)``; b = 1 is ideal, b < 1 means overconfident;
- calibration intercept (calibration-in-the-large): ``y ~ a + offset(logit(p))``, slope fixed
  at 1; a = 0 is ideal, a > 0 means the risk of high grade is underestimated on average.

They are fitted by Newton's method on stacks of resamples at once, shape ``(..., n)``, and are
NaN where no finite maximum-likelihood fit exists (one class only, complete separation).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from scipy.stats import norm

EPS = 1e-6          # probabilities are clipped to [EPS, 1 - EPS] before the logit
MAX_ITER = 50
TOL = 1e-9


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _newton(y, x, fit_slope: bool) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood (a, b) of ``y ~ a + b x`` (or a with b fixed at 1); NaN if none."""
    y = np.asarray(y, float)
    batch = y.shape[:-1]
    a, b = np.zeros(batch), np.ones(batch)
    converged = np.zeros(batch, bool)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(MAX_ITER):
            mu = expit(a[..., None] + b[..., None] * x)
            w = mu * (1 - mu)
            r = y - mu
            h00, g0 = w.sum(-1), r.sum(-1)
            if fit_slope:
                h01, h11, g1 = (w * x).sum(-1), (w * x * x).sum(-1), (r * x).sum(-1)
                det = h00 * h11 - h01 ** 2
                da, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
            else:
                da, db = g0 / h00, np.zeros(batch)
            step_ok = np.isfinite(da) & np.isfinite(db) & ~converged
            a = np.where(step_ok, a + da, a)
            b = np.where(step_ok, b + db, b)
            converged |= step_ok & (np.abs(da) + np.abs(db) < TOL * (1 + np.abs(a) + np.abs(b)))
            if converged.all():
                break
    finite = converged & _has_finite_fit(y, x, fit_slope)
    return np.where(finite, a, np.nan)[()], np.where(finite, b, np.nan)[()]


def _has_finite_fit(y, x, fit_slope: bool) -> np.ndarray:
    """Whether the maximum-likelihood fit exists (Albert & Anderson, Biometrika 1984).

    With the slope fixed both classes suffice; with a free slope on one covariate the classes'
    ranges of x must overlap (no cut c with every high grade at x >= c >= every low grade's x,
    or the reverse), else the likelihood keeps growing as the coefficients go to infinity.
    """
    high = y > 0.5
    if not fit_slope:
        return high.any(-1) & ~high.all(-1)
    high_min, high_max = np.where(high, x, np.inf).min(-1), np.where(high, x, -np.inf).max(-1)
    low_min, low_max = np.where(high, np.inf, x).min(-1), np.where(high, -np.inf, x).max(-1)
    return (high_min < low_max) & (low_min < high_max)


def calibration_slope(y, p):
    """Slope b of the logistic recalibration ``y ~ a + b logit(p)`` (1 = ideal)."""
    return _newton(y, _logit(p), fit_slope=True)[1]


def calibration_intercept(y, p):
    """Calibration-in-the-large: a of ``y ~ a + offset(logit(p))`` (0 = ideal)."""
    return _newton(y, _logit(p), fit_slope=False)[0]


def recalibration_fit(y, p, fit_slope: bool) -> tuple[float, float]:
    """(a, b) of the logistic recalibration ``y ~ a + b logit(p)``, or of ``y ~ a +
    offset(logit(p))`` (b = 1) without `fit_slope`; NaN where no finite fit exists."""
    a, b = _newton(y, _logit(p), fit_slope)
    return float(a), float(b)


def recalibrated(p, a: float, b: float) -> np.ndarray:
    """The probabilities after the recalibration (a, b): ``expit(a + b logit(p))``."""
    return expit(a + b * _logit(p))


def wilson_interval(successes, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion (good coverage at the small counts of a bin)."""
    successes, n = np.asarray(successes, float), np.asarray(n, float)
    z = norm.ppf(0.5 + level / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        phat = successes / n
        centre = (phat + z ** 2 / (2 * n)) / (1 + z ** 2 / n)
        half = z / (1 + z ** 2 / n) * np.sqrt(phat * (1 - phat) / n + z ** 2 / (4 * n ** 2))
    # The interval always holds phat and lies in [0, 1]; clipping keeps float rounding
    # (1 - 1e-16 at phat = 1) from putting a bound outside, which makes negative error bars.
    return (np.clip(np.minimum(centre - half, phat), 0.0, 1.0),
            np.clip(np.maximum(centre + half, phat), 0.0, 1.0))


def reliability_curve(y, p, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Observed fraction of high grade against mean predicted probability in equal-width bins.

    Returns per bin: ``edges`` (n_bins + 1), ``count``, ``mean_predicted``, ``observed`` and the
    Wilson 95% interval ``observed_low``/``observed_high`` (NaN for an empty bin).
    """
    y, p = np.asarray(y, float), np.asarray(p, float)
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    positives = np.bincount(which, weights=y, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_predicted = np.bincount(which, weights=p, minlength=n_bins) / count
        observed = positives / count
    low, high = wilson_interval(positives, count)
    return {"edges": edges, "count": count, "mean_predicted": mean_predicted,
            "observed": observed, "observed_low": low, "observed_high": high}
