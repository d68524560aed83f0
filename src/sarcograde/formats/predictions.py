"""What `predict` and `explain` write (docs/artifacts.md): predictions.csv with its per-slice
logits `<stem>.slices/<patient_id>.npz`, and explain's `maps/<patient_id>.npz` and attention.csv.

The NPZ files are resume state: a damaged one is recomputed (with a warning naming the
patient), never a traceback and never trusted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import hash_config, write_csv, write_npz
from ..console import warn
from ..errors import SarcogradeError
from .cache import check_patient_id
from .common import read_csv_file

PREDICTIONS = "predictions.csv"  # predict's output when --out is not given
SPREAD = "p_high_sd"  # the SD of p_high over the ensemble's fold models (predict, radiomics)
ATTENTION = "attention.csv"
ATTENTION_SLICES = "attention_slices.csv"
MAPS = "maps"  # explain's saved maps, MAPS/<patient_id>.npz
ATTENTION_COLUMNS = ("patient_id", "n_slices", "p_high", "predicted", "label", "inside", "ring",
                     "elsewhere", "off_tumour")


# ------------------------------------------------------------------------------- predictions.csv

def checked_probabilities(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """patient_id as stripped text, p_high a probability in [0, 1]; a clear error otherwise."""
    frame["patient_id"] = frame["patient_id"].astype(str).str.strip()
    p = pd.to_numeric(frame["p_high"], errors="coerce")
    bad = ~p.between(0, 1)
    if bad.any():
        row = frame[bad].iloc[0]
        raise SarcogradeError(f"p_high {row['p_high']} is not a probability in [0, 1]",
                              patient=row["patient_id"], path=path)
    frame["p_high"] = p.astype(float)
    return frame


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A predictions CSV (patient_id, p_high at least): predict's or a run's cv_predictions.csv."""
    frame = read_csv_file(Path(path), ("patient_id", "p_high"), "predictions file",
                          dtype={"patient_id": str})
    return checked_probabilities(frame, Path(path))


def write_predictions(path: str | Path, rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """patient_id, p_high, predicted (and whatever else a stage adds), as `rows` gives them."""
    frame = pd.DataFrame(rows)
    write_csv(path, frame)
    return frame


def output_paths(out: str | Path) -> tuple[str, Path]:
    """The run record's name and the per-slice folder that go with predict's output CSV:
    `<stem>.run.json` (see `records`) and `<stem>.slices/`."""
    from .records import file_record_name

    out = Path(out)
    return file_record_name(out), out.with_name(f"{out.stem}.slices")


# ------------------------------------------------------------------------------- slice logits

def slice_logits_path(slices_dir: str | Path, patient_id: str) -> Path:
    """`<stem>.slices/<patient_id>.npz`, a patient's saved logits beside predict's output."""
    return Path(slices_dir) / f"{patient_id}.npz"


def slice_logits_key(models_key: str, patient_key: str, precision: str, device: str) -> str:
    """What a patient's saved logits depend on: the models, the cache entry, precision, device."""
    return hash_config({"models": models_key, "patient": patient_key, "precision": precision,
                        "device": device})


def _read_saved(path: Path, patient: str, keys: set[str], what: str) -> dict | None:
    """The arrays of a saved NPZ whose key is one of `keys`; None (recompute) otherwise."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as npz:
            if str(npz["key"]) not in keys:
                return None
            return {name: npz[name] for name in npz.files}
    except Exception as exc:  # damaged resume state: recompute it
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warn(f"{patient}: {path}: damaged {what} ({reason}); recomputed")
        return None


def read_slice_logits(path: str | Path, patient: str, keys: set[str] | str,
                      n_models: int | None = None) -> np.ndarray | None:
    """A patient's saved logits `(models, n, 2)` when the file's key is one of `keys`, else None."""
    keys = {keys} if isinstance(keys, str) else set(keys)
    saved = _read_saved(Path(path), check_patient_id(patient), keys, "saved logits")
    if saved is None:
        return None
    logits = saved.get("logits")
    if (logits is None or logits.ndim != 3 or logits.shape[2] != 2
            or (n_models is not None and logits.shape[0] != n_models)):
        warn(f"{patient}: {path}: damaged saved logits (shape "
             f"{None if logits is None else logits.shape}); recomputed")
        return None
    return logits


def write_slice_logits(path: str | Path, logits: np.ndarray, models: list[str], key: str) -> None:
    write_npz(path, logits=np.asarray(logits, np.float32), models=np.array(models),
              key=np.array(key))


# ------------------------------------------------------------------------------- explain

def maps_path(explain_dir: str | Path, patient_id: str) -> Path:
    """`DIR/maps/<patient_id>.npz`, a patient's saved maps and logits."""
    return Path(explain_dir) / MAPS / f"{patient_id}.npz"


def montage_path(explain_dir: str | Path, patient_id: str) -> Path:
    """`DIR/<patient_id>.png`, a patient's montage of slices with the map."""
    return Path(explain_dir) / f"{patient_id}.png"


def read_maps(path: str | Path, patient: str, key: str) -> dict[str, np.ndarray] | None:
    """explain's saved `cam` `(n, S, S)` and `logits` `(models, n, 2)` when the key matches."""
    saved = _read_saved(Path(path), check_patient_id(patient), {key}, "saved maps")
    if saved is None:
        return None
    cam, logits = saved.get("cam"), saved.get("logits")
    if (cam is None or logits is None or cam.ndim != 3 or logits.ndim != 3
            or logits.shape[1] != len(cam)):
        warn(f"{patient}: {path}: damaged saved maps (members or shapes); recomputed")
        return None
    return saved


def write_maps(path: str | Path, cam: np.ndarray, logits: np.ndarray, key: str) -> None:
    write_npz(path, cam=cam, logits=np.asarray(logits, np.float32), key=np.array(key))


def read_attention(path: str | Path) -> pd.DataFrame:
    return read_csv_file(Path(path), ATTENTION_COLUMNS, ATTENTION)


def write_attention(path: str | Path, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(ATTENTION_COLUMNS))
    frame["label"] = frame["label"].astype("Int64")
    write_csv(path, frame)
    return frame


def write_attention_slices(path: str | Path, rows: list[dict]) -> None:
    """One row per patient and slice, as explain gives them."""
    write_csv(path, pd.DataFrame(rows))
