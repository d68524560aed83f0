"""Patient bootstrap: reproducible, percentile CIs that contain the estimate and narrow with n."""

import numpy as np
import pytest

from sarcograde.stats import (binary_metrics, bootstrap, percentile_ci, resample_indices,
                              roc_band, roc_curve, tpr_at)


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)


def _auc_ci(n: int, seed: int):
    y, p = _data(n, seed)
    samples = bootstrap(lambda yy, pp: binary_metrics(yy, pp), y, p, resample_indices(n, 500, 7))
    return binary_metrics(y, p), samples


def test_cis_contain_the_estimate_and_narrow_as_n_grows():
    widths = []
    for n in (40, 160, 640):
        point, samples = _auc_ci(n, 0)
        for name in ("auc", "accuracy", "f1", "brier"):
            ci, _ = percentile_ci(samples[name])
            assert ci[0] <= point[name] <= ci[1], name
        ci, _ = percentile_ci(samples["auc"])
        widths.append(ci[1] - ci[0])
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] / widths[2] == pytest.approx(2, rel=0.3)  # width ~ 1/sqrt(n)


def test_same_seed_same_resamples_and_chunking_does_not_matter():
    np.testing.assert_array_equal(resample_indices(30, 600, 3), resample_indices(30, 600, 3))
    assert not np.array_equal(resample_indices(30, 10, 3), resample_indices(30, 10, 4))
    y, p = _data(30, 1)
    idx = resample_indices(30, 600, 3)
    stacked = bootstrap(lambda yy, pp: binary_metrics(yy, pp), y, p, idx)["auc"]
    one_by_one = [binary_metrics(y[i], p[i])["auc"] for i in idx[:50]]
    np.testing.assert_allclose(stacked[:50], one_by_one)


def test_single_class_resamples_are_skipped_and_counted():
    y = np.array([1] * 9 + [0])
    p = np.linspace(0.1, 0.9, 10)
    idx = resample_indices(10, 400, 0)
    samples = bootstrap(lambda yy, pp: binary_metrics(yy, pp), y, p, idx)
    single_class = int(np.sum(y[idx].all(axis=1)))
    assert single_class > 0
    ci, valid = percentile_ci(samples["auc"])
    assert valid == 400 - single_class
    assert percentile_ci(np.full(5, np.nan)) == (None, 0)


def test_tpr_at_follows_the_piecewise_linear_curve():
    fpr, tpr = np.array([0, 0, 0.5, 0.5, 1]), np.array([0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(tpr_at(fpr, tpr, np.array([0, 0.25, 0.5, 0.75, 1])),
                               [0.5, 0.5, 1, 1, 1])
    y = np.array([0, 1, 0, 1])
    fpr, tpr, _ = roc_curve(y, np.array([0.2, 0.5, 0.5, 0.9]))  # a tie: a diagonal segment
    np.testing.assert_allclose(tpr_at(fpr, tpr, np.array([0.25])), [0.75])


def test_roc_band_brackets_the_curve():
    y, p = _data(200, 2)
    grid = np.linspace(0, 1, 21)
    low, high = roc_band(y, p, resample_indices(200, 300, 0), grid)
    fpr, tpr, _ = roc_curve(y, p)
    curve = tpr_at(fpr, tpr, grid)
    inner = slice(2, -2)
    assert np.all(low[inner] <= curve[inner]) and np.all(curve[inner] <= high[inner])
    assert np.all(high - low >= 0)
