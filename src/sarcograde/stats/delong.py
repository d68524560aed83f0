"""DeLong's nonparametric variance of the AUC and the test of two AUCs.

DeLong, DeLong & Clarke-Pearson, Biometrics 1988; 44:837-845, computed with midranks as in
Sun & Xu, IEEE Signal Process Lett 2014; 21:1389-1393 (O(n log n), no n_pos x n_neg matrix).
Two models scored on the same patients are correlated (paired test, `delong_test`); two models
on different patients are independent (`delong_test_unpaired`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm, rankdata


@dataclass(frozen=True)
class DeLongResult:
    auc_1: float
    auc_2: float
    difference: float          # auc_1 - auc_2
    se: float                  # standard error of the difference
    z: float
    p: float                   # two-sided
    ci95: tuple[float, float]  # of the difference

    def to_dict(self) -> dict:
        return asdict(self)


def _split(y, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, bool)
    scores = np.atleast_2d(np.asarray(scores, float))
    if y.sum() < 2 or (~y).sum() < 2:
        raise ValueError("the DeLong variance needs at least two patients of each class")
    return scores[:, y], scores[:, ~y]


def _placements(y, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and the structural components V10 (per positive) and V01 (per negative), per model.

    V10_i is the share of negatives scored below positive i (ties one half); V01_j the share of
    positives scored above negative j; the AUC is the mean of either.
    """
    pos, neg = _split(y, scores)
    m, n = pos.shape[1], neg.shape[1]
    rank_all = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    rank_pos, rank_neg = rankdata(pos, axis=1), rankdata(neg, axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    aucs = v10.mean(axis=1)
    return aucs, v10, v01


def _covariance(y, scores) -> tuple[np.ndarray, np.ndarray]:
    aucs, v10, v01 = _placements(y, scores)
    cov = (np.atleast_2d(np.cov(v10)) / v10.shape[1] + np.atleast_2d(np.cov(v01)) / v01.shape[1])
    return aucs, cov


def delong_variance(y, p) -> tuple[float, float]:
    """The AUC of one model and DeLong's estimate of its variance."""
    aucs, cov = _covariance(y, p)
    return float(aucs[0]), float(cov[0, 0])


def _result(auc_1: float, auc_2: float, variance: float) -> DeLongResult:
    difference = auc_1 - auc_2
    se = float(np.sqrt(max(variance, 0.0)))
    if se > 0:
        z = difference / se
        p = float(2 * norm.sf(abs(z)))
    else:  # identical rankings (or perfect separation by both): no evidence of a difference
        z, p = (0.0, 1.0) if difference == 0 else (np.copysign(np.inf, difference), 0.0)
    half = norm.ppf(0.975) * se
    return DeLongResult(auc_1, auc_2, difference, se, float(z), p,
                        (float(difference - half), float(difference + half)))


def delong_test(y, p_1, p_2) -> DeLongResult:
    """Paired DeLong test of two models' AUCs on the same patients (two-sided)."""
    if len(p_1) != len(y) or len(p_2) != len(y):
        raise ValueError("both models must score the same patients")
    aucs, cov = _covariance(y, np.vstack([p_1, p_2]))
    return _result(float(aucs[0]), float(aucs[1]), cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


def delong_test_unpaired(y_1, p_1, y_2, p_2) -> DeLongResult:
    """DeLong test of two AUCs from independent samples: the variances add (two-sided)."""
    auc_1, var_1 = delong_variance(y_1, p_1)
    auc_2, var_2 = delong_variance(y_2, p_2)
    return _result(auc_1, auc_2, var_1 + var_2)
