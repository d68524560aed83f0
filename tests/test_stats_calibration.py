"""Logistic recalibration and the reliability curve."""

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from sarcograde.stats import (calibration_intercept, calibration_slope, reliability_curve,
                              wilson_interval)


def _simulated(n: int, seed: int, slope: float = 1.0, shift: float = 0.0):
    """Predictions p and labels drawn with P(y = 1) = expit(shift + slope * logit(p))."""
    rng = np.random.default_rng(seed)
    p = expit(rng.normal(0, 1.5, n))
    y = (rng.random(n) < expit(shift + slope * logit(p))).astype(int)
    return y, p


def test_perfectly_calibrated_data_give_slope_one_intercept_zero():
    y, p = _simulated(20000, 0)
    assert calibration_slope(y, p) == pytest.approx(1.0, abs=0.05)
    assert calibration_intercept(y, p) == pytest.approx(0.0, abs=0.05)


def test_overconfident_model_has_slope_below_one_and_shift_is_seen():
    y, p = _simulated(20000, 1, slope=0.5, shift=0.7)
    assert calibration_slope(y, p) == pytest.approx(0.5, abs=0.05)
    assert calibration_intercept(y, p) > 0.3


def test_fits_equal_an_unpenalised_scikit_learn_logistic_regression():
    y, p = _simulated(500, 2, slope=0.8, shift=-0.3)
    x = logit(p)[:, None]
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(x, y)
    assert calibration_slope(y, p) == pytest.approx(reference.coef_[0, 0], abs=1e-5)
    # intercept with the slope fixed at 1: maximise the likelihood in a alone (score equation)
    a = calibration_intercept(y, p)
    assert np.sum(y - expit(a + logit(p))) == pytest.approx(0.0, abs=1e-6)


def test_stacked_fits_and_degenerate_cases_give_nan():
    y, p = _simulated(300, 3)
    y_sep = (p > 0.5).astype(int)  # complete separation: no finite maximum-likelihood fit
    stacked = calibration_slope(np.stack([y, np.ones_like(y), y_sep]), np.stack([p, p, p]))
    assert stacked[0] == pytest.approx(calibration_slope(y, p))
    assert np.isnan(stacked[1]) and np.isnan(stacked[2])
    assert np.isnan(calibration_intercept(np.zeros(10), np.full(10, 0.3)))


def test_reliability_curve_counts_and_means():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.55, 0.65, 0.95, 1.0])
    curve = reliability_curve(y, p, n_bins=2)
    assert curve["count"].tolist() == [2, 4]
    np.testing.assert_allclose(curve["mean_predicted"], [0.1, (0.55 + 0.65 + 0.95 + 1.0) / 4])
    np.testing.assert_allclose(curve["observed"], [0.0, 0.75])
    assert np.all(curve["observed_low"] <= curve["observed"])
    assert np.all(curve["observed"] <= curve["observed_high"])


def test_wilson_interval_published_value():
    # Newcombe, Stat Med 1998;17:857-872, Table I: 81/263 -> 0.2553 to 0.3662
    low, high = wilson_interval(81, 263)
    assert (round(float(low), 4), round(float(high), 4)) == (0.2553, 0.3662)


@pytest.mark.parametrize("n", [1, 7, 10, 13, 40, 1000])
def test_wilson_interval_holds_the_observed_share_at_the_extremes(n):
    """At 0 of n and n of n, float rounding must not put a bound past the observed share (a
    negative error bar in the calibration plot)."""
    low, high = wilson_interval(np.array([0, n]), np.array([n, n]))
    assert low[0] == 0.0 and high[1] == 1.0
    assert 0.0 < high[0] < 1.0 and 0.0 < low[1] < 1.0
