"""`grade --dicom-out`: a graded patient's result as DICOM objects that attach to the patient's
own exam in PACS (one object type per module: `sr` the structured report of grade.json, `seg`
the contour used on each sequence), written into `DIR/<id>/dicom/`.

Patient and study attributes are copied from the source series by highdicom (so the objects
file under the exam), nothing else of the source's identifying attributes; these objects are the
only outputs that carry them. Only DICOM inputs can be answered in DICOM."""

from __future__ import annotations

from pathlib import Path

from ..cohort import Patient
from ..formats.dicom_out import dicom_folder, seg_name, SR_NAME
from ..formats.package import Package
from ..masks import mask_source
from .common import save
from .sources import check_dicom_input, source_series

__all__ = ["check_dicom_input", "write_dicom"]


def write_dicom(out: Path, result: dict, patient: Patient, package: Package) -> list[Path]:
    """The SEG of each graded sequence's contour and the SR; the files written."""
    from .seg import segmentation
    from .sr import structured_report

    checksum = package.document["checksum"]
    sources = {seq: source_series(patient, seq) for seq in result["sequences"]}
    segs = {seq: segmentation(series, package.id, checksum,
                              carried=mask_source(patient, seq).carried)
            for seq, series in sources.items()}
    report = structured_report(result, {seq: package.models[seq].name for seq in sources},
                               sources, segs, checksum)
    folder = dicom_folder(out, result["patient_id"])
    written = [save(seg, folder / seg_name(seq)) for seq, seg in segs.items()]
    return [*written, save(report, folder / SR_NAME)]
