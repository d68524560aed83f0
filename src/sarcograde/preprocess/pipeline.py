"""One patient's image and tumour mask in, the cached tumour slices out.

The order matters: canonical orientation first (a lossless axis permutation, so that every later
step sees the same array whatever the storage order), N4 on the native voxels (before any
interpolation), resampling to 1 mm, z-score, then the crops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..config_schema import check_settings
from ..errors import SarcogradeError
from ..io import mask_pieces, tumour_volume_ml
from ..masks import MaskSource, read_patient_mask
from ..sequence_image import SequenceImage, read_sequence_image
from .bias import AUTO, n4_correct
from .body import body_mask
from .geometry import isotropic_grid, resample_image, resample_mask, to_canonical
from .normalise import zscore
from .slices import TumourSlices, tumour_slices


# Mask pieces smaller than this share of the largest (stray voxels, RTSTRUCT fragments) are
# dropped: kept, they would stretch the tumour's crop and slice range far beyond the tumour.
MIN_PIECE_SHARE = 0.01


@dataclass(frozen=True)
class Params:
    """The preprocessing parameters (the `preprocess` section of a config)."""

    spacing_mm: float = 1.0
    size: int = 224
    margin_mm: float = 10.0
    n4: bool = True
    n4_grid_mm: float | str = 6.0  # N4 is fitted on a grid of about this spacing, or "auto"
    n4_iterations: tuple[int, ...] = (50, 50, 50, 50)

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> "Params":
        """A `preprocess` section held against the settings table; keys left out take the
        defaults above. Lengths in mm are floats whatever the YAML spelt (they are hashed into
        the cache key)."""
        check_settings({"preprocess": section})
        given = {**asdict(cls()), **section}
        grid_mm = given["n4_grid_mm"]
        return cls(spacing_mm=float(given["spacing_mm"]), size=given["size"],
                   margin_mm=float(given["margin_mm"]), n4=given["n4"],
                   n4_grid_mm=grid_mm if grid_mm == AUTO else float(grid_mm),
                   n4_iterations=tuple(given["n4_iterations"]))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n4_iterations": list(self.n4_iterations)}

    def key_fields(self) -> dict[str, Any]:
        """The parameters that change the result: N4's settings only matter with N4 on."""
        fields = self.as_dict()
        if not self.n4:
            del fields["n4_grid_mm"], fields["n4_iterations"]
        return fields


@dataclass
class Preprocessed:
    """The tumour slices of one patient and the geometry of the resampled canonical volume."""

    slices: TumourSlices
    spacing: np.ndarray      # (3,) mm
    origin: np.ndarray       # (3,) mm
    direction: np.ndarray    # (9,)
    tumour_volume_ml: float  # of the mask as drawn, on its own grid

    def arrays(self, key: str) -> dict[str, np.ndarray]:
        """The NPZ members of docs/artifacts.md."""
        s = self.slices
        return {"image": s.image.astype(np.float16), "mask": s.mask.astype(np.uint8),
                "z_mm": s.z_mm.astype(np.float64), "area_mm2": s.area_mm2.astype(np.float64),
                "pixel_mm": s.pixel_mm.astype(np.float64), "spacing": self.spacing,
                "origin": self.origin, "direction": self.direction,
                "crop_index": s.crop_index, "tumour_volume_ml": np.float64(self.tumour_volume_ml),
                "key": np.array(key)}


def load_patient(patient_id: str, image: SequenceImage,
                 source: MaskSource) -> tuple[sitk.Image, sitk.Image]:
    """Read a patient's image and its tumour mask (drawn on it, or carried from another
    sequence's contour); the mask must be non-empty on the image's grid."""
    volume = read_sequence_image(patient_id, image, None if source.carried else source.mask)
    mask = read_patient_mask(patient_id, volume, source, image.path)
    if not sitk.GetArrayViewFromImage(mask).any():
        raise SarcogradeError("mask is empty" + (f" once carried from {source.sequence}"
                                                 if source.carried else ""),
                              patient=patient_id, path=source.mask)
    return volume, mask


def drop_stray_pieces(mask: sitk.Image) -> tuple[sitk.Image, list[str]]:
    """The mask without pieces under MIN_PIECE_SHARE of its largest, and what was done to it
    (separate pieces above that share are kept, but said, since the crop spans them all)."""
    labels, sizes = mask_pieces(mask)
    kept = int(np.count_nonzero(sizes >= MIN_PIECE_SHARE * sizes[0])) if len(sizes) else 0
    notes = []
    if kept < len(sizes):
        dropped = sizes[kept:]
        notes.append(f"dropped {len(dropped)} mask piece(s) under {MIN_PIECE_SHARE:.0%} of the "
                     f"largest ({int(dropped.sum())} of {int(sizes.sum())} voxels)")
        mask = sitk.Cast((labels > 0) & (labels <= kept), sitk.sitkUInt8)
    if kept > 1:
        notes.append(f"kept {kept} separate mask pieces (the largest holds "
                     f"{sizes[0] / sizes[:kept].sum():.1%} of the voxels); one crop spans them all")
    return mask, notes


@dataclass
class NormalisedVolume:
    """The whole volume after orientation, N4, resampling and z-score (arrays indexed z, y, x)."""

    image: np.ndarray        # float32, z-scored over the body
    mask: np.ndarray         # uint8 tumour mask on the same grid
    grid: sitk.Image         # the isotropic reference grid (spacing, origin, direction)
    background: float        # the z-scored value of air (outside the scanned field of view)
    tumour_volume_ml: float  # of the mask as drawn, on its own grid


def normalise_volume(image: sitk.Image, mask: sitk.Image, params: Params) -> NormalisedVolume:
    """Orient, N4-correct, resample and z-score one image with its tumour mask."""
    volume_ml = tumour_volume_ml(mask)
    image = to_canonical(sitk.Cast(image, sitk.sitkFloat32))
    mask = to_canonical(mask)
    body = body_mask(image)
    if params.n4:
        image = n4_correct(image, body, params.n4_grid_mm, params.n4_iterations)
    grid = isotropic_grid(image, params.spacing_mm)
    # Outside the scanned field of view the volume takes the darkest value of the scan: air.
    background = float(sitk.GetArrayViewFromImage(image).min())
    volume = sitk.GetArrayFromImage(resample_image(image, grid, background))
    body_iso = sitk.GetArrayFromImage(resample_mask(body, grid))
    mask_iso = sitk.GetArrayFromImage(resample_mask(mask, grid))
    volume, mean, sd = zscore(volume, body_iso)
    return NormalisedVolume(image=volume, mask=mask_iso, grid=grid,
                            background=(background - mean) / sd, tumour_volume_ml=volume_ml)


def preprocess_volume(image: sitk.Image, mask: sitk.Image, params: Params) -> Preprocessed:
    """Orient, N4-correct, resample, normalise and slice one image with its tumour mask."""
    volume = normalise_volume(image, mask, params)
    grid = volume.grid
    slices = tumour_slices(volume.image, volume.mask, grid.GetSpacing(), grid.GetOrigin(),
                           params.margin_mm, params.size, background=volume.background)
    return Preprocessed(slices=slices, spacing=np.array(grid.GetSpacing()),
                        origin=np.array(grid.GetOrigin()), direction=np.array(grid.GetDirection()),
                        tumour_volume_ml=volume.tumour_volume_ml)
