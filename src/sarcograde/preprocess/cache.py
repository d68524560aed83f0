"""The slice cache on disk: file names, cache keys, per-patient NPZ files and the index.

Format: docs/artifacts.md ("preprocess"). A patient's NPZ carries the key it was computed
with; a rerun recomputes exactly the patients whose key changed or whose NPZ is missing.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import hash_config, hash_path, write_csv, write_npz
from ..cohort import patient_id_problem
from ..errors import SarcogradeError
from ..masks import MaskSource
from .pipeline import Params, Preprocessed

# Bump when a change of the method changes what an NPZ holds, so that old caches recompute.
METHOD_VERSION = 2  # 2: mask pieces under 1% of the largest dropped

INDEX_COLUMNS = ["patient_id", "sequence", "site", "grade", "label", "n_slices",
                 "tumour_volume_ml", "npz", "key"]


def npz_relpath(patient_id: str) -> str:
    """`patients/<patient_id>.npz`, relative to the cache; the id must be a safe file name."""
    problem = patient_id_problem(patient_id)
    if problem:
        raise SarcogradeError(problem)
    return f"patients/{patient_id}.npz"


def cache_key(image: Path, source: MaskSource, params: Params) -> str:
    """Hash of the input files' contents, the ROI name and the parameters that change the result;
    a carried contour adds the image it was drawn on (its grid decides the carried voxels)."""
    fields = {"method": METHOD_VERSION, "image": hash_path(image), "mask": hash_path(source.mask),
              "roi": source.roi, "params": params.key_fields()}
    if source.carried:
        fields["carried_from"] = {"sequence": source.sequence, "image": hash_path(source.image)}
    return hash_config(fields)


def stored_key(path: Path) -> str | None:
    """The key an NPZ was computed with; None when it is missing or unreadable."""
    try:
        with np.load(path) as npz:
            return str(npz["key"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def write_patient(path: Path, result: Preprocessed, key: str) -> None:
    write_npz(path, **result.arrays(key))


def patient_summary(path: Path) -> tuple[int, float]:
    """(number of slices, tumour volume in ml) of a finished NPZ, without loading its slices."""
    with np.load(path) as npz:
        return int(npz["z_mm"].shape[0]), float(npz["tumour_volume_ml"])


def write_index(cache: Path, rows: list[dict]) -> None:
    write_csv(cache / "index.csv", pd.DataFrame(rows, columns=INDEX_COLUMNS))
