"""DeLong variance and tests against a brute-force structural-components computation."""

import numpy as np
import pytest
from scipy.stats import norm

from sarcograde.stats import (auc, delong_test, delong_test_unpaired, delong_variance,
                              resample_indices)


def _brute_force(y, scores):
    """DeLong 1988 written out: the kernel psi over all positive x negative pairs, per model."""
    y = np.asarray(y, bool)
    v10, v01 = [], []
    for s in scores:
        pos, neg = s[y], s[~y]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    m, n = len(v10[0]), len(v01[0])
    k = len(scores)
    cov = np.empty((k, k))
    for a in range(k):
        for b in range(k):
            s10 = np.sum((v10[a] - v10[a].mean()) * (v10[b] - v10[b].mean())) / (m - 1)
            s01 = np.sum((v01[a] - v01[a].mean()) * (v01[b] - v01[b].mean())) / (n - 1)
            cov[a, b] = s10 / m + s01 / n
    return np.array([x.mean() for x in v10]), cov


def _pair(n, seed, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s1 = y * 0.8 + rng.normal(0, 1, n)
    s2 = s1 * 0.6 + y * 0.2 + rng.normal(0, 0.8, n)
    if ties:
        s1, s2 = np.round(s1), np.round(s2)
    return y, s1, s2


@pytest.mark.parametrize("ties", [False, True])
def test_paired_test_equals_brute_force(ties):
    y, s1, s2 = _pair(90, 0, ties)
    aucs, cov = _brute_force(y, [s1, s2])
    result = delong_test(y, s1, s2)
    assert (result.auc_1, result.auc_2) == pytest.approx(tuple(aucs), abs=1e-12)
    se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert result.se == pytest.approx(se, rel=1e-10)
    assert result.p == pytest.approx(2 * norm.sf(abs(aucs[0] - aucs[1]) / se), rel=1e-9)
    assert delong_variance(y, s1) == pytest.approx((aucs[0], cov[0, 0]), rel=1e-10)


def test_unpaired_test_adds_the_variances():
    y1, s1, _ = _pair(70, 1)
    y2, _, s2 = _pair(80, 2)
    a1, c1 = _brute_force(y1, [s1])
    a2, c2 = _brute_force(y2, [s2])
    result = delong_test_unpaired(y1, s1, y2, s2)
    assert result.se == pytest.approx(np.sqrt(c1[0, 0] + c2[0, 0]), rel=1e-10)
    assert result.difference == pytest.approx(a1[0] - a2[0])


def test_delong_variance_matches_the_bootstrap_variance():
    y, s1, _ = _pair(300, 3)
    _, variance = delong_variance(y, s1)
    idx = resample_indices(len(y), 2000, 0)
    boot = auc(y[idx], s1[idx])
    assert np.nanvar(boot, ddof=1) == pytest.approx(variance, rel=0.15)


def test_identical_models_and_too_few_patients():
    y, s1, _ = _pair(40, 4)
    same = delong_test(y, s1, s1)
    assert same.difference == 0 and same.p == 1.0
    with pytest.raises(ValueError):
        delong_variance([1, 1, 1, 0], [0.9, 0.8, 0.7, 0.1])  # one negative: no variance
