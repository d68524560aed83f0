"""`sarcograde recalibrate PKG --predictions CSV --manifest SITE.csv --site NAME --out PKG2`: a new
version of a model package whose graded model (the fusion, or the one sequence's ensemble) is
recalibrated for a site.

The site's labelled patients must have been graded by PKG first: --predictions is the graded
model's p_high of them (grade's grades.csv, or a study's predict/<site>/PKG-fusion.csv), the
manifest gives their grades. The logistic recalibration is `evaluate --recalibrate`'s (the same
fit and the same rule for fitting the slope), on every graded patient or on --n of them drawn
stratified by class with --seed. PKG2 is PKG's weights and settings with model.json's
`recalibration` block, a new id and a model card that names the site, N and the change; `grade`,
`fusion apply` (a fusion package) and `predict` (a package of one sequence) then apply it to the
graded model's p_high (`recalibrate_table`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import RunRecord
from .cohort import load_manifest
from .console import info
from .errors import SarcogradeError
from .evaluate.recalibration import SLOPE_RULE, fit_recalibration, recalibration_split
from .formats.package import (MODEL_JSON, RECALIBRATION, is_package, package_file,
                              read_package, write_package)
from .formats.predictions import read_predictions
from .formats.records import file_record_name
from .model_card import render_card
from .stats import recalibrated

# model.json's keys that write_package sets afresh
WRITTEN = ("id", "files", "checksum")


def recalibrate_table(table: pd.DataFrame, recalibration: dict | None) -> pd.DataFrame:
    """A predictions table of the graded model with p_high after the package's recalibration
    for a site (`predicted` following it) and the value before kept as p_high_uncalibrated; the
    table unchanged without one."""
    if recalibration is None or table.empty:
        return table
    table = table.assign(p_high_uncalibrated=table["p_high"])
    table["p_high"] = recalibrated(table["p_high"].to_numpy(float), recalibration["intercept"],
                                   recalibration["slope"])
    table["predicted"] = (table["p_high"] > 0.5).astype(int)
    return table


def graded_recalibration(model: Path) -> dict | None:
    """The recalibration that `predict` applies: a package's, where the package grades with
    the one sequence it predicts (a fusion package's sequence models are not its graded model)."""
    if not is_package(model):
        return None
    package = read_package(model)
    return package.recalibration if package.fusion is None else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("package", type=Path, metavar="PKG",
                        help="the model package (folder or zip) from `sarcograde export`")
    parser.add_argument("--predictions", type=Path, required=True, metavar="CSV",
                        help="PKG's graded model's predictions of the site's patients "
                             "(patient_id, p_high): grade's grades.csv or a study's "
                             "predict/<site>/PKG-fusion.csv")
    parser.add_argument("--manifest", type=Path, required=True, metavar="SITE.csv",
                        help="the site's manifest: the patients' grades")
    parser.add_argument("--site", required=True, help="the site's name, recorded in the package")
    parser.add_argument("--out", type=Path, required=True, metavar="PKG2",
                        help="the new package (a folder, or one zip file with --zip)")
    parser.add_argument("--n", type=int, metavar="N",
                        help="fit on N of the graded patients, drawn stratified by class with "
                             "--seed (default: all of them)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --n draw (default 0)")
    parser.add_argument("--zip", action="store_true", help="write PKG2 as one zip file")


def site_labels(predictions: Path, manifest: Path, package_id: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """The p_high and the class of every patient both predicted and graded in the manifest."""
    frame = read_predictions(predictions)
    if "model_id" in frame.columns:  # grades.csv says which package graded each patient
        other = frame[frame["model_id"].astype(str) != package_id]
        if len(other):
            raise SarcogradeError(f"graded by package {other['model_id'].iloc[0]}, not by "
                                  f"{package_id}", patient=other["patient_id"].iloc[0],
                                  path=predictions)
    twice = frame["patient_id"][frame["patient_id"].duplicated()]
    if len(twice):
        raise SarcogradeError("patient predicted twice", patient=twice.iloc[0], path=predictions)
    labels = {pt.patient_id: pt.label for pt in load_manifest(manifest, strict=True)
              if pt.label is not None}
    graded = frame[frame["patient_id"].isin(labels)]
    y = np.array([labels[pid] for pid in graded["patient_id"]], int)
    if len(y) < 2 or y.min() == y.max():
        raise SarcogradeError(f"{len(y)} patient(s) both predicted and graded, not both classes: "
                              "nothing to recalibrate on", path=manifest)
    return graded["p_high"].to_numpy(float), y


def recalibration_block(p: np.ndarray, y: np.ndarray, site: str, previous: str,
                        n: int | None, seed: int) -> dict:
    """model.json's `recalibration`: the fit on the (drawn) patients and what it came from."""
    drawn = {}
    if n is not None:
        fit, _ = recalibration_split(y, n, seed)
        p, y = p[fit], y[fit]
        drawn = {"seed": seed, "drawn": "stratified by class"}
    a, b, form = fit_recalibration(y, p)
    if not np.isfinite(a):
        raise SarcogradeError(f"no finite logistic recalibration on the {len(y)} patients of "
                              f"{site}")
    return {"site": site, "n": len(y), "n_low": int((y == 0).sum()), "n_high": int(y.sum()),
            **drawn, "fit": form, "rule": SLOPE_RULE, "intercept": a, "slope": b,
            "model": "p_high = expit(intercept + slope * logit(p_high of the graded model))",
            "previous_package": previous}


def run(args: argparse.Namespace) -> int:
    package = read_package(args.package)
    if package.recalibration is not None:
        raise SarcogradeError(f"the package is already recalibrated for site "
                              f"{package.recalibration.get('site')}; recalibrate the package it "
                              f"came from ({package.recalibration.get('previous_package')})",
                              path=package.shown(MODEL_JSON))
    p, y = site_labels(args.predictions, args.manifest, package.id)
    inputs = {"package": package_file(args.package), "predictions": args.predictions,
              "manifest": args.manifest}
    with RunRecord(args.out.parent, config={"site": args.site, "n": args.n, "seed": args.seed,
                                            "zip": args.zip},
                   inputs=inputs, name=file_record_name(args.out)) as record:
        block = recalibration_block(p, y, args.site, package.id, args.n, args.seed)
        document = {k: v for k, v in package.document.items() if k not in WRITTEN}
        document[RECALIBRATION] = block
        weights = ((fold.weights, state) for seq in package.sequences
                   for fold, state in package.state_dicts(seq))
        graphs = ((fold.onnx, package.read(fold.onnx)) for model in package.models.values()
                  for fold in model.folds if fold.onnx)  # `export --onnx`'s, carried as they are
        written = write_package(args.out, document, weights, render_card, args.zip, graphs)
        record.record["package"] = {"id": written["id"], "previous": package.id}
    info(f"recalibrate: {block['fit']} on {block['n']} patients of {args.site} ({block['n_high']}"
         f" high), intercept {block['intercept']:.3f}, slope {block['slope']:.3f}; package "
         f"{written['id']} (from {package.id}) -> {args.out}")
    return 0
