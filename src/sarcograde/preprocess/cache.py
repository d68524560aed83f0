"""Cache keys of the slice cache; its files are read and written by `sarcograde.formats.cache`.

Format: docs/artifacts.md ("preprocess"). A patient's NPZ carries the key it was computed
with; a rerun recomputes exactly the patients whose key changed or whose NPZ is missing.
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import hash_config, hash_path
from ..formats import cache as cache_format
from ..formats.cache import npz_relpath, patient_summary, stored_key, write_index  # noqa: F401
from .pipeline import Params, Preprocessed

# Bump when a change of the method changes what an NPZ holds, so that old caches recompute.
METHOD_VERSION = 1


def cache_key(image: Path, mask: Path, roi: str | None, params: Params) -> str:
    """Hash of the input files' contents, the ROI name and the parameters that change the result."""
    return hash_config({"method": METHOD_VERSION, "image": hash_path(image),
                        "mask": hash_path(mask), "roi": roi, "params": params.key_fields()})


def write_patient(path: Path, result: Preprocessed, key: str) -> None:
    cache_format.write_patient(path, result.arrays(key))
