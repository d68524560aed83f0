"""The training run written by `train` (docs/artifacts.md): config.json, folds.json, and per
fold model.pt, checkpoint.pt, history.csv and val_predictions.csv; cv_predictions.csv."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..artifacts import atomic_path, write_csv, write_json
from ..errors import SarcogradeError
from ..splits import Split
from .cache import check_patient_id
from .common import read_csv_file, read_json_object
from .predictions import checked_probabilities

RERUN = "train"
CONFIG = "config.json"
FOLDS = "folds.json"
CV_PREDICTIONS = "cv_predictions.csv"
# in each fold's folder, RUN/fold_XX/
MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
VAL_PREDICTIONS = "val_predictions.csv"
LEARNING_CURVE = "learning_curve.png"
CV_COLUMNS = ("patient_id", "repeat", "fold", "label", "p_high")
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_auc", "lr", "seconds")
FOLD_MODEL_KEYS = ("state_dict", "model", "input", "preprocess")
_FOLD_NAME = re.compile(r"fold_\d{2,}")


# ------------------------------------------------------------------------------- config.json

def read_run_config(run: str | Path, required: bool = True) -> dict | None:
    """RUN/config.json; None when absent and not `required`."""
    path = Path(run) / CONFIG
    if not path.is_file():
        if not required:
            return None
        raise SarcogradeError(f"not a training run: {CONFIG} missing (run `sarcograde train`)",
                              path=run)
    return read_json_object(path, RERUN)


def write_run_config(run: str | Path, config: dict) -> None:
    write_json(Path(run) / CONFIG, config)


# ------------------------------------------------------------------------------- folds.json

@dataclass
class Folds:
    """RUN/folds.json: the splits actually made and how they were adapted."""

    folds: int
    repeats: int
    seed: int
    splits: list[Split]
    folds_requested: int | None = None
    adaptation: str | None = None
    stratify: str = "grade"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.splits]

    def as_dict(self) -> dict:
        return {**self.extra, "folds": self.folds,
                "folds_requested": self.folds_requested or self.folds, "repeats": self.repeats,
                "seed": self.seed, "stratify": self.stratify, "adaptation": self.adaptation,
                "splits": [s.as_dict() for s in self.splits]}


def read_folds(run: str | Path) -> Folds:
    """RUN/folds.json, checked: fold names fold_XX, patient ids safe as file names."""
    path = Path(run) / FOLDS
    if not path.is_file():
        raise SarcogradeError(f"not a training run: {FOLDS} missing (run `sarcograde train`)",
                              path=run)
    spec = read_json_object(path, RERUN)
    try:
        splits = [Split(name=str(s["name"]), repeat=int(s["repeat"]), fold=int(s["fold"]),
                        train=[str(p) for p in s["train"]], val=[str(p) for p in s["val"]])
                  for s in spec["splits"]]
        known = {"folds", "folds_requested", "repeats", "seed", "stratify", "adaptation",
                 "splits"}
        folds = Folds(folds=int(spec["folds"]), repeats=int(spec["repeats"]),
                      seed=int(spec.get("seed") or 0), splits=splits,
                      folds_requested=spec.get("folds_requested"),
                      adaptation=spec.get("adaptation"), stratify=spec.get("stratify", "grade"),
                      extra={k: v for k, v in spec.items() if k not in known})
    except (KeyError, TypeError, ValueError) as exc:
        raise SarcogradeError(f"not a folds.json of `sarcograde train` (bad or missing {exc}); "
                              "rerun `sarcograde train`", path=path) from None
    if not splits:
        raise SarcogradeError("folds.json lists no fold", path=path)
    for split in splits:
        if not _FOLD_NAME.fullmatch(split.name):
            raise SarcogradeError(f"fold name {split.name!r} is not fold_XX", path=path)
        for pid in split.train + split.val:
            check_patient_id(pid, path)
    return folds


def write_folds(run: str | Path, folds: Folds) -> None:
    write_json(Path(run) / FOLDS, folds.as_dict())


# ------------------------------------------------------------------------------- torch files

def _torch_load(path: Path, what: str) -> Any:
    """torch.load with weights_only=True; every failure a one-line error saying what is wrong."""
    import pickle

    import torch

    if not zipfile.is_zipfile(path):
        raise SarcogradeError(f"not a readable {what}: truncated or not a PyTorch file "
                              f"({path.stat().st_size} bytes, no zip directory)", path=path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise SarcogradeError(f"{what} refused for safety: it holds Python objects that could "
                              "run code when loaded (only tensors and plain data are read)",
                              path=path) from None
    except Exception as exc:  # a damaged member of the zip archive
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SarcogradeError(f"not a readable {what}: corrupt ({reason[:200]})",
                              path=path) from None


def _torch_save(path: Path, payload: dict) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_fold_model(path: str | Path) -> dict:
    """fold_XX/model.pt: the dict of docs/artifacts.md (state_dict, model, input, ...)."""
    path = Path(path)
    if not path.is_file():
        raise SarcogradeError("fold model not found", path=path)
    payload = _torch_load(path, "sarcograde fold model")
    missing = ([k for k in FOLD_MODEL_KEYS if k not in payload] if isinstance(payload, dict)
               else list(FOLD_MODEL_KEYS))
    if missing:
        raise SarcogradeError(f"not a readable sarcograde fold model: no {', '.join(missing)}",
                              path=path)
    return payload


def write_fold_model(path: str | Path, payload: dict) -> None:
    _torch_save(Path(path), payload)


def read_checkpoint(path: str | Path) -> dict:
    """fold_XX/checkpoint.pt, the training state after an epoch."""
    payload = _torch_load(Path(path), "training checkpoint")
    if not isinstance(payload, dict) or "config_hash" not in payload:
        raise SarcogradeError("not a readable training checkpoint: no config_hash", path=path)
    return payload


def write_checkpoint(path: str | Path, state: dict) -> None:
    _torch_save(Path(path), state)


# ------------------------------------------------------------------------------- CSV files

def read_history(path: str | Path) -> pd.DataFrame:
    """fold_XX/history.csv (epoch and val_loss at least)."""
    return read_csv_file(Path(path), ("epoch", "val_loss"), HISTORY)


def write_history(path: str | Path, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    write_csv(path, frame)
    return frame


def read_cv_predictions(path: str | Path, what: str = CV_PREDICTIONS) -> pd.DataFrame:
    """cv_predictions.csv or a fold's val_predictions.csv: out-of-fold rows, p_high checked."""
    frame = read_csv_file(Path(path), CV_COLUMNS, what, dtype={"patient_id": str})
    return checked_probabilities(frame, Path(path))


def write_cv_predictions(path: str | Path, frame: pd.DataFrame) -> None:
    write_csv(path, frame.loc[:, list(CV_COLUMNS)])
