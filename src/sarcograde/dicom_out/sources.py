"""The source series of a graded patient, as the DICOM objects `grade --dicom-out` writes refer
to them: each sequence's slice headers (no pixel data) in the image's own slice order, and the
patient's contour on that series' grid.

Only DICOM inputs have them: an `--exam`, or an image that is a DICOM series folder. A NIfTI has
no patient, study or SOP instances for a result to attach to in PACS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..cohort import Patient
from ..dicom_series import find_series
from ..errors import SarcogradeError
from ..masks import mask_source, read_patient_mask
from ..sequence_image import read_sequence_image, sequence_image

# Generated UIDs start with pydicom's root (registered for pydicom's users) and hash what the
# object is derived from, so that grading the same exam with the same package twice gives the
# same UIDs (a PACS then keeps one copy, not two of the same result).
UID_ROOT = "1.2.826.0.1.3680043.8.498."


def derived_uid(*sources: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=list(sources)))


@dataclass(frozen=True)
class SourceSeries:
    """One sequence's DICOM series: its slice headers ordered as the image's slice index, the
    image read from it and the tumour mask on its grid (as drawn there or carried to it)."""

    sequence: str
    slices: list            # pydicom Datasets without pixel data, slice index order
    image: sitk.Image
    mask: sitk.Image

    @property
    def series_uid(self) -> str:
        return str(self.slices[0].SeriesInstanceUID)

    @property
    def study_uid(self) -> str:
        return str(self.slices[0].StudyInstanceUID)

    def mask_frames(self) -> np.ndarray:
        """The mask as (slices, rows, columns), frame i on `slices[i]`."""
        return sitk.GetArrayFromImage(self.mask).astype(bool)


def is_dicom_input(patient: Patient) -> bool:
    """True when every image of the patient is a DICOM series folder."""
    return bool(patient.images) and all(Path(p).is_dir() for p in patient.images.values())


def check_dicom_input(patient: Patient) -> None:
    if not is_dicom_input(patient):
        files = ", ".join(f"{seq} {Path(p).name}" for seq, p in patient.images.items()
                          if not Path(p).is_dir())
        raise SarcogradeError(f"--dicom-out needs DICOM inputs (--exam FOLDER or DICOM series "
                              f"folders), not image files ({files})", patient=patient.patient_id)


def slice_headers(folder: Path, series_uid: str | None, image: sitk.Image) -> list:
    """The series' slice headers (no pixel data) in the order of `image`'s slice index."""
    import pydicom

    files = find_series(folder, series_uid).files
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    # Order by where each slice lies on the image's slice axis, not by file order.
    index = [image.TransformPhysicalPointToIndex([float(v) for v in h.ImagePositionPatient])[2]
             for h in headers]
    if sorted(index) != list(range(image.GetDepth())):
        raise SarcogradeError(f"the slices of series {series_uid or ''} do not map one to one "
                              "onto the image's slices", path=folder)
    return [h for _, h in sorted(zip(index, headers), key=lambda pair: pair[0])]


def source_series(patient: Patient, sequence: str) -> SourceSeries:
    """The sequence's series with the contour `grade` used on it."""
    where = sequence_image(patient, sequence)
    source = mask_source(patient, sequence)
    image = read_sequence_image(patient.patient_id, where,
                                source.mask if source and not source.carried else None)
    mask = read_patient_mask(patient.patient_id, image, source, where.path)
    return SourceSeries(sequence, slice_headers(where.path, where.series, image), image, mask)
