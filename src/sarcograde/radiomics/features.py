"""IBSI radiomics features of one tumour with MIRP: the z-scored 1 mm volume inside the mask.

The tumour's bounding box, with a margin, is handed to MIRP as arrays with their voxel spacing
(no file: MIRP's NIfTI reader loads ITK, seconds in every process). Moran's I and Geary's C are
computed over every pair of voxels by `spatial` (the values of MIRP's `no_approximation`; its
default is a slow random estimate). Feature names are MIRP's (e.g. `stat_mean`,
`morph_vol_approx`, `cm_joint_max_d1_3d_v_mrg_fbs_w0.25`).

A feature class that cannot be computed (a mask too small for texture matrices, an image that
is constant inside the mask) is left empty (NaN) and named in `PatientFeatures.empty`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np

from ..formats.radiomics import PatientFeatures
from .settings import FAMILIES, TEXTURE
from .spatial import exact_spatial_statistics

# Voxels of air around the box: MIRP's mesh (morphology) needs the surface inside the image.
_MARGIN = 2


@contextlib.contextmanager
def _quiet_mirp():
    """MIRP logs every image at INFO level to stdout through logging.basicConfig, and warns
    about MR intensities even with the fixed bin size it recommends; keep the console clean.
    A handler on the root logger makes basicConfig a no-op."""
    root = logging.getLogger()
    handler = logging.NullHandler()
    added = not root.handlers
    if added:
        root.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if added:
            root.removeHandler(handler)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    low = np.maximum(where.min(axis=0) - _MARGIN, 0)
    high = where.max(axis=0) + _MARGIN + 1
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def _mirp_arrays(image: np.ndarray, mask: np.ndarray, spacing_mm: float):
    """MIRP's in-memory image and mask: its public array input assumes 1 mm voxels, its
    array classes take the spacing. The sample name is fixed (MIRP draws a random one)."""
    from mirp._data_import.numpy_file import ImageNumpyFile, MaskNumpyFile

    spacing = (float(spacing_mm),) * 3
    image_file = ImageNumpyFile(image_data=image, image_spacing=spacing, image_modality="mr",
                                sample_name="tumour")
    mask_file = MaskNumpyFile(image_data=mask, image_spacing=spacing, sample_name="tumour")
    # MIRP reads an array's shape from its "metadata"
    image_file.image_metadata, mask_file.image_metadata = image, mask
    return image_file, mask_file


def _mirp_settings(settings: dict) -> dict:
    lower, upper = settings["intensity_range"]
    return {"image_modality": "mr", "by_slice": False,
            "base_feature_families": list(settings["families"]),
            "base_discretisation_method": "fixed_bin_size",
            "base_discretisation_bin_width": settings["bin_width"],
            "resegmentation_intensity_range": [lower, np.nan if upper is None else upper]}


def compute_features(image: np.ndarray, mask: np.ndarray, spacing_mm: float,
                     settings: dict) -> PatientFeatures:
    """MIRP's features of `image` (z, y, x; isotropic `spacing_mm`) inside `mask` (non-empty)."""
    from mirp import extract_features

    box = _bounding_box(mask)
    image = np.ascontiguousarray(image[box], dtype=np.float32)
    mask = np.ascontiguousarray(mask[box] > 0, dtype=np.uint8)
    image_file, mask_file = _mirp_arrays(image, mask, spacing_mm)
    with _quiet_mirp(), exact_spatial_statistics():
        table = extract_features(image=image_file, mask=mask_file, **_mirp_settings(settings))[0]
    prefixes = tuple(FAMILIES[f] for f in settings["families"])
    values = {name: float(table[name].iloc[0]) for name in table.columns
              if name.startswith(prefixes)}
    return _empty_classes(values, image[mask > 0], settings)


def _grey_levels(roi: np.ndarray, settings: dict) -> int:
    """Distinct fixed-bin-size grey levels of the re-segmented tumour voxels (IBSI)."""
    lower, upper = settings["intensity_range"]
    kept = roi[(roi >= lower) & (roi <= (np.inf if upper is None else upper))]
    return len(np.unique(np.floor((kept - lower) / settings["bin_width"])))


def _empty_classes(values: dict[str, float], roi: np.ndarray,
                   settings: dict) -> PatientFeatures:
    """Blank the texture classes that carry no information, and name every empty class."""
    reasons = []
    blank: tuple[str, ...] = ()
    if roi.size < settings["min_texture_voxels"]:
        reasons.append(f"mask of {roi.size} voxel(s), fewer than min_texture_voxels "
                       f"{settings['min_texture_voxels']}")
        blank = TEXTURE
    elif _grey_levels(roi, settings) < 2:
        reasons.append("image constant inside the mask (one grey level)")
        blank = TEXTURE
    for name in values:
        if any(name.startswith(FAMILIES[f]) for f in blank):
            values[name] = float("nan")
    empty = [f for f in settings["families"]
             if not np.isfinite([v for k, v in values.items() if k.startswith(FAMILIES[f])]).any()]
    if empty and not reasons:
        reasons.append("MIRP computed no value")
    return PatientFeatures(values, empty, "; ".join(reasons) if empty else "")
