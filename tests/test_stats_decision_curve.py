"""Decision curves: net benefit from the confusion counts written out by hand, treat-all from
the prevalence, and the bootstrap band around the estimate."""

import numpy as np
import pytest

from sarcograde.stats import THRESHOLDS, decision_curve, net_benefit, resample_indices, treat_all


def _cohort(n=60, seed=3):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    p = np.clip(0.4 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    return y, p


def _by_hand(y, p, t):
    """Net benefit from the 2x2 table of treating p > t, one patient at a time."""
    tp = fp = 0
    for label, prob in zip(y, p):
        if prob > t:
            tp += label == 1
            fp += label == 0
    return tp / len(y) - fp / len(y) * t / (1 - t)


def test_thresholds_are_005_to_095_by_001():
    assert THRESHOLDS[0] == 0.05 and THRESHOLDS[-1] == 0.95 and len(THRESHOLDS) == 91
    assert np.allclose(np.diff(THRESHOLDS), 0.01)


@pytest.mark.parametrize("t", [0.05, 0.2, 0.37, 0.5, 0.8, 0.95])
def test_net_benefit_equals_the_confusion_counts(t):
    y, p = _cohort()
    assert net_benefit(y, p, t) == pytest.approx(_by_hand(y, p, t), abs=1e-12)
    curve = net_benefit(y, p)
    k = int(np.argmin(np.abs(THRESHOLDS - t)))
    assert curve[k] == pytest.approx(_by_hand(y, p, THRESHOLDS[k]), abs=1e-12)


def test_a_patient_exactly_at_the_threshold_is_not_treated():
    y, p = np.array([1, 0, 1]), np.array([0.3, 0.3, 0.9])
    assert net_benefit(y, p, 0.3) == pytest.approx(1 / 3)  # only the 0.9 patient is treated


def test_treat_all_is_prevalence_minus_weighted_false_positives():
    y, _ = _cohort()
    prevalence = y.mean()
    expected = prevalence - (1 - prevalence) * THRESHOLDS / (1 - THRESHOLDS)
    assert treat_all(y) == pytest.approx(expected, abs=1e-12)
    # treating everybody is the model that calls every patient positive
    assert treat_all(y) == pytest.approx(net_benefit(y, np.ones(len(y))), abs=1e-12)


def test_stacked_resamples_equal_one_at_a_time_and_band_holds_the_estimate():
    y, p = _cohort()
    indices = resample_indices(len(y), 300, 1)
    stacked = net_benefit(y[indices], p[indices])
    assert stacked.shape == (300, len(THRESHOLDS))
    assert stacked[17] == pytest.approx(net_benefit(y[indices[17]], p[indices[17]]))
    curve = decision_curve(y, p, indices)
    assert np.all(curve["low"] <= curve["net_benefit"] + 1e-12)
    assert np.all(curve["net_benefit"] <= curve["high"] + 1e-12)
    assert np.any(curve["high"] - curve["low"] > 0.05)  # a real band, not the estimate twice
    assert curve["low"] == pytest.approx(np.percentile(stacked, 2.5, axis=0))


def test_threshold_outside_zero_one_is_undefined():
    y, p = _cohort()
    assert np.isnan(net_benefit(y, p, 1.0)) and np.isnan(treat_all(y, 0.0))
