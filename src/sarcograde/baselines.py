"""Logistic-regression baselines of the paper (section 2.8): clinical, tumour volume, and both.

Each baseline is fitted with the same repeated stratified cross-validation as the deep-learning
model on the training cohort (one model per fold), and the test cohort gets the mean of the fold
models' probabilities, as the DL ensemble does. Features are standardised; a missing value is
imputed with the median of the fold's training patients (scikit-learn pipeline). The logistic
regression is class-weighted (inverse class frequency), like the DL model's loss.

The tumour volume is counted from the mask files (voxels x voxel volume) and cached per patient
with a hash of the mask, so that a rerun reads no image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from . import model_kinds as kinds
from .artifacts import hash_path
from .cohort import Patient
from .console import progress
from .errors import SarcogradeError
from .formats.evaluation import read_tumour_volumes, write_tumour_volumes
from .io import is_dicom_contour, read_mask
from .masks import MaskSource, mask_source
from .sequence_image import read_sequence_image
from .splits import Split, make_splits

CLINICAL = ("t_stage", "n_stage", "m_stage", "age")
VOLUME = ("log_volume_ml",)
# each baseline's features and label by its key (model_kinds.BASELINE_KEYS)
_KEY = kinds.BASELINE_KEYS
BASELINES = {_KEY[kinds.CLINICAL]: CLINICAL, _KEY[kinds.VOLUME]: VOLUME,
             _KEY[kinds.CLINICAL_VOLUME]: CLINICAL + VOLUME}
LABELS = {_KEY[kinds.CLINICAL]: "Clinical", _KEY[kinds.VOLUME]: "Tumour volume",
          _KEY[kinds.CLINICAL_VOLUME]: "Clinical + volume"}


def _volume_key(source: MaskSource, patient_id: str) -> str:
    """What the volume depends on: the mask's bytes (and image and ROI for an RTSTRUCT or SEG)."""
    mask = source.mask
    dicom_contour = is_dicom_contour(mask)
    for path in (mask, source.image) if dicom_contour else (mask,):
        if not path.exists():
            raise SarcogradeError("file not found", patient=patient_id, path=path)
    key = hash_path(mask)
    if dicom_contour:
        key += f"|{source.roi or ''}|{hash_path(source.image)}"
        if source.series is not None:
            key += f"|{source.series}"
    return key


def _measure_volume(patient: Patient, source: MaskSource) -> tuple[int, float]:
    mask_path = source.mask
    try:
        reference = (read_sequence_image(patient.patient_id, source.drawn_on, mask_path)
                     if is_dicom_contour(mask_path) else None)
        mask = read_mask(mask_path, reference=reference, roi=source.roi)
    except SarcogradeError as exc:
        raise SarcogradeError(exc.problem, patient=patient.patient_id, path=exc.path) from None
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    if voxels == 0:
        raise SarcogradeError("empty mask: no tumour voxel to measure a volume",
                              patient=patient.patient_id, path=mask_path)
    return voxels, voxel_ml


def tumour_volumes(patients: list[Patient], sequence: str, cache: str | Path) -> dict[str, float]:
    """Tumour volume in ml per patient from the `sequence` mask, reusing `cache` (a CSV) if valid.

    Use one cache per cohort (patient ids may repeat between hospitals). The cache holds
    `formats.evaluation.VOLUME_COLUMNS`; a row is reused only when the mask (and, for an
    RTSTRUCT, the image and ROI) is byte-identical.
    """
    known = read_tumour_volumes(cache)
    rows = []
    with progress() as bar:
        task = bar.add_task(f"tumour volumes ({sequence})", total=len(patients))
        for patient in patients:
            # A sequence without its own contour: the volume of the one drawn on another.
            source = mask_source(patient, sequence)
            if source is None:
                raise SarcogradeError(f"no mask_{sequence} given", patient=patient.patient_id)
            key = _volume_key(source, patient.patient_id)
            hit = known.get((patient.patient_id, sequence, key))
            voxels, voxel_ml = ((int(hit.voxels), float(hit.voxel_ml)) if hit is not None
                                else _measure_volume(patient, source))
            rows.append({"patient_id": patient.patient_id, "sequence": sequence,
                         "mask": str(source.mask), "key": key, "voxels": voxels,
                         "voxel_ml": voxel_ml, "volume_ml": voxels * voxel_ml})
            bar.advance(task)
    write_tumour_volumes(cache, rows)
    return {r["patient_id"]: r["volume_ml"] for r in rows}


def feature_table(patients: list[Patient], volumes: dict[str, float] | None = None) -> pd.DataFrame:
    """The baseline features per patient (index patient_id): T, N, M stage, age, log volume (ml)."""
    rows = {}
    for patient in patients:
        row = {name: patient.clinical.get(name) for name in CLINICAL}
        volume = (volumes or {}).get(patient.patient_id)
        row["log_volume_ml"] = np.log(volume) if volume else None
        rows[patient.patient_id] = row
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(CLINICAL + VOLUME),
                                  dtype=float)


def stratified_splits(ids, labels, folds: int, repeats: int, seed: int) -> list[Split]:
    """The repeated stratified k-fold patient splits of `train` (`splits.make_splits`), for the
    baselines where the DL run's own splits do not fit the training cohort."""
    return make_splits(list(ids), np.asarray(labels), folds, repeats, seed)[0]


def make_model():
    """Median imputation, standardisation, class-weighted logistic regression."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         LogisticRegression(class_weight="balanced", max_iter=1000))


@dataclass
class BaselineFit:
    features: tuple[str, ...]
    models: list                   # one fitted pipeline per split
    cv_predictions: pd.DataFrame   # patient_id, repeat, fold, label, p_high (out of fold)

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Ensemble probability of high grade: the mean over the fold models."""
        x = features.loc[:, list(self.features)].to_numpy(float)
        return np.mean([m.predict_proba(x)[:, 1] for m in self.models], axis=0)


def fit_baseline(features: pd.DataFrame, labels: pd.Series, splits: list[Split],
                 columns: tuple[str, ...]) -> BaselineFit:
    """One logistic regression per split on its training patients; out-of-fold predictions kept."""
    models, oof = [], []
    for split in splits:
        y_train = labels.loc[list(split.train)].to_numpy(int)
        if len(np.unique(y_train)) < 2:
            raise ValueError(f"{split.name}: the training patients are all of one grade class")
        model = make_model().fit(features.loc[list(split.train), list(columns)].to_numpy(float),
                                 y_train)
        models.append(model)
        p_val = model.predict_proba(features.loc[list(split.val), list(columns)].to_numpy(float))
        oof.append(pd.DataFrame({"patient_id": list(split.val), "repeat": split.repeat,
                                 "fold": split.fold,
                                 "label": labels.loc[list(split.val)].to_numpy(),
                                 "p_high": p_val[:, 1]}))
    return BaselineFit(tuple(columns), models, pd.concat(oof, ignore_index=True))
