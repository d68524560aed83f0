"""Metric blocks with their bootstrap CIs, the Youden threshold of a training run and the paired
DeLong matrix; `Scored`, one model's evaluation as the outputs use it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cohort import Patient
from ..console import warn
from ..errors import SarcogradeError
from ..formats import run as run_format
from ..stats import (METRICS, binary_metrics, bootstrap, calibration_intercept, calibration_slope,
                     classify, confusion_counts, delong_test, net_benefit, percentile_ci,
                     youden_threshold)
from ..survival import bonferroni
from .inputs import read_cv_predictions

ALL_METRICS = METRICS + ("calibration_slope", "calibration_intercept", "net_benefit")
THRESHOLD_METRICS = ("precision", "sensitivity", "specificity", "f1", "accuracy", "net_benefit")
ARGMAX = 0.5
RULE = "high grade when p_high > threshold; 0.5 is the argmax of the softmax outputs"


@dataclass
class Scored:
    """One model's evaluation. `name`: as metrics.json's `models` and the DeLong pairs name it;
    `key`: as baselines.csv, baseline_predictions.csv and km_<key>.png do ("dl" for a lone
    predictions file, a baseline's key); `shown`: in confusion.csv and the ROC legend; `block`:
    its row of baselines.csv (label, n, threshold, metrics, confusion, ...)."""

    name: str
    key: str
    shown: str
    p: np.ndarray
    block: dict


def number(x) -> float | None:
    """A finite float, or None (JSON's null) for a NaN or an infinity."""
    x = float(x)
    return x if np.isfinite(x) else None


def _why_undefined(name: str, y: np.ndarray) -> str:
    one_class = ("only high-grade" if y.all() else "only low-grade") + " patients"
    reasons = {
        "auc": f"{one_class}; the AUC needs both classes",
        "sensitivity": "no high-grade patient",
        "specificity": "no low-grade patient",
        "precision": "no patient predicted high grade",
        "f1": "no high-grade patient and none predicted high grade",
        "net_benefit": "the threshold is not strictly between 0 and 1",
    }
    if name.startswith("calibration"):
        return (f"{one_class}; the logistic recalibration needs both classes"
                if y.all() or not y.any() else
                "no finite logistic fit: the probabilities separate the classes completely")
    return reasons.get(name, "undefined on these patients")


def metric_statistic(threshold: float, names: tuple[str, ...]):
    """The statistic that the bootstrap resamples: (y, p) -> {metric: values} at `threshold`."""
    def statistic(y, p) -> dict[str, np.ndarray]:
        values = binary_metrics(y, p, threshold)
        if "calibration_slope" in names:
            values["calibration_slope"] = calibration_slope(y, p)
            values["calibration_intercept"] = calibration_intercept(y, p)
        if "net_benefit" in names:  # at the operating threshold, as the decision curve has it
            values["net_benefit"] = net_benefit(y, p, threshold)
        return {name: values[name] for name in names}
    return statistic


def metric_block(y: np.ndarray, p: np.ndarray, threshold: float, indices: np.ndarray,
                 names: tuple[str, ...] = ALL_METRICS) -> dict:
    """`{name: {"value", "ci95", "resamples"}}` (or a "not computable" note) and the confusion."""
    statistic = metric_statistic(threshold, names)
    block = estimates(statistic(y, p), bootstrap(statistic, y, p, indices), y, names)
    counts = confusion_counts(y, classify(p, threshold))
    block["confusion"] = {k: int(v) for k, v in counts.items()}
    return block


def estimates(point: dict, samples: dict, y: np.ndarray, names: tuple[str, ...]) -> dict:
    """`{name: {"value", "ci95", "resamples"}}` from the point values and the bootstrap samples,
    or a "not computable" note saying why (`y`: the patients of the point estimate)."""
    block = {}
    for name in names:
        value = number(point[name])
        if value is None:
            block[name] = {"value": None, "ci95": None,
                           "note": "not computable: " + _why_undefined(name, y)}
            continue
        ci, valid = percentile_ci(samples[name])
        block[name] = {"value": value, "ci95": ci, "resamples": valid}
    return block


def single_class_resamples(y: np.ndarray, indices: np.ndarray) -> int:
    """How many bootstrap resamples hold one grade class only (their AUC is undefined)."""
    resampled = y[indices]
    return int(np.sum(resampled.all(axis=1) | ~resampled.any(axis=1)))


def youden_block(run: Path, patients: list[Patient], y: np.ndarray, p: np.ndarray,
                 indices: np.ndarray) -> dict:
    """The metrics at the Youden threshold of the training run's out-of-fold predictions."""
    cv = read_cv_predictions(run)
    source = str(run / run_format.CV_PREDICTIONS)
    try:
        threshold = youden_threshold(cv["label"].to_numpy(int), cv["p_high"].to_numpy(float))
    except ValueError:
        return {"source": source, "note": "not computable: the training run's out-of-fold "
                                          "predictions have one grade class only"}
    block = {"threshold": threshold, "source": source, "n_training": len(cv),
             "rule": "maximises sensitivity + specificity - 1 on the training cohort's "
                     "out-of-fold predictions (mean over repeats per patient)"}
    shared = set(cv["patient_id"]) & {pt.patient_id for pt in patients}
    if shared:
        block["caution"] = (f"the threshold was chosen on {len(shared)} of the patients it is "
                            "evaluated on: the metrics at the Youden threshold are optimistic")
        warn(f"youden: {block['caution']}")
    return {**block, **metric_block(y, p, threshold, indices, THRESHOLD_METRICS)}


def package_threshold_block(package, models: dict[str, "Scored"], y: np.ndarray,
                            indices: np.ndarray) -> dict:
    """The metrics of a model package's graded model at the package's own operating threshold
    (chosen on its training cohort, never on the patients evaluated here)."""
    chosen = package.document["threshold"]
    graded = chosen["model"]
    if graded not in models:
        raise SarcogradeError(f"the model package grades with {graded}, which is not among the "
                              f"evaluated models ({', '.join(models)})", path=package.path)
    threshold = package.threshold
    return {"model": graded, "threshold": threshold, "package": package.id,
            "rule": chosen.get("rule"), "description": chosen.get("description"),
            **metric_block(y, models[graded].p, threshold, indices, THRESHOLD_METRICS)}


def delong_matrix(y: np.ndarray, probabilities: dict[str, np.ndarray]) -> list[dict]:
    """The paired DeLong test of every pair of models (a before b in the given order), with p
    Bonferroni-adjusted over the pairs that could be tested."""
    pairs = []
    names = list(probabilities)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            try:
                r = delong_test(y, probabilities[a], probabilities[b])
            except ValueError as exc:
                pairs.append({"a": a, "b": b, "p": None, "p_adjusted": None,
                              "note": f"not computable: {exc}"})
                continue
            pairs.append({"a": a, "b": b, "auc_a": r.auc_1, "auc_b": r.auc_2,
                          "difference": r.difference, "z": number(r.z), "ci95": list(r.ci95),
                          "p": r.p})
    tested = [pair for pair in pairs if pair["p"] is not None]
    for pair, adjusted in zip(tested, bonferroni([pair["p"] for pair in tested])):
        pair["p_adjusted"] = float(adjusted)
    return pairs
