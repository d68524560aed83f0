"""Evaluate predictions on a graded test cohort, as in the paper's sections 2.8, 2.9 and 3.

Metrics with 95% percentile CIs from a patient bootstrap (AUC, precision, sensitivity,
specificity, F1, accuracy, Brier, calibration slope and intercept) at the argmax threshold and,
with --run, at the Youden threshold of the training run's out-of-fold predictions; ROC curve with
its CI band and reliability diagram; with --train-manifest the logistic-regression baselines
(clinical, tumour volume, both; same cross-validation, DeLong test against the DL model) and the
cohort table (training against test); Kaplan-Meier overall survival by predicted and true grade
group with log-rank tests (Bonferroni-adjusted). Patients are matched by patient_id, never by
row position; those in only one of the files, or without a grade, are listed in
patient_flow.json and left out.

With a single cohort the honest estimate is the out-of-fold one: give the training run's
RUN/cv_predictions.csv instead of predictions.csv (recognised by its columns) and each patient's
p_high is the mean over the repeats of the cross-validation.

Several models (`--predictions MODEL=CSV`, repeated) are compared on the graded patients every
one of them predicted, with the same bootstrap resamples: Table 2, one ROC figure, calibration
curves, a Kaplan-Meier panel and the pairwise DeLong tests (Bonferroni-adjusted). `--pooled`
evaluates the union of several sites; `--baseline-predictions` writes the baselines' predictions
as files that a later evaluation takes like any other model's.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import baselines as bl
from .artifacts import RunRecord, save_figure
from .cli import split_assignment
from .cohort import Cohort, Patient, load_manifest
from .cohort_table import cohort_table, to_markdown
from .console import console, info, warn
from .errors import SarcogradeError
from .formats import evaluation as evaluation_format
from .formats import predictions as predictions_format
from .formats import run as run_format
from .stats import (METRICS, binary_metrics, bootstrap, calibration_intercept, calibration_slope,
                    classify, confusion_counts, delong_test, percentile_ci, reliability_curve,
                    resample_indices, roc_band, roc_curve, youden_threshold)
from .survival import (bonferroni, kaplan_meier, logrank_test, plot_kaplan_meier,
                       plot_kaplan_meier_panel)

ALL_METRICS = METRICS + ("calibration_slope", "calibration_intercept")
THRESHOLD_METRICS = ("precision", "sensitivity", "specificity", "f1", "accuracy")
ARGMAX = 0.5
RULE = "high grade when p_high > threshold; 0.5 is the argmax of the softmax outputs"
ROC_GRID = np.linspace(0, 1, 101)
CV_COLUMNS = set(run_format.CV_COLUMNS)
MODEL_NAME = re.compile(r"DL-fusion|DL-\w+|radiomics-\w+|clinical|volume|clinical\+volume")
KM_PANEL = "km_panel.png"
BASELINE_NAMES = {"clinical": "clinical", "volume": "volume", "clinical_volume": "clinical+volume"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", type=Path, nargs="?",
                        help="predictions.csv from `sarcograde predict`, or RUN/cv_predictions.csv "
                             "of `sarcograde train` (out-of-fold, for a single cohort)")
    parser.add_argument("--predictions", dest="model_predictions", action="append", default=[],
                        metavar="MODEL=CSV",
                        help="a named model's predictions (patient_id, p_high, predicted); repeat "
                             "to compare models on the patients they share. MODEL: DL-<SEQ>, "
                             "DL-fusion, clinical, volume, clinical+volume or radiomics-<SEQ>. "
                             "With --pooled, CSV holds {site}, replaced by each site's name")
    parser.add_argument("--manifest", type=Path,
                        help="manifest of the test cohort (grades, clinical data, masks)")
    parser.add_argument("--pooled", action="append", default=[], metavar="SITE=MANIFEST",
                        help="instead of --manifest: evaluate the union of several sites' "
                             "patients (repeat per site), marked pooled, with per-site counts")
    parser.add_argument("--baseline-predictions", type=Path, metavar="DIR",
                        help="with --train-manifest: write the baselines' predictions of every "
                             "test patient as DIR/{clinical,volume,clinical+volume}.csv")
    parser.add_argument("--out", type=Path, required=True, help="output folder EVAL/")
    parser.add_argument("--train-manifest", type=Path,
                        help="manifest of the training cohort: enables the baselines and Table 1")
    parser.add_argument("--run", type=Path,
                        help="training run folder: Youden threshold from its cv_predictions.csv, "
                             "baseline folds from its folds.json")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples of patients for the 95%% CIs (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and CV splits")
    parser.add_argument("--sequence", help="mask sequence for the tumour volume (default: the "
                                           "manifest's only sequence)")


# ---------------------------------------------------------------------------- inputs

def read_predictions(path: Path) -> tuple[pd.DataFrame, str]:
    """One row per patient (patient_id, p_high; and label for out-of-fold predictions) and the
    predictions' source in words.

    predictions.csv of `sarcograde predict` has one row per patient; a training run's
    cv_predictions.csv (recognised by its columns) has one per patient and repeat, averaged here.
    """
    frame = predictions_format.read_predictions(path)
    if CV_COLUMNS <= set(frame.columns):
        return out_of_fold(frame, path)
    duplicated = frame["patient_id"][frame["patient_id"].duplicated()]
    if len(duplicated):
        raise SarcogradeError("patient predicted twice", patient=duplicated.iloc[0], path=path)
    return frame[["patient_id", "p_high"]], "one prediction per patient (sarcograde predict)"


def out_of_fold(frame: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, str]:
    """cv_predictions.csv rows -> one row per patient (label, p_high = mean over repeats)."""
    bad = ~frame["label"].isin([0, 1])
    if bad.any():
        raise SarcogradeError(f"label {frame['label'][bad].iloc[0]!r} is not 0 (low) or 1 (high)",
                              patient=frame["patient_id"][bad].iloc[0], path=path)
    twice = frame[frame.duplicated(["patient_id", "repeat"])]
    if len(twice):
        raise SarcogradeError(f"patient validated twice in repeat {twice['repeat'].iloc[0]}",
                              patient=twice["patient_id"].iloc[0], path=path)
    labels = frame.groupby("patient_id")["label"].nunique()
    if (labels > 1).any():
        raise SarcogradeError("patient with different labels in different repeats",
                              patient=labels[labels > 1].index[0], path=path)
    repeats = frame["repeat"].nunique()
    counts = frame.groupby("patient_id")["repeat"].size()
    if (counts < repeats).any():  # e.g. a run trained fold by fold, not finished yet
        warn(f"{int((counts < repeats).sum())} patient(s) have fewer than {repeats} out-of-fold "
             f"predictions in {path} (unfinished folds?); their mean is over those they have")
    per_patient = frame.groupby("patient_id", sort=False).agg(
        label=("label", "first"), p_high=("p_high", "mean")).reset_index()
    return per_patient, (f"out-of-fold cross-validation (mean over {repeats} "
                         f"repeat{'s' if repeats > 1 else ''})")


def match_patients(predictions: pd.DataFrame, cohort: Cohort, path: Path | None = None
                   ) -> tuple[list[Patient], np.ndarray, dict]:
    """The graded patients present in both files (by id, in prediction order) and the flow.

    A `label` column (out-of-fold predictions) must agree with the manifest's grade.
    """
    by_id = cohort.by_id()
    predicted = set(predictions["patient_id"])
    labels = predictions["label"] if "label" in predictions else [None] * len(predictions)
    included, p, excluded = [], [], []
    for pid, p_high, label in zip(predictions["patient_id"], predictions["p_high"], labels):
        patient = by_id.get(pid)
        if patient is None:
            excluded.append({"patient_id": pid, "reason": "not in manifest"})
        elif patient.label is None:
            excluded.append({"patient_id": pid, "reason": "grade unknown"})
        elif label is not None and int(label) != patient.label:
            raise SarcogradeError(f"label {int(label)} differs from the manifest's grade "
                                  f"{patient.grade} (label {patient.label}): is this run "
                                  "trained on this manifest?", patient=pid, path=path)
        else:
            included.append(patient)
            p.append(p_high)
    # an ungraded patient is left out for its grade, predicted or not (train never predicts it)
    excluded += [{"patient_id": patient.patient_id,
                  "reason": "grade unknown" if patient.label is None else "not predicted"}
                 for patient in cohort if patient.patient_id not in predicted]
    flow = {"n_predictions": len(predictions), "n_manifest": len(cohort),
            "n_included": len(included), "included": [pt.patient_id for pt in included],
            "excluded": excluded}
    return included, np.asarray(p, float), flow


def read_cv_predictions(run: Path) -> pd.DataFrame:
    """Out-of-fold predictions of the training run, one row per patient (mean over repeats)."""
    path = run / "cv_predictions.csv"
    frame = run_format.read_cv_predictions(
        path, "cv_predictions.csv (is this a `sarcograde train` run?)")
    return out_of_fold(frame, path)[0]


def model_name(name: str) -> str:
    """`name` if it is one of the study's model names (DESIGN.md, "The study"), else an error."""
    if not MODEL_NAME.fullmatch(name):
        raise SarcogradeError(f"unknown model name {name!r}: use DL-<SEQ>, DL-fusion, clinical, "
                              "volume, clinical+volume or radiomics-<SEQ>")
    return name


def prediction_inputs(args, reference: str) -> dict[str, str]:
    """Model name -> predictions path (a `{site}` template when pooled), in the order given.

    The positional file is the model `reference` (DL or DL-<SEQ>), then the --predictions ones.
    """
    inputs = {} if args.predictions is None else {reference: str(args.predictions)}
    for spec in args.model_predictions:
        name, path = split_assignment(spec, "--predictions")
        if model_name(name) in inputs:
            raise SarcogradeError(f"model {name} given twice")
        inputs[name] = path
    if not inputs:
        raise SarcogradeError("no predictions: give a predictions file or --predictions MODEL=CSV")
    return inputs


def pooled_cohort(specs: list[str]) -> tuple[Cohort, dict[str, Path]]:
    """The union of the sites' manifests; a patient's id becomes `<site>/<patient_id>` (ids may
    repeat between hospitals) and its `site` the site's name."""
    cohorts = {}
    for spec in specs:
        site, path = split_assignment(spec, "--pooled")
        if site in cohorts:
            raise SarcogradeError(f"site {site} given twice to --pooled")
        cohorts[site] = load_manifest(Path(path), strict=True)
    if len(cohorts) < 2:
        raise SarcogradeError("--pooled needs at least two sites (SITE=MANIFEST each)")
    first = next(iter(cohorts.values()))
    patients = [replace(pt, patient_id=f"{site}/{pt.patient_id}", site=site)
                for site, cohort in cohorts.items() for pt in cohort]
    sequences = [seq for seq in first.sequences
                 if all(seq in cohort.sequences for cohort in cohorts.values())]
    return (Cohort(first.path, patients, sequences, [], []),
            {site: cohort.path for site, cohort in cohorts.items()})


def read_model_predictions(path: str, sites: list[str] | None) -> tuple[pd.DataFrame, str, Path]:
    """One model's predictions (see `read_predictions`); pooled: each site's file, ids prefixed
    with the site as in `pooled_cohort`. Returns the frame, its source and the path shown."""
    if sites is None:
        frame, source = read_predictions(Path(path))
        return frame, source, Path(path)
    if "{site}" not in path:
        raise SarcogradeError("with --pooled a predictions path needs {site} (e.g. "
                              "predict/{site}/DL-T2FS.csv)", path=path)
    frames = []
    for site in sites:
        frame, source = read_predictions(Path(path.replace("{site}", site)))
        frames.append(frame.assign(patient_id=site + "/" + frame["patient_id"]))
    return pd.concat(frames, ignore_index=True), source, Path(path)


def match_models(frames: dict[str, tuple[pd.DataFrame, Path]], cohort: Cohort
                 ) -> tuple[list[Patient], dict[str, np.ndarray], dict]:
    """The graded patients every model predicted (in the first model's order), each model's
    p_high for them, and the flow. One model: `match_patients` as it is."""
    matched = {name: match_patients(frame, cohort, path) for name, (frame, path) in frames.items()}
    if len(matched) == 1:
        (name, (patients, p, flow)), = matched.items()
        return patients, {name: p}, flow
    ids = {name: [pt.patient_id for pt in patients] for name, (patients, _, _) in matched.items()}
    common = set.intersection(*map(set, ids.values()))
    first_patients = next(iter(matched.values()))[0]
    patients = [pt for pt in first_patients if pt.patient_id in common]
    p = {name: pd.Series(p_m, index=ids[name])[[pt.patient_id for pt in patients]].to_numpy()
         for name, (_, p_m, _) in matched.items()}
    graded = [pt.patient_id for pt in cohort if pt.label is not None]
    excluded = [{"patient_id": pt.patient_id, "reason": "grade unknown"}
                for pt in cohort if pt.label is None]
    for pid in graded:
        missing = [name for name in matched if pid not in ids[name]]
        if len(missing) == len(matched):
            excluded.append({"patient_id": pid, "reason": "not predicted"})
        elif missing:
            excluded.append({"patient_id": pid, "reason": "not predicted by every model",
                             "missing_from": missing})
    unknown = {}
    for name, (_, _, flow) in matched.items():
        for entry in flow["excluded"]:
            if entry["reason"] == "not in manifest":
                unknown.setdefault(entry["patient_id"], []).append(name)
    excluded += [{"patient_id": pid, "reason": "not in manifest", "models": names}
                 for pid, names in unknown.items()]
    flow = {"n_predictions": next(iter(matched.values()))[2]["n_predictions"],
            "n_manifest": len(cohort), "n_included": len(patients),
            "included": [pt.patient_id for pt in patients], "excluded": excluded,
            "comparison": f"the {len(patients)} graded patients predicted by all "
                          f"{len(matched)} models",
            "models": {name: {"predictions": str(path), "n_predictions": len(frame),
                              "n_matched": len(ids[name])}
                       for name, (frame, path) in frames.items()}}
    return patients, p, flow


# ---------------------------------------------------------------------------- metrics

def _number(x) -> float | None:
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
    }
    if name.startswith("calibration"):
        return (f"{one_class}; the logistic recalibration needs both classes"
                if y.all() or not y.any() else
                "no finite logistic fit: the probabilities separate the classes completely")
    return reasons.get(name, "undefined on these patients")


def _statistic(threshold: float, names: tuple[str, ...]):
    def statistic(y, p) -> dict[str, np.ndarray]:
        values = binary_metrics(y, p, threshold)
        if "calibration_slope" in names:
            values["calibration_slope"] = calibration_slope(y, p)
            values["calibration_intercept"] = calibration_intercept(y, p)
        return {name: values[name] for name in names}
    return statistic


def metric_block(y: np.ndarray, p: np.ndarray, threshold: float, indices: np.ndarray,
                 names: tuple[str, ...] = ALL_METRICS) -> dict:
    """`{name: {"value", "ci95", "resamples"}}` (or a "not computable" note) and the confusion."""
    statistic = _statistic(threshold, names)
    point = statistic(y, p)
    samples = bootstrap(statistic, y, p, indices)
    predicted = classify(p, threshold)
    block = {}
    for name in names:
        value = _number(point[name])
        if value is None:
            block[name] = {"value": None, "ci95": None,
                           "note": "not computable: " + _why_undefined(name, y)}
            continue
        ci, valid = percentile_ci(samples[name])
        block[name] = {"value": value, "ci95": ci, "resamples": valid}
    block["confusion"] = {k: int(v) for k, v in confusion_counts(y, predicted).items()}
    return block


def _single_class_resamples(y: np.ndarray, indices: np.ndarray) -> int:
    resampled = y[indices]
    return int(np.sum(resampled.all(axis=1) | ~resampled.any(axis=1)))


def youden_block(run: Path, patients: list[Patient], y: np.ndarray, p: np.ndarray,
                 indices: np.ndarray) -> dict:
    cv = read_cv_predictions(run)
    source = str(run / "cv_predictions.csv")
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
                          "difference": r.difference, "z": _number(r.z), "ci95": list(r.ci95),
                          "p": r.p})
    tested = [pair for pair in pairs if pair["p"] is not None]
    for pair, adjusted in zip(tested, bonferroni([pair["p"] for pair in tested])):
        pair["p_adjusted"] = float(adjusted)
    return pairs


# ---------------------------------------------------------------------------- baselines

def _cohort_name(patients: list[Patient], fallback: str) -> str:
    sites = {p.site for p in patients}
    return f"{fallback} ({sites.pop()})" if len(sites) == 1 and None not in sites else fallback


def baseline_splits(run: Path | None, ids: list[str], labels: np.ndarray, seed: int
                    ) -> tuple[list[bl.Split], dict]:
    """The DL run's own splits when they cover exactly these patients, else new stratified ones."""
    folds, repeats, source = 5, 3, "repeated stratified k-fold (scikit-learn), seeded"
    if run is not None:
        path = run / "folds.json"
        spec = run_format.read_folds(run)
        splits, run_folds, run_repeats, run_seed = spec.splits, spec.folds, spec.repeats, spec.seed
        covered = {pid for split in splits for pid in split.train + split.val}
        if covered == set(ids):
            return splits, {"folds": run_folds, "repeats": run_repeats,
                            "source": f"{path}: the DL run's own splits"}
        folds, repeats, seed = run_folds, run_repeats, run_seed
        source = (f"new splits with the folds x repeats and seed of {path}: its patients differ "
                  f"from the training manifest's graded patients")
    smallest = int(min(np.sum(labels == 0), np.sum(labels == 1)))
    if smallest < 2:
        raise ValueError("fewer than two training patients in a grade class")
    if smallest < folds:
        source += f"; {folds} folds reduced to {smallest} (smallest class has {smallest} patients)"
        folds = smallest
    return (bl.stratified_splits(ids, labels, folds, repeats, seed),
            {"folds": folds, "repeats": repeats, "seed": seed, "source": source})


def _imputation_notes(train: pd.DataFrame, test: pd.DataFrame, columns: list[str]) -> list[str]:
    notes = []
    for column in columns:
        k_train, k_test = int(train[column].isna().sum()), int(test[column].isna().sum())
        if k_train or k_test:
            notes.append(f"{column}: missing for {k_train}/{len(train)} training and "
                         f"{k_test}/{len(test)} test patients, imputed with the median of each "
                         "fold's training patients")
    return notes


def run_baselines(args, train_patients: list[Patient], test_patients: list[Patient],
                  volumes: tuple[dict, dict], y: np.ndarray, p_dl: np.ndarray,
                  indices: np.ndarray
                  ) -> tuple[dict, dict[str, np.ndarray], dict[str, bl.BaselineFit]]:
    """Fit the three baselines by CV on the training cohort; metrics and DeLong on the test one.

    Returns metrics.json's baselines block, the test patients' p_high and the fits by baseline."""
    x_train = bl.feature_table(train_patients, volumes[0])
    x_test = bl.feature_table(test_patients, volumes[1])
    labels = pd.Series([p.label for p in train_patients], index=x_train.index)
    empty = [c for c in x_train.columns if x_train[c].isna().all()]
    usable = [c for c in x_train.columns if c not in empty]
    block = {"model": "logistic regression (scikit-learn), standardised features, class-weighted",
             "features": {name: list(cols) for name, cols in bl.BASELINES.items()},
             "imputation": _imputation_notes(x_train, x_test, usable),
             "dropped_features": [f"{c}: no value in the training cohort" for c in empty],
             "n_training": len(train_patients), "models": {}}
    try:
        splits, block["cv"] = baseline_splits(args.run, list(x_train.index),
                                              labels.to_numpy(int), args.seed)
    except ValueError as exc:
        block["note"] = f"not computable: {exc}"
        return block, {}, {}
    probabilities, fits = {}, {}
    for name, columns in bl.BASELINES.items():
        columns = tuple(c for c in columns if c in usable)
        if not columns:
            block["models"][name] = {"note": "not computable: none of its features has a value "
                                             "in the training cohort"}
            continue
        try:
            fit = bl.fit_baseline(x_train, labels, splits, columns)
        except ValueError as exc:
            block["models"][name] = {"note": f"not computable: {exc}"}
            continue
        p = fit.predict(x_test)
        probabilities[name], fits[name] = p, fit
        result = {"label": bl.LABELS[name], "features": list(columns), "threshold": ARGMAX,
                  **metric_block(y, p, ARGMAX, indices)}
        try:
            result["delong_vs_dl"] = {
                **delong_test(y, p_dl, p).to_dict(),
                "test": "paired DeLong test, two-sided; difference = AUC(DL) - AUC(baseline)"}
        except ValueError as exc:
            result["delong_vs_dl"] = {"note": f"not computable: {exc}"}
        block["models"][name] = result
    return block, probabilities, fits


def baseline_predictions(folder: Path, fits: dict[str, bl.BaselineFit],
                         patients: list[Patient], volumes: dict[str, float]
                         ) -> dict[Path, pd.DataFrame]:
    """Each fitted baseline's predictions of `patients` by file, FOLDER/<model>.csv (patient_id,
    p_high, predicted): the prediction files a study gives evaluate like any other model's."""
    features = bl.feature_table(patients, volumes)
    files = {}
    for key, fit in fits.items():
        p = fit.predict(features)
        files[folder / f"{BASELINE_NAMES[key]}.csv"] = pd.DataFrame(
            {"patient_id": features.index, "p_high": p, "predicted": classify(p, ARGMAX)})
    return files


# ---------------------------------------------------------------------------- survival

def survival_analysis(patients: list[Patient],
                      groupings: dict[str, tuple[str, np.ndarray, tuple[str, str]]]
                      ) -> tuple[dict, dict]:
    """Kaplan-Meier and log-rank per grouping (key -> (title, group of each patient, group order)).

    Returns survival.json's content and the KM figures by file name.
    """
    known = np.array([p.clinical.get("os_months") is not None
                      and p.clinical.get("os_event") is not None for p in patients], bool)
    result = {"time_unit": "months", "n": int(known.sum()),
              "excluded_no_survival_data": [p.patient_id for p, k in zip(patients, known) if not k]}
    if not known.any():
        result["note"] = "not computable: no patient has os_months and os_event"
        return result, {}
    time = np.array([p.clinical["os_months"] for p, k in zip(patients, known) if k], float)
    event = np.array([p.clinical["os_event"] for p, k in zip(patients, known) if k], int)
    result["deaths"] = int(event.sum())
    models, curves, pvalues = {}, {}, {}
    for key, (title, groups, order) in groupings.items():
        groups = np.asarray(groups)[known]
        curves[key] = {g: kaplan_meier(time[groups == g], event[groups == g])
                       for g in order if np.any(groups == g)}
        entry = {"title": title, "figure": f"km_{key}.png",
                 "groups": {g: {"n": km.n, "deaths": int(km.events.sum()),
                                "median_months": _number(km.median)}
                            for g, km in curves[key].items()}}
        try:
            test = logrank_test(time, event, groups)
            entry["logrank"] = {"chi2": test.statistic, "df": test.df, "p": test.p}
            pvalues[key] = test.p
        except ValueError as exc:
            entry["logrank"] = {"note": f"not computable: {exc}"}
        models[key] = entry
    adjusted = dict(zip(pvalues, bonferroni(list(pvalues.values()))))
    figures, panels = {}, []
    for key, entry in models.items():
        if key in adjusted:
            entry["logrank"]["p_bonferroni"] = float(adjusted[key])
            subtitle = (f"log-rank p = {entry['logrank']['p']:.3g} "
                        f"(Bonferroni over {len(adjusted)}: {adjusted[key]:.3g})")
        else:
            subtitle = "log-rank " + entry["logrank"]["note"]
        figures[entry["figure"]] = plot_kaplan_meier(curves[key], entry["title"], subtitle)
        panels.append((curves[key], entry["title"], subtitle))
    figures[KM_PANEL] = plot_kaplan_meier_panel(panels)  # Fig. 3: every model and the true grade
    result["correction"] = f"Bonferroni over the {len(adjusted)} log-rank tests made"
    result["models"] = models
    return result, figures


# ---------------------------------------------------------------------------- figures

def roc_figure(y: np.ndarray, curves: dict[str, tuple[np.ndarray, dict]], dl_key: str,
               indices: np.ndarray, cohort: str = "test cohort"):
    """ROC curves of all models; the DL model with its bootstrap 95% band and argmax point."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    for name, (p, block) in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        auc, ci = block["auc"]["value"], block["auc"]["ci95"]
        label = f"{name}: AUC {auc:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        line, = ax.plot(fpr, tpr, linewidth=2 if name == dl_key else 1.2, label=label,
                        zorder=3 if name == dl_key else 2)
        if name == dl_key:
            low, high = roc_band(y, p, indices, ROC_GRID)
            ax.fill_between(ROC_GRID, low, high, color=line.get_color(), alpha=0.2, linewidth=0,
                            label="95% CI (bootstrap)")
            c = block["confusion"]
            ax.plot(c["fp"] / (c["fp"] + c["tn"]), c["tp"] / (c["tp"] + c["fn"]), "o",
                    color=line.get_color(), label="argmax threshold", zorder=4)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"ROC, {cohort} (n={len(y)}, {int(y.sum())} high grade)", fontsize=10)
    fig.tight_layout()
    return fig


def _calibration_text(block: dict) -> str:
    return ", ".join(f"{label} {block[key]['value']:.2f}" for label, key in
                     (("slope", "calibration_slope"), ("intercept", "calibration_intercept"))
                     if block[key]["value"] is not None)


def calibration_figure(y: np.ndarray, models: dict[str, tuple[np.ndarray, dict]], n_bins: int,
                       cohort: str = "test cohort"):
    """Reliability diagram of each model with Wilson 95% intervals, and the patient count of each
    bin; one model's slope and intercept in the title, several models' in the legend."""
    import matplotlib.pyplot as plt

    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5.2, 6), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="perfect calibration")
    single = len(models) == 1
    counts = []
    for name, (p, block) in models.items():
        curve = reliability_curve(y, p, n_bins)
        filled = curve["count"] > 0
        text = _calibration_text(block)
        ax.errorbar(curve["mean_predicted"][filled], curve["observed"][filled],
                    yerr=[curve["observed"][filled] - curve["observed_low"][filled],
                          curve["observed_high"][filled] - curve["observed"][filled]],
                    fmt="o-", capsize=3, alpha=1 if single else 0.8,
                    label=f"{name} (Wilson 95% CI)" if single or not text else f"{name}: {text}")
        counts.append(curve["count"])
    title = f"calibration, {cohort} (n={len(y)})"
    text = _calibration_text(next(iter(models.values()))[1]) if single else ""
    ax.set_title(title + (f"\n{text}" if text else ""), fontsize=10)
    ax.set_ylabel("observed fraction high grade")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    edges = curve["edges"]
    width = np.diff(edges) * 0.9 / len(models)
    for k, count in enumerate(counts):  # bins side by side, one bar per model
        centres = edges[:-1] + np.diff(edges) * 0.05 + width * (k + 0.5)
        ax_count.bar(centres, count, width=width, color="0.6" if single else f"C{k}")
        for x, c in zip(centres, count):
            if c and single:
                ax_count.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=7)
    ax_count.set_ylabel("patients")
    ax_count.set_xlabel("predicted probability of high grade")
    ax_count.set_xlim(0, 1)
    ax_count.set_ylim(0, max(1, max(c.max() for c in counts)) * 1.25)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- tables

def _model_rows(models: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for key, block in models.items():
        row = {"model": key, "label": block.get("label", key), "n": block.get("n"),
               "threshold": block.get("threshold")}
        for name in ALL_METRICS:
            entry = block.get(name) or {}
            ci = entry.get("ci95") or [None, None]
            row.update({name: entry.get("value"), f"{name}_ci_low": ci[0],
                        f"{name}_ci_high": ci[1]})
        delong = block.get("delong_vs_dl") or {}
        row.update({"delong_z_vs_dl": delong.get("z"), "delong_p_vs_dl": delong.get("p")})
        rows.append(row)
    return pd.DataFrame(rows)


def table2(models: dict[str, dict]) -> pd.DataFrame:
    """Table 2: one row per model (metrics.json's `models`), each metric with its 95% CI."""
    return _model_rows(models)[["model", "n", *[f"{name}{suffix}" for name in ALL_METRICS
                                                for suffix in ("", "_ci_low", "_ci_high")]]]


def table2_markdown(models: dict[str, dict], delong: list[dict], cohort: str) -> str:
    """Table 2 and the DeLong matrix (p, Bonferroni-adjusted p) as Markdown."""
    header = ["model", "n", *[name.replace("_", " ") for name in ALL_METRICS]]
    lines = [f"Table 2, {cohort}: value (95% bootstrap CI, the same patient resamples for every "
             "model)", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, block in models.items():
        lines.append(f"| {name} | {block['n']} | "
                     + " | ".join(_cell(block[metric]) for metric in ALL_METRICS) + " |")
    if delong:
        names = list(models)
        cell = {(pair["a"], pair["b"]): pair for pair in delong}
        cell.update({(b, a): pair for (a, b), pair in list(cell.items())})
        lines += ["", f"Paired DeLong tests of the AUCs: p (Bonferroni-adjusted over the "
                      f"{sum(pair['p'] is not None for pair in delong)} pairs)", "",
                  "| | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
        for a in names:
            row = []
            for b in names:
                pair = cell.get((a, b))
                row.append("" if pair is None else "n/a" if pair["p"] is None
                           else f"{pair['p']:.3g} ({pair['p_adjusted']:.3g})")
            lines.append(f"| {a} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _confusion_rows(entries: list[tuple[str, str, float, dict]]) -> list[dict]:
    return [{"model": model, "rule": rule, "threshold": threshold, **confusion}
            for model, rule, threshold, confusion in entries]


def _cell(entry: dict) -> str:
    if entry.get("value") is None:
        return "n/a"
    ci = entry.get("ci95")
    return f"{entry['value']:.2f}" + (f" ({ci[0]:.2f} to {ci[1]:.2f})" if ci else "")


def print_summary(models: dict[str, dict], cohort: str = "test cohort") -> None:
    """Metrics (rows) by model (columns), value and 95% CI, on the console."""
    from rich.table import Table

    table = Table(title=f"{cohort}: value (95% bootstrap CI)", title_style="bold")
    table.add_column("metric")
    for key, block in models.items():
        table.add_column(block.get("label", key), justify="right")
    for name in ALL_METRICS:
        table.add_row(name.replace("_", " "),
                      *[_cell(block.get(name, {})) for block in models.values()])
    console.print(table)


# ---------------------------------------------------------------------------- stage

def _previous_km_figures(out: Path) -> list[Path]:
    """The Kaplan-Meier figures an earlier evaluation into `out` wrote, as its survival.json
    names them: a km_*.png that sarcograde did not write is never removed."""
    try:
        survival = evaluation_format.read_survival(out) or {}
    except SarcogradeError:  # a damaged record names nothing: remove nothing
        return []
    models = survival.get("models")
    names = [entry.get("figure") for entry in models.values()
             if isinstance(entry, dict)] if isinstance(models, dict) else []
    return [out / Path(name).name for name in names if isinstance(name, str)]


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Delete the optional outputs of an earlier run that are not in `keep`."""
    optional = [*_previous_km_figures(out), out / KM_PANEL, out / "roc.png",
                out / evaluation_format.COHORT_TABLE_CSV, out / evaluation_format.COHORT_TABLE_MD,
                out / "calibration_models.png"]
    for path in optional:
        if path.name not in keep:
            path.unlink(missing_ok=True)


def _inputs(args, predictions: dict[str, str], sites: dict[str, Path] | None) -> dict[str, Path]:
    if sites is None:
        inputs = {"manifest": args.manifest}
        files = {name: {None: Path(path)} for name, path in predictions.items()}
    else:
        inputs = {f"manifest/{site}": path for site, path in sites.items()}
        files = {name: {site: Path(path.replace("{site}", site)) for site in sites}
                 for name, path in predictions.items()}
    for name, by_site in files.items():
        for site, path in by_site.items():
            key = "predictions" if len(files) == 1 else f"predictions/{name}"
            inputs[key if site is None else f"{key}/{site}"] = path
    if args.train_manifest is not None:
        inputs["train_manifest"] = args.train_manifest
    if args.run is not None:
        for name in ("cv_predictions.csv", "folds.json"):
            if (args.run / name).is_file():
                inputs[f"run/{name}"] = args.run / name
    return inputs


def _site_counts(patients: list[Patient], y: np.ndarray) -> dict[str, dict[str, int]]:
    """Included patients per site: n, n_low, n_high (the pooled evaluation's composition)."""
    sites = np.array([pt.site for pt in patients], object)
    counts = {}
    for site in dict.fromkeys(sites.tolist()):
        here = y[sites == site]
        counts[site] = {"n": len(here), "n_low": int((here == 0).sum()),
                        "n_high": int(here.sum())}
    return counts


def _test_cohort(args) -> tuple[Cohort, dict[str, Path] | None]:
    """The test cohort: --manifest, or the sites of --pooled (then also site -> manifest)."""
    if (args.manifest is None) == (not args.pooled):
        raise SarcogradeError("give the test cohort as --manifest or as --pooled SITE=MANIFEST "
                              "(repeated), not both")
    if args.pooled:
        if args.baseline_predictions is not None:
            raise SarcogradeError("--baseline-predictions writes one site's predictions: "
                                  "evaluate each site without --pooled")
        return pooled_cohort(args.pooled)
    return load_manifest(args.manifest, strict=True), None


def run(args) -> int:
    if args.bootstrap < 1:
        raise SarcogradeError("--bootstrap must be at least 1")
    if args.run is not None and not args.run.is_dir():
        raise SarcogradeError("run folder not found", path=args.run)
    if args.baseline_predictions is not None and args.train_manifest is None:
        raise SarcogradeError("--baseline-predictions needs --train-manifest (the baselines are "
                              "fitted on the training cohort)")
    dl_label = f"DL-{args.sequence}" if args.sequence else "DL"
    prediction_paths = prediction_inputs(args, dl_label)
    single = len(prediction_paths) == 1 and args.predictions is not None
    test_cohort, sites = _test_cohort(args)
    frames, sources = {}, {}
    for name, path in prediction_paths.items():
        frame, sources[name], shown = read_model_predictions(path, sites and list(sites))
        frames[name] = (frame, shown)
        info(f"predictions of {name}: {sources[name]}, {len(frame)} patients, from {shown}")
    reference = next(iter(prediction_paths))
    source = sources[reference]
    cohort = "out-of-fold CV" if "label" in frames[reference][0].columns else "test cohort"
    if sites is not None:
        cohort = f"pooled {' + '.join(sites)}"
    train_cohort = (load_manifest(args.train_manifest, strict=True)
                    if args.train_manifest is not None else None)
    sequence = None
    if train_cohort is not None:
        sequence = test_cohort.require_sequence(args.sequence)
        train_cohort.require_sequence(sequence)
        for key, name in BASELINE_NAMES.items():
            if name in prediction_paths:
                raise SarcogradeError(f"model {name} given as a predictions file and fitted by "
                                      "--train-manifest: give one of them")

    included, probabilities, flow = match_models(frames, test_cohort)
    for entry in flow["excluded"]:
        if "missing_from" in entry:
            warn(f"{entry['patient_id']} left out of the comparison: not predicted by "
                 f"{', '.join(entry['missing_from'])}")
    for reason in ("not in manifest", "not predicted", "grade unknown"):
        ids = [e["patient_id"] for e in flow["excluded"] if e["reason"] == reason]
        if ids:
            warn(f"{len(ids)} patient(s) left out, {reason}: {', '.join(ids[:8])}"
                 + (" ..." if len(ids) > 8 else ""))
    if not included:
        raise SarcogradeError("no patient is both predicted and graded in the manifest "
                              "(patients are matched by patient_id)"
                              + ("" if single else " by every model"),
                              path=frames[reference][1])
    if "comparison" in flow:
        info(f"models compared on {flow['comparison']}")
    # one model: its key is "dl" as before; several: their names
    keys = {"dl" if single else name: name for name in prediction_paths}
    probabilities = {key: probabilities[name] for key, name in keys.items()}
    p = probabilities["dl" if single else reference]
    y = np.array([pt.label for pt in included], int)
    config = {"source": source, "bootstrap": args.bootstrap, "seed": args.seed,
              "sequence": sequence, "threshold": ARGMAX, "threshold_rule": RULE,
              "ci": "bootstrap percentile, 95%"}
    if not single:
        config["models"] = prediction_paths
    if sites is not None:
        config["pooled"] = {site: str(path) for site, path in sites.items()}

    with RunRecord(args.out, config=config, inputs=_inputs(args, prediction_paths, sites),
                   seed=args.seed):
        indices = resample_indices(len(y), args.bootstrap, args.seed)  # shared by every model
        n_bins = 10 if len(y) >= 100 else 5
        models = {key: {"label": name, "n": len(y), "threshold": ARGMAX,
                        **metric_block(y, probabilities[key], ARGMAX, indices)}
                  for key, name in keys.items()}
        dl = next(iter(models.values()))
        metrics = {
            "model": reference, "predictions": str(frames[reference][1]), "source": source,
            "n": len(y), "n_low": int((y == 0).sum()), "n_high": int(y.sum()),
            "threshold": ARGMAX, "threshold_rule": RULE,
            **{k: v for k, v in dl.items() if k not in ("label", "n", "threshold")},
            "bootstrap": {"resamples": args.bootstrap, "seed": args.seed,
                          "interval": "percentile, 95%", "unit": "patient",
                          "skipped_single_class": _single_class_resamples(y, indices)},
            "calibration": {"bins": n_bins, "slope": "logistic fit y ~ a + b logit(p)",
                            "intercept": "calibration-in-the-large, y ~ a + offset(logit(p))"},
            "youden": ({"note": "not computed: no --run given"} if args.run is None
                       else youden_block(args.run, included, y, p, indices)),
        }
        confusion = [(name, "argmax", ARGMAX, models[key]["confusion"])
                     for key, name in keys.items()]
        if "threshold" in metrics["youden"]:
            confusion.insert(1, (reference, "youden", metrics["youden"]["threshold"],
                                 metrics["youden"]["confusion"]))
        table = None
        baseline_files = {}
        if train_cohort is not None:
            train_patients = [pt for pt in train_cohort if pt.label is not None]
            if len(train_patients) < len(train_cohort):
                warn(f"{len(train_cohort) - len(train_patients)} training patient(s) without a "
                     "grade left out of the baselines and the cohort table")
            # --baseline-predictions predicts every test patient, so measure all their volumes
            measured = list(test_cohort) if args.baseline_predictions is not None else included
            cache = evaluation_format.tumour_volumes_path
            volumes = (bl.tumour_volumes(train_patients, sequence, cache(args.out, "train")),
                       bl.tumour_volumes(measured, sequence, cache(args.out, "test")))
            baselines, baseline_p, fits = run_baselines(args, train_patients, included, volumes,
                                                        y, p, indices)
            metrics["baselines"] = baselines
            for note in baselines["imputation"] + baselines["dropped_features"]:
                info(f"baselines: {note}")
            if "note" in baselines:
                warn(f"baselines: {baselines['note']}")
            for key, block in baselines["models"].items():
                if key in baseline_p:
                    models[key] = {"n": len(y), **block}
                    probabilities[key] = baseline_p[key]
                    keys[key] = BASELINE_NAMES[key]
                    confusion.append((BASELINE_NAMES[key] if not single else bl.LABELS[key],
                                      "argmax", ARGMAX, block["confusion"]))
                else:
                    warn(f"baseline {key}: {block['note']}")
            if args.baseline_predictions is not None:
                baseline_files = baseline_predictions(args.baseline_predictions, fits,
                                                      list(test_cohort), volumes[1])
            table = cohort_table(train_patients, included, volumes)
            names = (_cohort_name(train_patients, "Training"), _cohort_name(included, "Test"))
        else:
            metrics["baselines"] = {"note": "not computed: no --train-manifest given"}

        # the comparison: every model (prediction files, then baselines) by its study name
        metrics["models"] = {keys[key]: {"n": block["n"], **{
            k: v for k, v in block.items() if k not in ("label", "n", "delong_vs_dl")}}
            for key, block in models.items()}
        for name in prediction_paths:
            metrics["models"][name].update(source=sources[name],
                                           predictions=str(frames[name][1]))
        metrics["delong"] = delong_matrix(y, {keys[k]: probabilities[k] for k in models})
        metrics["delong_adjustment"] = ("Bonferroni over the pairs tested (p_adjusted = p x "
                                        "pairs, capped at 1); paired DeLong test, two-sided")
        metrics["pooled"] = sites is not None
        if sites is not None:
            metrics["sites"] = _site_counts(included, y)

        predicted_groups = ("predicted low", "predicted high")
        groupings = {key: (f"{models[key]['label']}: predicted grade",
                           np.where(classify(probabilities[key]) == 1, *predicted_groups[::-1]),
                           predicted_groups)
                     for key in models}
        grade_groups = ("low (G1)", "high (G2/G3)")
        groupings["grade"] = ("True grade (FNCLCC)", np.where(y == 1, *grade_groups[::-1]),
                              grade_groups)
        survival, km_figures = survival_analysis(included, groupings)
        if "note" in survival:
            warn(f"survival: {survival['note']}")

        # Everything is computed; now write, each file atomically, and drop what an earlier
        # run into the same folder wrote but this one does not (a stale figure would mislead).
        labelled = {keys[k]: (probabilities[k], models[k]) for k in models}
        _remove_stale(args.out, keep=set(km_figures)
                      | ({"roc.png"} if dl["auc"]["value"] is not None else set())
                      | ({"calibration_models.png"} if len(models) > 1 else set())
                      | ({evaluation_format.COHORT_TABLE_CSV, evaluation_format.COHORT_TABLE_MD}
                         if table is not None else set()))
        evaluation_format.write_patient_flow(args.out, flow)
        evaluation_format.write_metrics(args.out, metrics)
        evaluation_format.write_confusion(args.out, _confusion_rows(confusion))
        evaluation_format.write_baselines(args.out, _model_rows(models))
        evaluation_format.write_table2(args.out, table2(metrics["models"]), table2_markdown(
            metrics["models"], metrics["delong"], cohort))
        evaluation_format.write_delong(args.out, metrics["delong"])
        evaluation_format.write_baseline_predictions(
            args.out, [pt.patient_id for pt in included], y, probabilities)
        evaluation_format.write_survival(args.out, survival)
        for path, frame in baseline_files.items():
            predictions_format.write_predictions(path, frame)
        for name, fig in km_figures.items():
            save_figure(fig, args.out / name)
        if dl["auc"]["value"] is not None:
            roc_models = {(models[k]["label"] if single else keys[k]): labelled[keys[k]]
                          for k in models}
            save_figure(roc_figure(y, roc_models, next(iter(roc_models)), indices, cohort),
                        args.out / "roc.png")
        else:
            warn(f"roc.png not drawn: {dl['auc']['note']}")
        save_figure(calibration_figure(y, {reference: (p, dl)}, n_bins, cohort),
                    args.out / "calibration.png")
        if len(models) > 1:
            save_figure(calibration_figure(y, labelled, n_bins, cohort),
                        args.out / "calibration_models.png")
        if table is not None:
            frame, footnote = table
            evaluation_format.write_cohort_table(args.out, frame, to_markdown(frame, footnote,
                                                                              names))

    for path in baseline_files:
        info(f"wrote baseline predictions {path}")
    print_summary(models, cohort)
    info(f"evaluated {len(y)} patients ({int((y == 0).sum())} low, {int(y.sum())} high grade); "
         f"wrote {args.out}")
    return 0
