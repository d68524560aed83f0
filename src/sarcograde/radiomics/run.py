"""The radiomics model's run folder: `fit` writes it from a training cohort's features.csv,
`predict` applies its fold models to another cohort's features.csv.

RUN/ holds `config.json`, `folds.json` and `cv_predictions.csv` written by `sarcograde.formats.run`
as `sarcograde train` writes them (so that `evaluate --run` and the study's fusion read them
alike), `models.json` (the fitted pipelines' numbers) and `selected_features.csv` written by
`sarcograde.formats.radiomics`, and `run.json`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from ..artifacts import RunRecord, hash_config, hash_path
from ..cohort import load_manifest
from ..console import info, warn
from ..errors import SarcogradeError
from ..formats.predictions import write_predictions
from ..formats.radiomics import (MODELS, FoldModel, RadiomicsModels, read_extraction_config,
                                 read_features, read_radiomics_models, write_radiomics_models,
                                 write_selected_features)
from ..formats.records import file_record_name
from ..formats.run import (CV_PREDICTIONS, Folds, read_cv_predictions, write_cv_predictions,
                           write_folds, write_run_config)
from ..splits import make_splits
from .model import RadiomicsFit, fit_cv, selected_features
from .settings import Settings


def _named(ids: list[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def training_labels(features: pd.DataFrame, manifest: Path) -> pd.Series:
    """0/1 per patient with features and a known grade; others left out with a warning."""
    cohort = load_manifest(manifest, strict=True)
    labels = {p.patient_id: p.label for p in cohort}
    no_features = [pid for pid, y in labels.items() if y is not None and pid not in features.index]
    unknown = [pid for pid in features.index if labels.get(pid, None) is None]
    if no_features:
        warn(f"radiomics fit: {len(no_features)} graded patient(s) of the manifest have no "
             f"features and are left out: {_named(no_features)}")
    if unknown:
        warn(f"radiomics fit: {len(unknown)} patient(s) without a grade (or not in the manifest) "
             f"are left out: {_named(unknown)}")
    return pd.Series({pid: labels[pid] for pid in features.index if labels.get(pid) is not None},
                     dtype=int)


def fit_run(features_path: Path, manifest: Path, out: Path, settings: Settings, *,
            folds: int, repeats: int, seed: int) -> RadiomicsFit:
    features = read_features(features_path)
    labels = training_labels(features, manifest)
    ids = list(labels.index)
    splits, adaptation = make_splits(ids, labels.to_numpy(), folds, repeats, seed)
    # the extraction's config.json beside features.csv, recorded with the run
    config = {"settings": settings.as_dict(),
              "extraction": read_extraction_config(features_path.parent),
              "features": str(features_path.resolve()), "features_hash": hash_path(features_path),
              "manifest": str(Path(manifest).resolve()), "folds": folds, "repeats": repeats,
              "seed": seed}
    config["config_hash"] = hash_config(config)
    with RunRecord(out, config=config, seed=seed,
                   inputs={"features": features_path, "manifest": manifest}) as record:
        info(f"radiomics fit: {len(ids)} patients x {features.shape[1]} features, "
             f"{len(splits)} fold models -> {out}")
        fit = fit_cv(features.loc[ids], labels, splits, settings.model, seed)
        write_radiomics_models(out, RadiomicsModels(
            fit.columns, splits, [FoldModel.from_pipeline(m) for m in fit.models],
            config["config_hash"]))
        write_run_config(out, config)
        write_folds(out, Folds(folds=len(splits) // repeats, repeats=repeats, seed=seed,
                               splits=splits, folds_requested=folds, adaptation=adaptation))
        write_cv_predictions(out / CV_PREDICTIONS, fit.cv_predictions)
        selected = pd.concat(
            [selected_features(m, fit.columns).rename_axis("feature").rename("coefficient")
             .reset_index().assign(model=s.name) for s, m in zip(splits, fit.models)],
            ignore_index=True)
        write_selected_features(out, selected)
        record.record["n_patients"] = len(ids)
        record.record["selected_per_model"] = selected.groupby("model").size().reindex(
            [s.name for s in splits], fill_value=0).tolist()
    return fit


def load_run(run: Path) -> RadiomicsFit:
    stored = read_radiomics_models(run)
    cv = read_cv_predictions(run / CV_PREDICTIONS)
    return RadiomicsFit(stored.columns, stored.splits, stored.models, cv)


def predict_run(run: Path, features_path: Path, out: Path) -> pd.DataFrame:
    """predictions in predict's format: patient_id, p_high, predicted, spread over the fold
    models, p_fold_XX (each model's sigmoid of its logit)."""
    fit = load_run(run)
    features = read_features(features_path)
    try:
        logits = fit.fold_logits(features)
    except SarcogradeError as exc:
        raise SarcogradeError(exc.problem, path=features_path) from None
    p_fold = expit(logits)
    p_high = expit(logits.mean(axis=0))
    frame = pd.DataFrame({"patient_id": features.index, "p_high": p_high,
                          "predicted": (p_high > 0.5).astype(int),
                          "p_high_sd": p_fold.std(axis=0, ddof=1) if len(p_fold) > 1 else np.nan,
                          "p_high_min": p_fold.min(axis=0), "p_high_max": p_fold.max(axis=0)})
    for split, p in zip(fit.splits, p_fold):
        frame[f"p_{split.name}"] = p
    with RunRecord(out.parent, name=file_record_name(out),
                   config={"run": str(run.resolve()), "aggregate": "logits",
                           "models": [s.name for s in fit.splits]},
                   inputs={"features": features_path, "models": run / MODELS}):
        write_predictions(out, frame)
    info(f"radiomics predict: {len(frame)} patients -> {out}")
    return frame
