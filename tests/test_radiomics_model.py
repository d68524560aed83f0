"""The radiomics classifier: selection inside the training fold only, the correlation filter,
missing values, and the logit-mean ensemble."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from sarcograde.radiomics.model import CorrelationFilter, fit_cv, selected_features
from sarcograde.radiomics.settings import load_settings
from sarcograde.splits import make_splits

MODEL = load_settings().model


def _cohort(n=40, n_features=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    labels = pd.Series(np.tile([0, 1], n // 2), index=ids)
    x = pd.DataFrame(rng.normal(size=(n, n_features)), index=ids,
                     columns=[f"f{j}" for j in range(n_features)])
    x["f0"] += 1.5 * labels
    x["f0_twice"] = 2 * x["f0"] + 0.01 * rng.normal(size=n)  # correlated with f0: filtered
    x["constant"] = 3.0
    return x, labels


def _fitted_state(pipeline) -> list[np.ndarray]:
    """Every number a fitted pipeline learned from its training data."""
    return [pipeline["impute"].statistics_, pipeline["variance"].variances_,
            pipeline["scale"].mean_, pipeline["scale"].scale_,
            pipeline["correlation"].support_.astype(float), pipeline["lasso"].coef_,
            pipeline["lasso"].intercept_, np.atleast_1d(pipeline["lasso"].C_)]


def _same(a, b) -> bool:
    return all(np.array_equal(u, v, equal_nan=True) for u, v in zip(a, b))


def test_label_poisoning_of_held_out_patients_leaves_their_fold_model_unchanged():
    x, labels = _cohort()
    splits, _ = make_splits(list(x.index), labels.to_numpy(), folds=5, repeats=2, seed=0)
    clean = fit_cv(x, labels, splits, MODEL, seed=0)
    for k in (0, 7):
        held_out = list(splits[k].val)
        poisoned_labels = labels.copy()
        poisoned_labels[held_out] = 1 - poisoned_labels[held_out]
        poisoned_x = x.copy()
        poisoned_x.loc[held_out] = poisoned_x.loc[held_out] * -5 + 100  # and their features
        poisoned = fit_cv(poisoned_x, poisoned_labels, splits, MODEL, seed=0)
        assert _same(_fitted_state(clean.models[k]), _fitted_state(poisoned.models[k]))
        # The poisoned patients train the other folds, whose models must change (the test bites).
        changed = [j for j in range(len(splits)) if j != k and not _same(
            _fitted_state(clean.models[j]), _fitted_state(poisoned.models[j]))]
        assert changed


def test_correlation_filter_keeps_the_first_of_each_correlated_pair():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 50))
    x = np.column_stack([a, b, a * 3 + 0.05 * rng.normal(size=50), -b, a + b])
    keep = CorrelationFilter(threshold=0.9).fit(x).get_support()
    corr = pd.DataFrame(x).corr().abs().to_numpy()  # pandas, independently
    assert corr[0, 2] > 0.9 and corr[1, 3] > 0.9 and corr[0, 4] < 0.9 and corr[1, 4] < 0.9
    assert keep.tolist() == [True, True, False, False, True]


def test_selection_drops_constant_and_correlated_and_finds_the_signal():
    x, labels = _cohort(n=60)
    splits, _ = make_splits(list(x.index), labels.to_numpy(), folds=5, repeats=1, seed=0)
    fit = fit_cv(x, labels, splits, MODEL, seed=0)
    for model in fit.models:
        chosen = selected_features(model, fit.columns)
        assert "constant" not in chosen.index and "f0_twice" not in chosen.index
        assert chosen.get("f0", 0) > 0  # high grade has the higher f0
    oof = fit.cv_predictions
    assert sorted(oof["patient_id"]) == sorted(x.index)  # each patient once per repeat
    assert np.allclose(oof["p_high"], expit(oof["logit"]))


def test_missing_values_are_imputed_or_dropped_inside_the_fold():
    x, labels = _cohort()
    splits, _ = make_splits(list(x.index), labels.to_numpy(), folds=5, repeats=1, seed=0)
    x["all_missing"] = np.nan
    only_in_fold0 = list(splits[0].val)
    x["seen_by_one_fold"] = np.nan
    x.loc[only_in_fold0, "seen_by_one_fold"] = 1.0  # no value among fold 0's training patients
    x.loc["P000", "f1"] = np.nan
    fit = fit_cv(x, labels, splits, MODEL, seed=0)
    assert np.isfinite(fit.cv_predictions["p_high"]).all()
    assert "seen_by_one_fold" not in fit.models[0][:-1].get_feature_names_out(fit.columns)
    train0 = list(splits[0].train)
    f1 = fit.columns.index("f1")
    assert fit.models[0]["impute"].statistics_[f1] == np.nanmedian(x.loc[train0, "f1"])


def test_ensemble_is_the_sigmoid_of_the_mean_fold_logit():
    x, labels = _cohort()
    splits, _ = make_splits(list(x.index), labels.to_numpy(), folds=4, repeats=1, seed=2)
    fit = fit_cv(x, labels, splits, MODEL, seed=0)
    external, _ = _cohort(n=10, seed=9)
    logits = np.stack([m.decision_function(external[fit.columns].to_numpy())
                       for m in fit.models])
    assert fit.predict(external) == pytest.approx(expit(logits.mean(axis=0)))
    assert not np.allclose(fit.predict(external), expit(logits).mean(axis=0))  # not prob. mean


def test_few_low_grade_patients_shrink_the_inner_cv_instead_of_failing():
    x, labels = _cohort(n=24)
    labels[:] = 1
    labels.iloc[:3] = 0  # 3 low grade: 3 outer folds, 2 low-grade patients per training fold
    splits, adaptation = make_splits(list(x.index), labels.to_numpy(), folds=5, repeats=1, seed=0)
    assert adaptation and len(splits) == 3
    fit = fit_cv(x, labels, splits, MODEL, seed=0)
    assert [m["lasso"].cv.get_n_splits() for m in fit.models] == [2, 2, 2]
    assert len(fit.cv_predictions) == 24
