"""One patient's image of one sequence as the manifest names it: the file in `image_<SEQ>`, or the
DICOM folder there and the series that `series_<SEQ>` names.

Every stage that reads a manifest's images reads them here, so that a folder holding several
image series is refused in the manifest's words: the patient, the column, the folder, every
series it holds and, where the sequence's contour is an RTSTRUCT, the series that file says it
was drawn on (a hint only: the RTSTRUCT does not choose the series either).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from .cohort import Patient
from .dicom_series import DicomSeries, SeriesChoiceError, describe
from .errors import SarcogradeError
from .io import is_rtstruct, read_image


@dataclass(frozen=True)
class SequenceImage:
    """Where one sequence's image is (picklable, for worker processes)."""

    sequence: str
    path: Path
    series: str | None = None   # the SeriesInstanceUID of series_<SEQ>, for a DICOM folder


def sequence_image(patient: Patient, sequence: str) -> SequenceImage:
    """The image of `sequence` as the patient's manifest row names it."""
    return SequenceImage(sequence, patient.images[sequence], patient.series.get(sequence))


def _drawn_on(rtstruct: Path | None, sequence: str, candidates: list[DicomSeries]) -> str:
    """The series an RTSTRUCT contour references, as a hint for the error line ("" when none)."""
    if rtstruct is None or not is_rtstruct(rtstruct):
        return ""
    from .rtstruct import referenced_series

    try:
        referenced = sorted(referenced_series(rtstruct))
    except SarcogradeError:  # an unreadable RTSTRUCT is reported when the mask is read
        return ""
    if not referenced:
        return ""
    here = {series.uid for series in candidates}
    shown = ", ".join(uid if uid in here else f"{uid} (not in this folder)" for uid in referenced)
    return f"; the RTSTRUCT in mask_{sequence} references series {shown}"


def read_sequence_image(patient_id: str, image: SequenceImage,
                        rtstruct: Path | None = None) -> sitk.Image:
    """Read the image; `rtstruct` is the contour drawn on it, where that is an RTSTRUCT file.

    A DICOM folder with several image series and none named in `series_<SEQ>`, or a named series
    not in the folder, is a one-line error naming the patient, the column and the folder and
    listing the folder's series.
    """
    seq = image.sequence
    if image.series is not None and image.path.is_file():
        raise SarcogradeError(f"column series_{seq} names series {image.series}, but image_{seq} "
                              "is a file, not a DICOM folder", patient=patient_id, path=image.path)
    try:
        return read_image(image.path, image.series)
    except SeriesChoiceError as exc:
        column = f"series_{seq}" if image.series is not None else f"image_{seq}"
        raise SarcogradeError(f"column {column}: {exc.reason}; name one in column series_{seq}: "
                              f"{describe(exc.candidates)}"
                              f"{_drawn_on(rtstruct, seq, exc.candidates)}",
                              patient=patient_id, path=image.path) from None
