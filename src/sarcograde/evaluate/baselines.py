"""The logistic-regression baselines (clinical, tumour volume, both) in an evaluation: fitted by
cross-validation on the training cohort (the DL run's own splits where they fit), scored on the
test patients with the same bootstrap resamples and compared with the reference model by
DeLong; their predictions of every test patient as files; Table 1 beside them (it needs the same
tumour volumes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import baselines as bl
from .. import model_kinds as kinds
from ..cohort import Patient
from ..cohort_table import cohort_table, to_markdown
from ..console import info, warn
from ..formats import evaluation as evaluation_format
from ..formats import run as run_format
from ..outcome import outcome
from ..stats import classify, delong_test
from .inputs import Inputs
from .metrics import ARGMAX, Scored, metric_block

# a baseline's key in baselines.py -> its model name
BASELINE_NAMES = {key: name for name, key in kinds.BASELINE_KEYS.items()}
NO_MASKS = ("not computable: the tumour volume needs the masks, and the manifests have no "
            "image_<SEQ> and mask_<SEQ> columns")


@dataclass
class Baselines:
    """The baselines' part of an evaluation."""

    block: dict                                    # metrics.json's `baselines`
    models: list[Scored]                           # those that could be fitted, in order
    files: dict[Path, pd.DataFrame]                # --baseline-predictions: file -> rows
    cohort_table: tuple[pd.DataFrame, str] | None  # Table 1 and its Markdown


def _cohort_name(patients: list[Patient], fallback: str) -> str:
    sites = {p.site for p in patients}
    return f"{fallback} ({sites.pop()})" if len(sites) == 1 and None not in sites else fallback


def baseline_splits(run: Path | None, ids: list[str], labels: np.ndarray, seed: int
                    ) -> tuple[list[bl.Split], dict]:
    """The DL run's own splits when they cover exactly these patients, else new stratified ones."""
    folds, repeats, source = 5, 3, "repeated stratified k-fold (scikit-learn), seeded"
    if run is not None:
        path = run / run_format.FOLDS
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
                  volumes: tuple[dict, dict] | None, y: np.ndarray, p_dl: np.ndarray,
                  indices: np.ndarray
                  ) -> tuple[dict, dict[str, np.ndarray], dict[str, bl.BaselineFit]]:
    """Fit the three baselines by CV on the training cohort; metrics and DeLong on the test one.
    `volumes` None: the manifests name no masks, and the baselines with the volume are not fitted.

    Returns metrics.json's baselines block, the test patients' p_high and the fits by baseline."""
    x_train = bl.feature_table(train_patients, volumes and volumes[0])
    x_test = bl.feature_table(test_patients, volumes and volumes[1])
    labels = pd.Series([p.label for p in train_patients], index=x_train.index)
    empty = [c for c in x_train.columns if x_train[c].isna().all()
             and (volumes is not None or c not in bl.VOLUME)]
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
        if volumes is None and set(columns) & set(bl.VOLUME):
            block["models"][name] = {"note": NO_MASKS}
            continue
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
                         patients: list[Patient], volumes: dict[str, float] | None
                         ) -> dict[Path, pd.DataFrame]:
    """Each fitted baseline's predictions of `patients` by file, FOLDER/<model>.csv (patient_id,
    p_high, predicted): the prediction files a study gives evaluate like any other model's."""
    features = bl.feature_table(patients, volumes)
    files = {}
    for key, fit in fits.items():
        p = fit.predict(features)
        files[folder / kinds.prediction_file(BASELINE_NAMES[key])] = pd.DataFrame(
            {"patient_id": features.index, "p_high": p, "predicted": classify(p, ARGMAX)})
    return files


def score_baselines(args, inputs: Inputs, y: np.ndarray, indices: np.ndarray,
                    p_reference: np.ndarray) -> Baselines:
    """The baselines fitted on --train-manifest's graded patients and scored on the test ones,
    with Table 1; without --train-manifest a note."""
    if inputs.train_cohort is None:
        return Baselines({"note": "not computed: no --train-manifest given"}, [], {}, None)
    train_patients = [pt for pt in inputs.train_cohort if pt.label is not None]
    if len(train_patients) < len(inputs.train_cohort):
        warn(f"{len(inputs.train_cohort) - len(train_patients)} training patient(s) without a "
             "grade left out of the baselines and the cohort table")
    # --baseline-predictions predicts every test patient, so measure all their volumes
    test_patients = list(inputs.test_cohort)
    measured = test_patients if args.baseline_predictions is not None else inputs.patients
    cache = evaluation_format.tumour_volumes_path
    volumes = None if inputs.sequence is None else (
        bl.tumour_volumes(train_patients, inputs.sequence, cache(args.out, "train")),
        bl.tumour_volumes(measured, inputs.sequence, cache(args.out, "test")))
    block, probabilities, fits = run_baselines(args, train_patients, inputs.patients, volumes,
                                               y, p_reference, indices)
    for note in block["imputation"] + block["dropped_features"]:
        info(f"baselines: {note}")
    if "note" in block:
        warn(f"baselines: {block['note']}")
    models = []
    for key, result in block["models"].items():
        if key not in probabilities:
            warn(f"baseline {key}: {result['note']}")
            continue
        name = BASELINE_NAMES[key]
        # a lone predictions file's outputs show the baselines by label, as before issue 12
        models.append(Scored(name=name, key=key, shown=bl.LABELS[key] if inputs.single else name,
                             p=probabilities[key], block={"n": len(y), **result}))
    files = ({} if args.baseline_predictions is None else
             baseline_predictions(args.baseline_predictions, fits, test_patients,
                                  volumes and volumes[1]))
    frame, footnote = cohort_table(train_patients, inputs.patients, volumes,
                                   outcome(args.target))
    names = (_cohort_name(train_patients, "Training"), _cohort_name(inputs.patients, "Test"))
    return Baselines(block, models, files, (frame, to_markdown(frame, footnote, names)))
