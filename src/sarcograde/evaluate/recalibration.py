"""Recalibration for a new site (`evaluate --recalibrate N`): a logistic recalibration of each
model fitted on N labelled patients of the site, drawn stratified by class with the seed, and its
calibration before and after on the remaining patients only (never on the N).

The fit is ``y ~ a + b logit(p)`` (intercept and slope) when the smaller class of the N holds at
least 20 patients (10 per estimated parameter, Peduzzi et al., J Clin Epidemiol 1996), else
``y ~ a + offset(logit(p))`` (the intercept only, calibration-in-the-large), which also stands in
where the slope has no finite fit."""

from __future__ import annotations

import numpy as np

from ..cohort import Patient
from ..errors import SarcogradeError
from ..stats import recalibrated, recalibration_fit, resample_indices
from .metrics import ARGMAX, Scored, metric_block

EVENTS_PER_PARAMETER = 10
RECALIBRATION_METRICS = ("auc", "brier", "calibration_slope", "calibration_intercept")
SLOPE_RULE = (f"intercept and slope when the smaller class of the recalibration patients holds at "
              f"least {2 * EVENTS_PER_PARAMETER} patients, else the intercept only")


def recalibration_split(y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the n recalibration patients (stratified by class, drawn with `seed`) and of
    the remaining patients, each in patient order."""
    from sklearn.model_selection import train_test_split

    if not 2 <= n <= len(y) - 2:
        raise SarcogradeError(f"--recalibrate {n}: give between 2 and {len(y) - 2} of the "
                              f"{len(y)} evaluated patients")
    try:
        fit, rest = train_test_split(np.arange(len(y)), train_size=n, stratify=y,
                                     random_state=seed)
    except ValueError as exc:
        raise SarcogradeError(f"--recalibrate {n}: cannot draw the patients stratified by class "
                              f"({exc})") from None
    if y[fit].min() == y[fit].max():
        raise SarcogradeError(f"--recalibrate {n}: the recalibration patients hold one class "
                              "only; give more")
    return np.sort(fit), np.sort(rest)


def _fit(y: np.ndarray, p: np.ndarray, fit_slope: bool) -> tuple[float, float, str]:
    a, b = recalibration_fit(y, p, fit_slope)
    if fit_slope and not (np.isfinite(a) and np.isfinite(b)):
        a, b = recalibration_fit(y, p, False)
        return a, b, "intercept only (the slope has no finite fit)"
    return a, b, "intercept and slope" if fit_slope else "intercept only"


def fit_recalibration(y: np.ndarray, p: np.ndarray) -> tuple[float, float, str]:
    """The logistic recalibration of p on these patients by SLOPE_RULE: intercept, slope and
    the form fitted; a NaN intercept where no finite fit exists."""
    smaller = int(min(y.sum(), len(y) - y.sum()))
    return _fit(y, p, smaller >= 2 * EVENTS_PER_PARAMETER)


def _estimates(y: np.ndarray, p: np.ndarray, indices: np.ndarray) -> dict:
    block = metric_block(y, p, ARGMAX, indices, RECALIBRATION_METRICS)
    return {k: v for k, v in block.items() if k != "confusion"}


def recalibration(models: list[Scored], y: np.ndarray, patients: list[Patient],
                  split: tuple[np.ndarray, np.ndarray], seed: int, n_resamples: int
                  ) -> tuple[dict, dict[str, np.ndarray]]:
    """metrics.json's `recalibration` and each model's recalibrated p of the remaining patients;
    `split`: the indices of the recalibration patients and of the others
    (`recalibration_split`)."""
    fit, rest = split
    indices = resample_indices(len(rest), n_resamples, seed)
    blocks, after = {}, {}
    for model in models:
        a, b, form = fit_recalibration(y[fit], model.p[fit])
        if not np.isfinite(a):
            blocks[model.name] = {"note": "not computable: no finite logistic fit on the "
                                          "recalibration patients"}
            continue
        after[model.name] = recalibrated(model.p[rest], a, b)
        blocks[model.name] = {"intercept": a, "slope": b, "fit": form,
                              "before": _estimates(y[rest], model.p[rest], indices),
                              "after": _estimates(y[rest], after[model.name], indices)}
    block = {"n": len(fit), "seed": seed, "rule": SLOPE_RULE,
             "model": "p_after = expit(intercept + slope * logit(p_high))",
             "recalibration_patients": [patients[i].patient_id for i in fit],
             "n_evaluated": len(rest), "n_evaluated_high": int(y[rest].sum()),
             "models": blocks}
    return block, after
