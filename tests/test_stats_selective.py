"""Selective prediction: the kept patients and their metrics against a computation that sorts
the patients by spread and scores them with scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from sarcograde.stats import most_reliable, n_kept, resample_indices, selective_curve


def _cohort(n=40, seed=5):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    spread = rng.uniform(0.01, 0.3, n)
    # the more spread, the noisier the prediction: abstaining should help
    p = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 1, n) * spread * 2, 0.01, 0.99)
    return y, p, spread


def test_n_kept_is_the_ceiling_of_the_share():
    assert n_kept(40, 0.9) == 36 and n_kept(41, 0.9) == 37 and n_kept(10, 0.7) == 7
    assert n_kept(3, 0.01) == 1 and n_kept(40, 1.0) == 40
    with pytest.raises(ValueError):
        n_kept(10, 0)


def test_curve_equals_sorting_by_spread_and_scikit_learn():
    y, p, spread = _cohort()
    curve = selective_curve(y, p, spread)
    order = sorted(range(len(y)), key=lambda i: spread[i])
    for k in (5, 20, 36, 40):
        kept = order[:k]
        assert curve["coverage"][k - 1] == pytest.approx(k / len(y))
        assert curve["max_spread"][k - 1] == pytest.approx(max(spread[kept]))
        assert curve["accuracy"][k - 1] == pytest.approx(
            accuracy_score(y[kept], (p[kept] > 0.5).astype(int)))
        assert curve["auc"][k - 1] == pytest.approx(roc_auc_score(y[kept], p[kept]))
    assert np.isnan(curve["auc"][0])  # one patient: one class
    assert curve["auc"][len(y) // 2] > curve["auc"][-1]  # the noisy patients were left out


def test_ties_keep_the_given_order_and_resamples_select_within_themselves():
    spread = np.array([0.2, 0.1, 0.1, 0.3])
    assert most_reliable(spread, np.arange(4), 3).tolist() == [1, 2, 0]
    indices = resample_indices(4, 50, 2)
    kept = most_reliable(spread, indices, 2)
    for row, sel in zip(indices, kept):
        assert set(sel) <= set(row)
        assert sorted(spread[sel]) == sorted(spread[row])[:2]
