"""What `grade --dicom-out` writes (docs/dicom.md): per patient `DIR/<id>/dicom/` with the
structured report `sr.dcm` and each graded sequence's contour `seg-<SEQ>.dcm`."""

from __future__ import annotations

from pathlib import Path

DICOM = "dicom"
SR_NAME = "sr.dcm"


def dicom_folder(out: str | Path, patient_id: str) -> Path:
    return Path(out) / patient_id / DICOM


def seg_name(sequence: str) -> str:
    return f"seg-{sequence}.dcm"
