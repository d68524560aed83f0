"""Late fusion of the sequences' DL ensembles (`DL-fusion`): a logistic regression on their logits.

Each sequence's ensemble gives a patient p_high = softmax of the mean logits, so
logit(p_high) is exactly the ensemble's mean logit margin. `fit` learns
p = sigmoid(b0 + sum_s b_s * logit(p_s)) with scikit-learn's LogisticRegression on the
TRAINING cohort's out-of-fold predictions only (RUN/cv_predictions.csv of each sequence, the
margin averaged over the repeats), so that no test patient and no in-fold prediction is seen.
One such model is fitted for every non-empty subset of the sequences, on the same out-of-fold
data, so that `apply` grades a patient missing a sequence with the fusion of what exists and
names the sequences used.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from . import model_kinds as kinds
from .artifacts import RunRecord, write_csv
from .console import info, warn
from .errors import SarcogradeError
from .formats.fusion import FUSION_MODEL, read_fusion_model, write_fusion_model
from .formats.package import is_package, package_file, read_package
from .formats.predictions import read_predictions
from .formats.records import file_record_name
from .formats.run import CV_PREDICTIONS, read_cv_predictions
from .options import add_renamed_option, named_paths
from .recalibrate import recalibrate_table

MODEL_NAME = kinds.name(kinds.FUSION)  # model.json's "model"
# Probabilities of exactly 0 or 1 (float32 softmax) would give infinite margins.
EPS = 1e-6
CLASSIFIER = ("LogisticRegression(C=1.0, L2, lbfgs) of scikit-learn on the sequences' "
              "out-of-fold logit margins")


def margin(p_high) -> np.ndarray:
    """logit(p_high): the ensemble's mean logit margin (high minus low grade)."""
    p = np.clip(np.asarray(p_high, float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def out_of_fold_margins(cv_predictions: Path) -> pd.DataFrame:
    """One row per training patient: label and the margin averaged over the CV repeats."""
    frame = read_cv_predictions(cv_predictions)
    frame["margin"] = margin(frame["p_high"])
    grouped = frame.groupby("patient_id", sort=True)
    if (grouped["label"].nunique() > 1).any():
        raise SarcogradeError("a patient has different labels in different repeats",
                              path=cv_predictions)
    return grouped.agg(label=("label", "first"), margin=("margin", "mean"))


def fit(cv_predictions: dict[str, Path]) -> dict:
    """model.json's content: one logistic regression per non-empty subset of the sequences."""
    sequences = list(cv_predictions)
    if len(sequences) < 2:
        raise SarcogradeError("fusion needs at least two sequences")
    margins = {seq: out_of_fold_margins(path) for seq, path in cv_predictions.items()}
    models = []
    for size in range(len(sequences), 0, -1):
        for subset in itertools.combinations(sequences, size):
            table = pd.concat({seq: margins[seq]["margin"] for seq in subset}, axis=1,
                              join="inner")
            labels = pd.concat([margins[seq]["label"] for seq in subset], axis=1, join="inner")
            if (labels.nunique(axis=1) > 1).any():
                pid = labels.index[labels.nunique(axis=1) > 1][0]
                raise SarcogradeError("the sequences' runs give this patient different labels: "
                                      "were they trained on the same manifest?", patient=pid)
            y = labels.iloc[:, 0].astype(int).to_numpy()
            if len(set(y)) < 2:
                raise SarcogradeError(f"the training patients with {'+'.join(subset)} are of "
                                      "one class only; fusion cannot be fitted")
            regression = LogisticRegression(C=1.0, max_iter=1000).fit(table.to_numpy(), y)
            models.append({"sequences": list(subset),
                           "coefficients": dict(zip(subset, regression.coef_[0].tolist())),
                           "intercept": float(regression.intercept_[0]),
                           "n": int(len(y)), "n_high": int(y.sum()), "n_low": int((y == 0).sum())})
    return {"model": MODEL_NAME, "classifier": CLASSIFIER, "sequences": sequences,
            "input": "logit(p_high) of each sequence's ensemble, out-of-fold, mean over repeats",
            "models": models}


def apply(model: dict, predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """DL-fusion rows (patient_id, p_high, predicted, sequences_used, complete) for every
    patient predicted by at least one of the model's sequences."""
    unknown = set(predictions) - set(model["sequences"])
    if unknown:
        raise SarcogradeError(f"the fusion model has no sequence {', '.join(sorted(unknown))}; "
                              f"it was fitted on {', '.join(model['sequences'])}")
    by_subset = {tuple(m["sequences"]): m for m in model["models"]}
    margins = pd.concat({seq: pd.Series(margin(frame["p_high"]), index=frame["patient_id"])
                         for seq, frame in predictions.items()}, axis=1)
    rows = []
    for pid, values in margins.iterrows():
        used = tuple(seq for seq in model["sequences"] if seq in values and pd.notna(values[seq]))
        sub = by_subset[used]
        z = sub["intercept"] + sum(sub["coefficients"][seq] * values[seq] for seq in used)
        p_high = float(_sigmoid(np.asarray(z)))
        rows.append({"patient_id": pid, "p_high": p_high, "predicted": int(p_high > 0.5),
                     "sequences_used": "+".join(used),
                     "complete": int(len(used) == len(model["sequences"]))})
    return pd.DataFrame(rows, columns=["patient_id", "p_high", "predicted", "sequences_used",
                                       "complete"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit_parser = sub.add_parser("fit", help="fit the fusion on the training runs' out-of-fold "
                                            "predictions -> OUT/model.json")
    fit_parser.add_argument("--run", action="append", required=True, metavar="SEQ=RUN",
                            help="a sequence's training run folder (repeat for each sequence)")
    fit_parser.add_argument("--out", type=Path, required=True, help="fusion folder")
    apply_parser = sub.add_parser("apply", help="grade a site with a fitted fusion -> CSV")
    apply_parser.add_argument("model", type=Path, metavar="MODEL|PKG",
                              help="model.json written by `fusion fit`, or a model package "
                                   "(`sarcograde export`) with a fusion")
    add_renamed_option(apply_parser, "fusion apply", "--sequence", action="append",
                       required=True, metavar="SEQ=CSV",
                       help="a sequence and its DL model's predictions.csv, from `sarcograde "
                            "predict` (repeat for each sequence)")
    apply_parser.add_argument("--out", type=Path, required=True, help="output CSV (DL-fusion.csv)")


def _fusion_model(path: Path) -> tuple[dict, dict | None]:
    """`fusion fit`'s model.json, or a model package's fusion; with the package's
    recalibration for a site (`sarcograde recalibrate`), if it has one."""
    if not is_package(path):
        return read_fusion_model(path, MODEL_NAME), None
    package = read_package(path)
    if package.fusion is None:
        raise SarcogradeError("the model package has no fusion (it grades one sequence)",
                              path=path)
    return package.fusion, package.recalibration


def run(args: argparse.Namespace) -> int:
    if args.action == "fit":
        runs = named_paths(args.run, "--run")
        inputs = {f"{seq}/{CV_PREDICTIONS}": path / CV_PREDICTIONS for seq, path in runs.items()}
        for path in inputs.values():
            if not path.is_file():
                raise SarcogradeError(f"no {CV_PREDICTIONS}: is this a finished "
                                      "`sarcograde train` run?", path=path)
        with RunRecord(args.out, config={"classifier": CLASSIFIER}, inputs=inputs):
            model = fit({seq: path / CV_PREDICTIONS for seq, path in runs.items()})
            write_fusion_model(args.out, model)
        full = model["models"][0]
        info(f"fusion: fitted on {full['n']} training patients ({full['n_low']} low grade), "
             f"coefficients {', '.join(f'{s} {c:.3f}' for s, c in full['coefficients'].items())}"
             f" -> {args.out / FUSION_MODEL}")
        return 0
    model, recalibration = _fusion_model(args.model)
    paths = named_paths(args.sequence, "--sequence")
    frames = {seq: read_predictions(path) for seq, path in paths.items()}
    for seq, frame in frames.items():
        twice = frame["patient_id"][frame["patient_id"].duplicated()]
        if len(twice):
            raise SarcogradeError("patient predicted twice", patient=twice.iloc[0],
                                  path=paths[seq])
    inputs = {"model": package_file(args.model) if is_package(args.model) else args.model,
              **{seq: path for seq, path in paths.items()}}
    with RunRecord(args.out.parent, config={"model": str(args.model)}, inputs=inputs,
                   name=file_record_name(args.out)):
        table = recalibrate_table(apply(model, frames), recalibration)
        write_csv(args.out, table)
    partial = table[table["complete"] == 0]
    if len(partial):
        warn(f"fusion: {len(partial)} patient(s) graded without every sequence: "
             + ", ".join(f"{r.patient_id} ({r.sequences_used})"
                         for r in partial.head(8).itertuples()))
    info(f"fusion: {len(table)} patient(s) -> {args.out}")
    return 0
