"""Decision curves of every model of an evaluation: net benefit over the threshold probabilities
of `stats.THRESHOLDS` with the pointwise 95% band from the same bootstrap resamples of patients
as the other metrics, beside treating everybody and treating nobody (decision_curve.csv)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..formats.evaluation import DECISION_CURVE_COLUMNS
from ..stats import decision_curve
from .metrics import Scored

RULE = ("treated when p_high > t; net benefit = TP/n - FP/n * t/(1 - t); treat all: "
        "prevalence - (1 - prevalence) * t/(1 - t); treat none: 0")


def decision_curves(y: np.ndarray, models: list[Scored], indices: np.ndarray) -> pd.DataFrame:
    """One row per model and threshold (decision_curve.csv), models in the evaluation's order."""
    frames = []
    for model in models:
        curve = decision_curve(y, model.p, indices)
        frames.append(pd.DataFrame({
            "model": model.name, "threshold": curve["threshold"],
            "net_benefit": curve["net_benefit"], "net_benefit_ci_low": curve["low"],
            "net_benefit_ci_high": curve["high"], "treat_all": curve["treat_all"],
            "treat_none": 0.0}))
    return pd.concat(frames, ignore_index=True)[list(DECISION_CURVE_COLUMNS)]


def decision_summary(curves: pd.DataFrame) -> dict:
    """metrics.json's `decision_curve`: the thresholds, the rule and the file."""
    thresholds = curves["threshold"].unique()
    return {"thresholds": {"from": float(thresholds.min()), "to": float(thresholds.max()),
                           "step": float(np.round(np.diff(thresholds).min(), 6))},
            "rule": RULE, "band": "pointwise bootstrap percentile, 95%, the metrics' resamples"}
