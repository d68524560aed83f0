"""Cache keys of the slice cache; its files are read and written by `sarcograde.formats.cache`.

Format: docs/artifacts.md ("preprocess"). A patient's NPZ carries the key it was computed
with; a rerun recomputes exactly the patients whose key changed or whose NPZ is missing.
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import hash_config, hash_path
from ..formats import cache as cache_format
from ..masks import MaskSource
from ..sequence_image import SequenceImage
from .pipeline import Params, Preprocessed

# Bump when a change of the method changes what an NPZ holds, so that old caches recompute.
METHOD_VERSION = 2  # 2: mask pieces under 1% of the largest dropped


def cache_key(image: SequenceImage, source: MaskSource, params: Params) -> str:
    """Hash of the input files' contents, the ROI name and the parameters that change the result;
    a carried contour adds the image it was drawn on (its grid decides the carried voxels). A
    series named in the manifest is part of its image (a key without one stays as it was)."""
    fields = {"method": METHOD_VERSION, "image": hash_path(image.path),
              "mask": hash_path(source.mask), "roi": source.roi, "params": params.key_fields()}
    if image.series is not None:
        fields["series"] = image.series
    if source.carried:
        fields["carried_from"] = {"sequence": source.sequence, "image": hash_path(source.image)}
        if source.series is not None:
            fields["carried_from"]["series"] = source.series
    return hash_config(fields)


def write_patient(path: Path, result: Preprocessed, key: str) -> None:
    cache_format.write_patient(path, result.arrays(key))
