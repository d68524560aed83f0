"""The slice cache written by `preprocess` (docs/artifacts.md): config.json, index.csv and one
NPZ per patient. `CacheIndex` reads index.csv for every stage; `read_patient` reads a patient's
NPZ and verifies it against its index row (key, slice count, shape, finite values)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..artifacts import hash_bytes, hash_path, write_csv, write_json, write_npz
from ..cohort import patient_id_problem
from ..console import warn
from ..errors import SarcogradeError
from .acquisition import INDEX_COLUMNS as ACQUISITION_COLUMNS
from .common import read_json_object

RERUN = "preprocess"
CONFIG = "config.json"
INDEX = "index.csv"
PREVIEW = "preview"  # --preview's montages, PREVIEW/<patient_id>.png
INDEX_COLUMNS = ["patient_id", "sequence", "site", "grade", "label", "n_slices",
                 "tumour_volume_ml", *ACQUISITION_COLUMNS, "npz", "key"]
REQUIRED_INDEX_COLUMNS = ("patient_id", "sequence", "label", "n_slices", "npz")
PATIENT_ARRAYS = ("image", "mask", "z_mm", "area_mm2", "pixel_mm", "spacing", "origin",
                  "direction", "crop_index", "tumour_volume_ml", "key")


def check_patient_id(patient_id: str, path: Path | None = None) -> str:
    """A patient id that can be a file name (the rule of `preprocess`), or a one-line error."""
    problem = (patient_id_problem(patient_id) if isinstance(patient_id, str)
               else f"patient_id {patient_id!r} is not text")
    if problem:
        raise SarcogradeError(problem, path=path)
    return patient_id


def npz_relpath(patient_id: str) -> str:
    """`patients/<patient_id>.npz`, relative to the cache; the id must be a safe file name."""
    return f"patients/{check_patient_id(patient_id)}.npz"


# ------------------------------------------------------------------------------- config.json

def read_cache_config(cache: str | Path, required: bool = True) -> dict:
    """CACHE/config.json; {} when absent and not `required`."""
    path = Path(cache) / CONFIG
    if not path.is_file():
        if not required:
            return {}
        raise SarcogradeError(f"not a preprocessed cache: {CONFIG} missing "
                              "(run `sarcograde preprocess`)", path=cache)
    return read_json_object(path, RERUN)


def write_cache_config(cache: str | Path, config: dict) -> None:
    write_json(Path(cache) / CONFIG, config)


# ------------------------------------------------------------------------------- index.csv

@dataclass
class CacheIndex:
    """CACHE/index.csv, checked: one row per patient and sequence, ids safe as file names,
    `label` 0/1/empty and `grade` as nullable integers, `n_slices` a count, `key` text."""

    cache: Path
    frame: pd.DataFrame   # parsed columns
    text: pd.DataFrame    # the file's text, for content hashes that must not change

    @property
    def path(self) -> Path:
        return self.cache / INDEX

    @classmethod
    def read(cls, cache: str | Path) -> "CacheIndex":
        cache = Path(cache)
        path = cache / INDEX
        if not path.is_file():
            raise SarcogradeError(f"no {INDEX}; is this a `sarcograde preprocess` cache folder?",
                                  path=cache)
        try:
            text = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise SarcogradeError(f"corrupt {INDEX} ({str(exc).splitlines()[0]}); rerun "
                                  "`sarcograde preprocess`", path=path) from None
        missing = [c for c in REQUIRED_INDEX_COLUMNS if c not in text.columns]
        if missing:
            raise SarcogradeError(f"missing column(s) {', '.join(missing)}", path=path)
        frame = text.copy()
        # columns a cache of an earlier version lacks: empty (unknown)
        for column in ("grade", "label", "key", "site", "tumour_volume_ml", *ACQUISITION_COLUMNS):
            if column not in frame:
                frame[column] = text[column] = ""
        for pid in frame["patient_id"]:
            check_patient_id(pid, path)
        for row in frame.itertuples(index=False):
            _check_label(row.label, row.patient_id, path)
        frame["label"] = _nullable_int(frame["label"])
        frame["grade"] = _nullable_int(frame["grade"])
        counts = pd.to_numeric(frame["n_slices"], errors="coerce")
        bad = ~(counts >= 0) | (counts != counts.round())
        if bad.any():
            raise SarcogradeError(f"n_slices {frame['n_slices'][bad].iloc[0]!r} is not a count",
                                  patient=frame["patient_id"][bad].iloc[0], path=path)
        frame["n_slices"] = counts.astype(int)
        twice = frame.duplicated(["patient_id", "sequence"])
        if twice.any():
            raise SarcogradeError("patient listed twice for one sequence",
                                  patient=frame["patient_id"][twice].iloc[0], path=path)
        return cls(cache, frame, text)

    @property
    def sequences(self) -> list[str]:
        return sorted(set(self.frame["sequence"]))

    def choose_sequence(self, sequence: str | None) -> str:
        """`sequence`, or the cache's only one."""
        if sequence is None:
            if len(self.sequences) > 1:
                raise SarcogradeError(f"cache holds sequences {', '.join(self.sequences)}; "
                                      "choose one with --sequence", path=self.path)
            return self.sequences[0] if self.sequences else ""
        if sequence not in self.sequences:
            raise SarcogradeError(f"no patients with sequence {sequence!r}", path=self.path)
        return sequence

    def rows(self, sequence: str | None = None, patients: Iterable[str] | None = None,
             drop_empty: bool = False) -> pd.DataFrame:
        """The rows of one sequence (default: the only one), optionally of some patients only;
        with `drop_empty`, patients without tumour slices are left out with a warning."""
        sequence = self.choose_sequence(sequence)
        rows = self.frame[self.frame["sequence"] == sequence]
        if patients is not None:
            patients = list(patients)
            unknown = sorted(set(patients) - set(rows["patient_id"]))
            if unknown:
                raise SarcogradeError(f"patient(s) not in the cache: {', '.join(unknown)}",
                                      path=self.path)
            rows = rows[rows["patient_id"].isin(patients)]
        if drop_empty:
            empty = rows["n_slices"] == 0
            if empty.any():  # nothing to learn or predict from: left out, and listed
                warn(f"{self.path}: no tumour slices, left out: "
                     f"{', '.join(rows.loc[empty, 'patient_id'])}")
                rows = rows[~empty]
        if rows.empty:
            raise SarcogradeError("no patient to work on", path=self.path)
        return rows.reset_index(drop=True)

    def content_hash(self, sequence: str, config: dict) -> str:
        """A hash of the rows of `sequence` (ids, labels, keys as written) and the cache's config:
        changes whenever a cached file or the preprocessing changes."""
        rows = self.text[self.text["sequence"] == sequence].sort_values("patient_id")
        keys = "\n".join(f"{r.patient_id},{r.label},{r.key}" for r in rows.itertuples())
        return hash_bytes((keys + repr(sorted(config.items()))).encode())[:16]


def _check_label(value: str, patient: str, path: Path) -> None:
    try:
        number = float(value) if value != "" else 0.0
    except ValueError:
        number = np.nan
    if number not in (0.0, 1.0):  # not int(): 0.5 would pass as 0 and "inf" would overflow
        raise SarcogradeError(f"label {value!r} is not 0, 1 or empty", patient=patient, path=path)


def _nullable_int(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column.replace("", None), errors="coerce").round().astype("Int64")


def write_index(cache: str | Path, rows: list[dict]) -> None:
    write_csv(Path(cache) / INDEX, pd.DataFrame(rows, columns=INDEX_COLUMNS))


# ------------------------------------------------------------------------------- patient NPZ

def patient_key(cache: str | Path, row) -> str:
    """What a patient's cache entry holds: the index's key, else the NPZ file's hash."""
    return row.key or hash_path(Path(cache) / row.npz)


def stored_key(path: Path) -> str | None:
    """The key an NPZ was computed with; None when it is missing or unreadable."""
    try:
        with np.load(path) as npz:
            return str(npz["key"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def read_patient(cache: str | Path, row, arrays: Iterable[str] = PATIENT_ARRAYS,
                 size: int | None = None) -> dict[str, np.ndarray]:
    """One patient's NPZ (those of `arrays` it holds), verified against its index.csv `row`:
    the stored key must be the index's (a swapped or stale file is refused), the image
    `(n, S, S)` with the index's n, finite; `size`: the slice side the caller needs."""
    patient = check_patient_id(row.patient_id)
    path = Path(cache) / row.npz
    if Path(row.npz).is_absolute() or ".." in Path(row.npz).parts:
        raise SarcogradeError(f"npz {row.npz!r} is not a path inside the cache",
                              patient=patient, path=Path(cache) / INDEX)
    if not path.is_file():
        raise SarcogradeError("cached slices not found (rerun `sarcograde preprocess`)",
                              patient=patient, path=path)
    out = read_patient_file(path, set(arrays) | {"image", "key"}, patient)
    key = str(out["key"]) if "key" in out else None
    if row.key and key is not None and key != row.key:
        raise SarcogradeError("the file's key differs from its index.csv key: a stale or swapped "
                              "file; rerun `sarcograde preprocess`", patient=patient, path=path)
    image = out.get("image")
    if image is None or image.ndim != 3 or image.shape[1] != image.shape[2]:
        shape = None if image is None else image.shape
        raise SarcogradeError(f"image has shape {shape}, expected (n, S, S)",
                              patient=patient, path=path)
    if len(image) != int(row.n_slices):
        raise SarcogradeError(f"{len(image)} slices, index.csv says {int(row.n_slices)}: a stale "
                              "file; rerun `sarcograde preprocess`", patient=patient, path=path)
    if size is not None and image.shape[1:] != (size, size):
        raise SarcogradeError(f"slices are {image.shape[1]}x{image.shape[2]}, the models take "
                              f"{size}x{size}: wrong cache for this run",
                              patient=patient, path=path)
    if not np.isfinite(image).all():
        raise SarcogradeError("image holds NaN or infinite values", patient=patient, path=path)
    return out


def read_patient_file(path: Path, arrays: Iterable[str] = PATIENT_ARRAYS,
                      patient: str | None = None) -> dict[str, np.ndarray]:
    """The members `arrays` of a patient NPZ as they are (preprocess's own check of what it
    wrote; other stages use `read_patient`, which verifies the file against the index)."""
    wanted = set(arrays)
    try:
        with np.load(path) as npz:
            return {name: npz[name] for name in npz.files if name in wanted}
    except Exception as exc:  # truncated, not a zip, a damaged member: all the same to a user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SarcogradeError(f"cannot read cached slices ({reason}); rerun "
                              "`sarcograde preprocess`", patient=patient, path=path) from None


def patient_summary(path: Path) -> tuple[int, float]:
    """(number of slices, tumour volume in ml) of a finished NPZ."""
    arrays = read_patient_file(path, ("z_mm", "tumour_volume_ml"))
    return int(arrays["z_mm"].shape[0]), float(arrays["tumour_volume_ml"])


def write_patient(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A patient's NPZ with the members of docs/artifacts.md (`key` among them)."""
    missing = [name for name in PATIENT_ARRAYS if name not in arrays]
    if missing:
        raise ValueError(f"patient arrays lack {', '.join(missing)}")
    write_npz(path, **arrays)


# ------------------------------------------------------------------------------- preview

def preview_path(cache: str | Path, patient_id: str) -> Path:
    """`CACHE/preview/<patient_id>.png`, the montage `preprocess --preview` draws."""
    return Path(cache) / PREVIEW / f"{patient_id}.png"
