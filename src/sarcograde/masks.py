"""One contour serves every sequence: a tumour mask drawn on one sequence, carried onto another.

Clinics often contour on one sequence only. Where a patient's `mask_<SEQ>` is empty and another
sequence of the patient has a mask, that mask is carried onto this sequence's grid in physical
space: resampled as a float with linear interpolation and thresholded at 0.5, which keeps the
volume (nearest neighbour gains or loses whole slabs of voxels between thick slices). The images
must share their space: the same DICOM FrameOfReferenceUID where both images are DICOM series
that carry one, and overlapping world extents in any case. `preprocess` and `check` both use this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .cohort import Patient
from .dicom_tags import FRAME_OF_REFERENCE_TAG
from .errors import SarcogradeError
from .io import grid_mismatches, read_mask
from .sequence_image import SequenceImage, read_sequence_image

DRAWN = "drawn"
CARRIED = "carried:"   # followed by the sequence the contour was drawn on
VOLUME_TOLERANCE = 0.10   # check warns when carrying changes the volume by more than this


@dataclass(frozen=True)
class MaskSource:
    """Where the mask of one sequence comes from: its own contour, or another sequence's."""

    sequence: str           # the sequence the contour was drawn on
    mask: Path              # the mask file (or RTSTRUCT) as drawn
    image: Path             # the image it was drawn on (an RTSTRUCT's reference)
    roi: str | None
    carried: bool
    series: str | None = None  # the SeriesInstanceUID of `image` (series_<SEQ>), if named

    @property
    def label(self) -> str:
        """`drawn` or `carried:<SEQ>`, as in qa.csv's `mask_source` column."""
        return f"{CARRIED}{self.sequence}" if self.carried else DRAWN

    @property
    def drawn_on(self) -> SequenceImage:
        """The image the contour was drawn on, as the manifest names it."""
        return SequenceImage(self.sequence, self.image, self.series)


def mask_source(patient: Patient, sequence: str) -> MaskSource | None:
    """The sequence's own mask, else the first other sequence (manifest order) with one and an
    image; None when the patient has no usable contour at all."""
    if sequence in patient.masks:
        return MaskSource(sequence, patient.masks[sequence], patient.images.get(sequence),
                          patient.rois.get(sequence), carried=False,
                          series=patient.series.get(sequence))
    for other, mask in patient.masks.items():
        if other != sequence and other in patient.images:
            return MaskSource(other, mask, patient.images[other], patient.rois.get(other),
                              carried=True, series=patient.series.get(other))
    return None


def _corners(image: sitk.Image) -> np.ndarray:
    """Physical coordinates of the 8 corners of the image's extent (voxel edges, not centres)."""
    size = np.array(image.GetSize())
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    index = corners * size - 0.5
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + (index * np.array(image.GetSpacing())) @ direction.T


def world_extents_overlap(a: sitk.Image, b: sitk.Image) -> bool:
    """True when the axis-aligned world boxes of the two images intersect in a volume."""
    ca, cb = _corners(a), _corners(b)
    low = np.maximum(ca.min(axis=0), cb.min(axis=0))
    high = np.minimum(ca.max(axis=0), cb.max(axis=0))
    return bool(np.all(high > low))


def frame_of_reference(image: sitk.Image) -> str | None:
    """The DICOM FrameOfReferenceUID that `io.read_image` kept from the series it read (or that
    `read_drawn_mask` passed on to the contour); None for other formats."""
    return image.GetMetaData(FRAME_OF_REFERENCE_TAG) if image.HasMetaDataKey(
        FRAME_OF_REFERENCE_TAG) else None


def carry_mask(mask: sitk.Image, target: sitk.Image, patient_id: str = "",
               source: MaskSource | None = None, target_path: Path | None = None) -> sitk.Image:
    """`mask` (UInt8 0/1 on its own grid) on `target`'s grid: linear interpolation, >= 0.5.

    A one-line error naming the patient when the two images do not share their space.
    """
    where = target_path if target_path is not None else (source.mask if source else None)
    if source is not None:
        uids = frame_of_reference(mask), frame_of_reference(target)
        if None not in uids and uids[0] != uids[1]:
            raise SarcogradeError(f"cannot carry the {source.sequence} contour: the images have "
                                  f"different DICOM frames of reference ({uids[0]} vs {uids[1]})",
                                  patient=patient_id, path=where)
    if not world_extents_overlap(mask, target):
        drawn_on = f"the {source.sequence} contour" if source else "the contour"
        raise SarcogradeError(f"cannot carry {drawn_on}: the images do not overlap in physical "
                              "space (different frames of reference?)",
                              patient=patient_id, path=where)
    weight = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), target, sitk.Transform(),
                           sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    carried = sitk.Cast(weight >= 0.5, sitk.sitkUInt8)
    carried.CopyInformation(target)
    return carried


def read_drawn_mask(patient_id: str, source: MaskSource,
                    image: sitk.Image | None = None) -> sitk.Image:
    """The contour on the grid it was drawn on; `image` is that image where already read.

    The mask must lie on its image's grid (an RTSTRUCT is rasterised onto it).
    """
    reference = (image if image is not None
                 else read_sequence_image(patient_id, source.drawn_on, source.mask))
    mask = read_mask(source.mask, reference=reference, roi=source.roi)
    problems = grid_mismatches(reference, mask)
    if problems:
        which = f"the {source.sequence} image it was drawn on" if source.carried else "the image"
        raise SarcogradeError(f"mask is not on the grid of {which} ({'; '.join(problems)})",
                              patient=patient_id, path=source.mask)
    uid = frame_of_reference(reference)
    if uid is not None:  # the space it was drawn in, checked when it is carried
        mask.SetMetaData(FRAME_OF_REFERENCE_TAG, uid)
    return mask


def read_patient_mask(patient_id: str, image: sitk.Image, source: MaskSource,
                      image_path: Path | None = None) -> sitk.Image:
    """The tumour mask of `image`: as drawn on it, or carried from the sequence it was drawn on."""
    if not source.carried:
        return read_drawn_mask(patient_id, source, image)
    return carry_mask(read_drawn_mask(patient_id, source), image, patient_id, source, image_path)


def volume_change(drawn_ml: float, carried_ml: float) -> float:
    """Relative change of the tumour volume by carrying: carried / drawn - 1."""
    return carried_ml / drawn_ml - 1 if drawn_ml > 0 else float("nan")
