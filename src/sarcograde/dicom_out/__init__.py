"""`grade --dicom-out`: a graded patient's result as DICOM objects that attach to the patient's
own exam in PACS (one object type per module: `sr` the structured report of grade.json, `seg`
the contour used on each sequence, `attention_map` each sequence's attention as a Parametric Map
on the source grid, `montage` its montage as a Secondary Capture), written into
`DIR/<id>/dicom/`.

Patient and study attributes are copied from the source series by highdicom (so the objects
file under the exam), nothing else of the source's identifying attributes; these objects are the
only outputs that carry them. Only DICOM inputs can be answered in DICOM."""

from __future__ import annotations

from pathlib import Path

from ..cohort import Patient
from ..formats.cache import npz_relpath, read_patient_file
from ..formats.dicom_out import SR_NAME, dicom_folder, map_name, montage_name, seg_name
from ..formats.grade import ATTENTION, CACHE, patient_folder
from ..formats.predictions import maps_path
from ..formats.package import Package
from ..masks import mask_source
from .common import save
from .sources import check_dicom_input, source_series

__all__ = ["check_dicom_input", "write_dicom"]


def attention_objects(out: Path, result: dict, sequence: str, series, package_id: str,
                      checksum: str) -> dict[str, object]:
    """The sequence's attention map on its source grid and its montage, by file name."""
    from .attention_map import map_on_source, parametric_map, read_crops
    from .montage import secondary_capture

    folder = patient_folder(out, result["patient_id"])
    cam = read_patient_file(maps_path(folder / ATTENTION / sequence, result["patient_id"]),
                            ("cam",))["cam"]
    crops = read_crops(folder / CACHE / sequence / npz_relpath(result["patient_id"]))
    values = map_on_source(cam, crops, series.image)
    montage = folder / result["attention"][sequence]["montage"]
    return {map_name(sequence): parametric_map(series, values, package_id, checksum),
            montage_name(sequence): secondary_capture(series, montage, checksum)}


def write_dicom(out: Path, result: dict, patient: Patient, package: Package) -> list[Path]:
    """The SEG of each graded sequence's contour, its attention map and montage, and the SR;
    the files written."""
    from .seg import segmentation
    from .sr import structured_report

    checksum = package.document["checksum"]
    sources = {seq: source_series(patient, seq) for seq in result["sequences"]}
    segs = {seq: segmentation(series, package.id, checksum,
                              carried=mask_source(patient, seq).carried)
            for seq, series in sources.items()}
    report = structured_report(result, {seq: package.models[seq].name for seq in sources},
                               sources, segs, checksum)
    maps = {name: obj for seq in result["attention"]
            for name, obj in attention_objects(out, result, seq, sources[seq], package.id,
                                               checksum).items()}
    folder = dicom_folder(out, result["patient_id"])
    written = [save(seg, folder / seg_name(seq)) for seq, seg in segs.items()]
    written += [save(obj, folder / name) for name, obj in maps.items()]
    return [*written, save(report, folder / SR_NAME)]
