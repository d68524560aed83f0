"""The radiomics classifier (Peeken et al. 2019) and its repeated stratified cross-validation.

Every step that learns anything is a step of one scikit-learn Pipeline fitted on a training
fold's patients only: median imputation (a feature with no value in the fold is dropped),
removal of near-constant features, standardisation, removal of one of each pair of highly
correlated features, and an L1-penalised, class-weighted logistic regression whose C is chosen
by an inner stratified CV of the same training fold. The splits are the DL models'
(`sarcograde.splits.make_splits`). An external patient gets the mean of the fold models'
logits, then the sigmoid.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin, VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import SarcogradeError
from ..splits import Split


@contextlib.contextmanager
def _empty_columns_dropped():
    """A feature with no value among a fold's patients is dropped by the imputer by design
    (module docstring); scikit-learn's warning about it would repeat for every fold."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping features without any observed values")
        yield


class CorrelationFilter(SelectorMixin, BaseEstimator):
    """Keep features in column order, skipping any whose absolute Pearson correlation with an
    already kept feature exceeds `threshold` (of each correlated pair, the first is kept)."""

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def fit(self, X, y=None):
        X = validate_data(self, X)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.abs(np.corrcoef(X, rowvar=False).reshape(X.shape[1], X.shape[1]))
        corr = np.nan_to_num(corr, nan=0.0)  # a constant column correlates with nothing
        keep = np.zeros(X.shape[1], bool)
        for j in range(X.shape[1]):
            keep[j] = not (corr[j, keep] > self.threshold).any()
        self.support_ = keep
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_


def make_classifier(model: dict, seed: int, inner_folds: int | None = None) -> Pipeline:
    """The pipeline of the module docstring, with the `model` section of radiomics.yaml; `seed`
    fixes the inner CV and liblinear's coordinate order (else drawn from numpy's global state)."""
    inner = StratifiedKFold(n_splits=inner_folds or model["inner_folds"], shuffle=True,
                            random_state=seed)
    return Pipeline([
        ("impute", SimpleImputer(strategy="median")),
        ("variance", VarianceThreshold(model["variance_threshold"])),
        ("scale", StandardScaler()),
        ("correlation", CorrelationFilter(model["max_correlation"])),
        ("lasso", LogisticRegressionCV(Cs=list(model["Cs"]), l1_ratios=(1.0,), cv=inner,
                                       solver="liblinear", class_weight="balanced",
                                       scoring="neg_log_loss", max_iter=1000,
                                       random_state=seed, use_legacy_attributes=False)),
    ])


def selected_features(pipeline: Pipeline, columns: list[str]) -> pd.Series:
    """The features a fitted pipeline uses, with their coefficients (on standardised values)."""
    names = pipeline[:-1].get_feature_names_out(columns)
    coef = pipeline[-1].coef_.ravel()
    return pd.Series(coef, index=names)[coef != 0]


@dataclass
class RadiomicsFit:
    columns: list[str]             # the feature columns the models were fitted on, in order
    splits: list[Split]
    models: list                   # one per split: a fitted Pipeline, or its numbers read back
                                   # (formats.radiomics.FoldModel); both have decision_function
    cv_predictions: pd.DataFrame   # patient_id, repeat, fold, label, logit, p_high (out of fold)

    def fold_logits(self, features: pd.DataFrame) -> np.ndarray:
        """(models, patients) logits; `features` must hold every fitted column."""
        missing = [c for c in self.columns if c not in features.columns]
        if missing:
            raise SarcogradeError(f"{len(missing)} feature column(s) the models were fitted on "
                                  f"are missing, e.g. {', '.join(missing[:3])}")
        x = features.loc[:, self.columns].to_numpy(float)
        with _empty_columns_dropped():
            return np.stack([m.decision_function(x) for m in self.models])

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Ensemble probability of high grade: sigmoid of the mean of the fold models' logits."""
        return expit(self.fold_logits(features).mean(axis=0))


def fit_cv(features: pd.DataFrame, labels: pd.Series, splits: list[Split], model: dict,
           seed: int) -> RadiomicsFit:
    """One pipeline per split, fitted on that split's training patients alone.

    `features` is indexed by patient_id (columns: features), `labels` 0/1 by patient_id.
    """
    columns = list(features.columns)
    models, oof = [], []
    for split in splits:
        train, val = list(split.train), list(split.val)
        # The inner CV that chooses C cannot have more folds than the fold's rarer grade has
        # patients (small cohorts); fewer than two leaves nothing to choose C with.
        n_rare = int(np.bincount(labels.loc[train].to_numpy(int), minlength=2).min())
        if n_rare < 2:
            raise SarcogradeError(f"{split.name}: {n_rare} training patient(s) of one grade; the "
                                  "L1 strength cannot be chosen (too few patients of that grade)")
        with _empty_columns_dropped():
            pipeline = make_classifier(model, seed, min(model["inner_folds"], n_rare)).fit(features.loc[train].to_numpy(float),
                                                        labels.loc[train].to_numpy(int))
            logit = pipeline.decision_function(features.loc[val].to_numpy(float))
        models.append(pipeline)
        oof.append(pd.DataFrame({"patient_id": val, "repeat": split.repeat, "fold": split.fold,
                                 "label": labels.loc[val].to_numpy(int), "logit": logit,
                                 "p_high": expit(logit)}))
    return RadiomicsFit(columns, splits, models, pd.concat(oof, ignore_index=True))
