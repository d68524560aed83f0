"""Cache keys of the slice cache; its files are read and written by `sarcograde.formats.cache`.

Format: docs/artifacts.md ("preprocess"). A patient's NPZ carries the key it was computed
with; a rerun recomputes exactly the patients whose key changed or whose NPZ is missing.
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import hash_config, hash_path
from ..formats import cache as cache_format
from ..masks import MaskSource
from .pipeline import Params, Preprocessed

# Bump when a change of the method changes what an NPZ holds, so that old caches recompute.
METHOD_VERSION = 2  # 2: mask pieces under 1% of the largest dropped


def cache_key(image: Path, source: MaskSource, params: Params) -> str:
    """Hash of the input files' contents, the ROI name and the parameters that change the result;
    a carried contour adds the image it was drawn on (its grid decides the carried voxels)."""
    fields = {"method": METHOD_VERSION, "image": hash_path(image), "mask": hash_path(source.mask),
              "roi": source.roi, "params": params.key_fields()}
    if source.carried:
        fields["carried_from"] = {"sequence": source.sequence, "image": hash_path(source.image)}
    return hash_config(fields)


def write_patient(path: Path, result: Preprocessed, key: str) -> None:
    cache_format.write_patient(path, result.arrays(key))
