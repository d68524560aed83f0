"""What `grade --dicom-out` writes (docs/dicom.md): per patient `DIR/<id>/dicom/` with the
structured report `sr.dcm`, and per graded sequence its contour `seg-<SEQ>.dcm`, its attention
map on the source grid `attention-<SEQ>.dcm` and its montage `montage-<SEQ>.dcm`."""

from __future__ import annotations

from pathlib import Path

DICOM = "dicom"
SR_NAME = "sr.dcm"


def dicom_folder(out: str | Path, patient_id: str) -> Path:
    return Path(out) / patient_id / DICOM


def seg_name(sequence: str) -> str:
    return f"seg-{sequence}.dcm"


def map_name(sequence: str) -> str:
    return f"attention-{sequence}.dcm"


def montage_name(sequence: str) -> str:
    return f"montage-{sequence}.dcm"
