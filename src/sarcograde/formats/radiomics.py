"""What the radiomics stages write (docs/artifacts.md).

`radiomics extract` -> DIR/: `features.csv` (one row per patient, one column per MIRP feature),
`config.json` (the extraction's settings) and `patients/<patient_id>.json` (each patient's
features with the key they were computed with, the resume state).

`radiomics fit` -> RUN/: `config.json`, `folds.json` and `cv_predictions.csv` in the formats of
`sarcograde train` (`formats.run`), `selected_features.csv`, and `models.json`: the learned
numbers of each split's scikit-learn Pipeline (`sarcograde.radiomics.model.make_classifier`)
as plain JSON.

No pickle: unlike joblib, reading a run folder received from someone else cannot run code (the
DL models are read with torch's `weights_only=True` for the same reason). A fold model is
rebuilt as the same arithmetic on the stored numbers: median imputation (columns without a
median in the fold are dropped), variance mask, standardisation, correlation mask, then the
L1 logistic regression's linear logit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import write_csv, write_json
from ..errors import SarcogradeError
from ..splits import Split
from .cache import check_patient_id
from .common import read_json_object

RERUN = "radiomics fit"
RERUN_EXTRACT = "radiomics extract"
FEATURES = "features.csv"
EXTRACTION_CONFIG = "config.json"
PATIENTS = "patients"  # the extraction's resume state, PATIENTS/<patient_id>.json
MODELS = "models.json"
SELECTED_FEATURES = "selected_features.csv"
SELECTED_COLUMNS = ("model", "feature", "coefficient")


# ------------------------------------------------------------------------------- extraction

@dataclass
class PatientFeatures:
    values: dict[str, float]                       # MIRP feature name -> value (NaN if empty)
    empty: list[str] = field(default_factory=list)  # feature classes left empty
    reason: str = ""                               # why, in words


def patient_features_path(folder: str | Path, patient_id: str) -> Path:
    """`DIR/patients/<patient_id>.json` (the id must be a safe file name, as in the slice
    cache)."""
    return Path(folder) / PATIENTS / f"{check_patient_id(patient_id)}.json"


def read_patient_features(path: str | Path, key: str | None = None) -> PatientFeatures | None:
    """A patient's stored features; None when missing, damaged or computed with another `key`
    (the caller recomputes them)."""
    try:
        stored = read_json_object(Path(path))
        if key is not None and stored.get("key") != key:
            return None
        return PatientFeatures(stored["features"], stored["empty"], stored["reason"])
    except (SarcogradeError, KeyError):
        return None


def write_patient_features(path: str | Path, patient_id: str, key: str,
                           features: PatientFeatures) -> None:
    write_json(path, {"patient_id": patient_id, "key": key, "features": features.values,
                      "empty": features.empty, "reason": features.reason})


def read_extraction_config(folder: str | Path) -> dict | None:
    """DIR/config.json of an extraction; None where absent."""
    path = Path(folder) / EXTRACTION_CONFIG
    return read_json_object(path, RERUN_EXTRACT) if path.is_file() else None


def write_extraction_config(folder: str | Path, config: dict) -> None:
    write_json(Path(folder) / EXTRACTION_CONFIG, config)


def read_features(path: str | Path) -> pd.DataFrame:
    """A features.csv as a float frame indexed by patient_id (exact floats)."""
    try:
        frame = pd.read_csv(path, dtype={"patient_id": str}, float_precision="round_trip")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SarcogradeError(f"cannot read features: {' '.join(str(exc).split())}",
                              path=path) from None
    if "patient_id" not in frame.columns or frame.shape[1] < 2:
        raise SarcogradeError(f"not a {FEATURES}: needs patient_id and feature columns",
                              path=path)
    if frame["patient_id"].duplicated().any():
        dup = frame.loc[frame["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise SarcogradeError(f"patient {dup} appears twice", path=path)
    frame = frame.set_index("patient_id")
    try:
        return frame.astype(float)
    except ValueError as exc:
        raise SarcogradeError(f"non-numeric feature value: {exc}", path=path) from None


def write_features(folder: str | Path, frame: pd.DataFrame) -> None:
    """DIR/features.csv: patient_id, then one column per feature."""
    write_csv(Path(folder) / FEATURES, frame)


# ------------------------------------------------------------------------------- models.json

@dataclass
class FoldModel:
    """One fitted pipeline as numbers; `decision_function` is the pipeline's."""

    imputed: np.ndarray         # bool, over the feature columns: False where the training fold
                                # had no value (no median), so the column is dropped
    medians: np.ndarray         # one per imputed column
    variance_kept: np.ndarray   # bool, over the imputed columns
    mean: np.ndarray            # standardisation, over the columns the variance step kept
    scale: np.ndarray
    correlation_kept: np.ndarray  # bool, over the standardised columns
    coef: np.ndarray            # over the columns the correlation step kept
    intercept: float

    @classmethod
    def from_pipeline(cls, pipeline) -> FoldModel:
        medians = pipeline["impute"].statistics_
        imputed = ~np.isnan(medians)
        return cls(imputed=imputed, medians=medians[imputed],
                   variance_kept=pipeline["variance"].get_support(),
                   mean=pipeline["scale"].mean_, scale=pipeline["scale"].scale_,
                   correlation_kept=pipeline["correlation"].get_support(),
                   coef=pipeline["lasso"].coef_.ravel(),
                   intercept=float(pipeline["lasso"].intercept_[0]))

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Logits of high grade for rows `x` of the feature columns, in the fitted order."""
        x = x[:, self.imputed]
        x = np.where(np.isnan(x), self.medians, x)[:, self.variance_kept]
        x = ((x - self.mean) / self.scale)[:, self.correlation_kept]
        return x @ self.coef + self.intercept

    def as_dict(self, columns: list[str]) -> dict:
        dropped = [c for c, kept in zip(columns, self.imputed) if not kept]
        return {"impute": {"dropped": dropped, "medians": self.medians.tolist()},
                "variance": {"kept": self.variance_kept.tolist()},
                "scale": {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
                "correlation": {"kept": self.correlation_kept.tolist()},
                "lasso": {"coef": self.coef.tolist(), "intercept": self.intercept,
                          "classes": [0, 1]}}


@dataclass
class RadiomicsModels:
    columns: list[str]          # the feature columns the models were fitted on, in order
    splits: list[Split]
    models: list[FoldModel]     # one per split
    config_hash: str


def write_radiomics_models(run: str | Path, stored: RadiomicsModels) -> None:
    write_json(Path(run) / MODELS, {
        "columns": stored.columns, "splits": [s.as_dict() for s in stored.splits],
        "models": [m.as_dict(stored.columns) for m in stored.models],
        "config_hash": stored.config_hash})


def _vector(values, length: int, dtype=float) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.shape != (length,) or (dtype is bool and not all(isinstance(v, bool) for v in values)):
        raise ValueError(f"expected {length} {dtype.__name__} values")
    if dtype is float and not np.isfinite(array).all():
        raise ValueError("non-finite number")
    return array


def _fold_model(spec: dict, columns: list[str]) -> FoldModel:
    dropped = {str(c) for c in spec["impute"]["dropped"]}
    if not dropped <= set(columns):
        raise ValueError("a dropped column is not a feature column")
    imputed = np.array([c not in dropped for c in columns], bool)
    medians = _vector(spec["impute"]["medians"], int(imputed.sum()))
    variance_kept = _vector(spec["variance"]["kept"], len(medians), bool)
    n_scaled = int(variance_kept.sum())
    mean = _vector(spec["scale"]["mean"], n_scaled)
    scale = _vector(spec["scale"]["scale"], n_scaled)
    correlation_kept = _vector(spec["correlation"]["kept"], n_scaled, bool)
    lasso = spec["lasso"]
    if lasso["classes"] != [0, 1]:
        raise ValueError("classes are not [0, 1]")
    return FoldModel(imputed, medians, variance_kept, mean, scale, correlation_kept,
                     _vector(lasso["coef"], int(correlation_kept.sum())),
                     float(_vector([lasso["intercept"]], 1)[0]))


def read_radiomics_models(run: str | Path) -> RadiomicsModels:
    """RUN/models.json, every array's length checked against the steps before it."""
    path = Path(run) / MODELS
    if not path.is_file():
        raise SarcogradeError(f"no {MODELS}: rerun `sarcograde {RERUN}`", path=run)
    spec = read_json_object(path, RERUN)
    try:
        columns = [str(c) for c in spec["columns"]]
        splits = [Split(name=str(s["name"]), repeat=int(s["repeat"]), fold=int(s["fold"]),
                        train=[str(p) for p in s["train"]], val=[str(p) for p in s["val"]])
                  for s in spec["splits"]]
        models = [_fold_model(m, columns) for m in spec["models"]]
        config_hash = str(spec["config_hash"])
        if not models or len(models) != len(splits):
            raise ValueError(f"{len(models)} model(s) for {len(splits)} split(s)")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SarcogradeError(f"not a {MODELS} of `sarcograde {RERUN}` (bad or missing "
                              f"{reason[:200]}); rerun `sarcograde {RERUN}`", path=path) from None
    return RadiomicsModels(columns, splits, models, config_hash)


# ------------------------------------------------------------------------------- selected features

def write_selected_features(run: str | Path, frame: pd.DataFrame) -> None:
    """RUN/selected_features.csv: each fold model's features with a non-zero coefficient."""
    write_csv(Path(run) / SELECTED_FEATURES, frame.loc[:, list(SELECTED_COLUMNS)])
