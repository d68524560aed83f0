"""Classification metrics against scikit-learn and the paper's Table 2."""

import numpy as np
import pytest
from sklearn import metrics as skm

from sarcograde.stats import (auc, binary_metrics, classify, confusion_counts, roc_curve,
                              youden_threshold)


def _data(seed: int, n: int = 120, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    return y, (np.round(p, 1) if ties else p)


@pytest.mark.parametrize("seed,ties,threshold", [(0, False, 0.5), (1, True, 0.5), (2, True, 0.3)])
def test_metrics_equal_scikit_learn(seed, ties, threshold):
    y, p = _data(seed, ties=ties)
    predicted = (p > threshold).astype(int)
    m = binary_metrics(y, p, threshold)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert m["precision"] == pytest.approx(skm.precision_score(y, predicted), abs=1e-12)
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, predicted), abs=1e-12)
    assert m["specificity"] == pytest.approx(skm.recall_score(y, predicted, pos_label=0), abs=1e-12)
    assert m["f1"] == pytest.approx(skm.f1_score(y, predicted), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-12)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted).ravel()
    assert confusion_counts(y, predicted) == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}


def test_stacked_resamples_equal_one_at_a_time():
    y1, p1 = _data(3)
    y2, p2 = _data(4)
    stacked = binary_metrics(np.stack([y1, y2]), np.stack([p1, p2]), 0.4)
    for i, (y, p) in enumerate([(y1, p1), (y2, p2)]):
        single = binary_metrics(y, p, 0.4)
        for name, value in single.items():
            assert stacked[name][i] == pytest.approx(value, abs=1e-12)


def test_argmax_rule_gives_ties_to_low_grade():
    assert classify([0.5, 0.5000001, 0.49]).tolist() == [0, 1, 0]


def test_undefined_metrics_are_nan_not_errors():
    y = np.ones(5, int)
    m = binary_metrics(y, np.full(5, 0.2))
    assert np.isnan(m["auc"]) and np.isnan(m["specificity"]) and np.isnan(m["precision"])
    assert m["sensitivity"] == 0 and m["accuracy"] == 0


def test_paper_table2_dl_t1fsgd_from_its_implied_confusion_matrix():
    """Table 2, DL-T1FsGd: precision 0.89, sensitivity 0.91, specificity 0.40, F1 0.90, accuracy
    0.83 on the 158 test patients. Exactly one confusion matrix over 158 patients gives all five
    after rounding: TP 121, FN 12, TN 10, FP 15, i.e. 25 low grade, as Table 1's 25 G1 patients.
    """
    table2 = {"precision": 0.89, "sensitivity": 0.91, "specificity": 0.40, "f1": 0.90,
              "accuracy": 0.83}
    tp, fn, tn, fp = 121, 12, 10, 15
    y = np.r_[np.ones(tp + fn), np.zeros(tn + fp)].astype(int)
    p = np.r_[np.full(tp, 0.9), np.full(fn, 0.1), np.full(tn, 0.1), np.full(fp, 0.9)]
    m = binary_metrics(y, p)
    assert {name: round(float(m[name]), 2) for name in table2} == table2

    # every (n_low, tp, tn) over 158 patients, vectorised
    n_low, tp, tn = np.meshgrid(np.arange(1, 158), np.arange(158), np.arange(158), indexing="ij")
    fn, fp = 158 - n_low - tp, n_low - tn
    valid = (fn >= 0) & (fp >= 0) & (tp + fp > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rounded = [np.round(v, 2) for v in (tp / (tp + fp), tp / (tp + fn), tn / (tn + fp),
                                            2 * tp / (2 * tp + fp + fn), (tp + tn) / 158)]
    hit = valid & np.logical_and.reduce([r == v for r, v in zip(rounded, table2.values())])
    matches = [(int(tp[i]), int(fn[i]), int(tn[i]), int(fp[i])) for i in zip(*np.nonzero(hit))]
    assert matches == [(121, 12, 10, 15)]


def test_roc_curve_matches_scikit_learn_points():
    y, p = _data(5, ties=True)
    fpr, tpr, thr = roc_curve(y, p)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc(y, p))


def test_youden_threshold_maximises_j_with_the_strict_rule():
    y, p = _data(6, n=200)
    t = youden_threshold(y, p)
    best = max(binary_metrics(y, p, c)["sensitivity"] + binary_metrics(y, p, c)["specificity"]
               for c in np.r_[-1.0, np.unique(p)])
    m = binary_metrics(y, p, t)
    assert m["sensitivity"] + m["specificity"] == pytest.approx(best)
    assert not np.any(p == t)  # halfway between two scores, never on one
    with pytest.raises(ValueError):
        youden_threshold(np.ones(4), np.arange(4) / 4)
