"""Who `grade` grades, as manifest patients: the manifest's (`--manifest`), one patient's files
(`--image SEQ=PATH --mask SEQ=PATH`), or one patient's whole DICOM exam (`--exam FOLDER`), whose
series are found by the package's SeriesDescription rules (or `--series SEQ=UID`) and whose
contour is an RTSTRUCT (or else a DICOM SEG) in the folder that references one of them (or
`--mask SEQ=PATH`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cohort import Patient, load_manifest, series_uid_problem
from ..dicom_series import SeriesChoiceError, describe, select_series
from ..errors import SarcogradeError
from ..formats.cache import check_patient_id
from ..formats.package import Package
from ..io import dicom_modality
from ..options import named_paths, split_assignment

DEFAULT_ID = "patient"


def patients_of(args: argparse.Namespace, package: Package) -> list[Patient]:
    """The patients to grade, each with at least one of the package's sequences."""
    given = [flag for flag, value in (("--manifest", args.manifest), ("--exam", args.exam),
                                      ("--image", args.image)) if value]
    if len(given) != 1:
        raise SarcogradeError("give one of --image SEQ=PATH (with --mask), --exam FOLDER or "
                              "--manifest CSV" + (f", not {' and '.join(given)}" if given else ""))
    if args.series and not args.exam:
        raise SarcogradeError("--series goes with --exam")
    if args.manifest is not None:
        if args.mask:
            raise SarcogradeError("--mask goes with --image or --exam; a manifest names its masks")
        patients = load_manifest(args.manifest, strict=True).patients
    elif args.exam is not None:
        patients = [exam_patient(args.exam, package, args.series, args.mask, args.id)]
    else:
        patients = [files_patient(args.image, args.mask, args.id)]
    for patient in patients:
        if not set(patient.images) & set(package.sequences):
            raise SarcogradeError(f"no image of the package's sequences "
                                  f"({', '.join(package.sequences)}); it has "
                                  f"{', '.join(patient.images) or 'none'}",
                                  patient=patient.patient_id)
    return patients


def files_patient(image_specs: list[str], mask_specs: list[str], patient_id: str) -> Patient:
    if not mask_specs:
        raise SarcogradeError("no tumour contour: give --mask SEQ=PATH for at least one sequence")
    check_patient_id(patient_id)
    images, masks = named_paths(image_specs, "--image"), named_paths(mask_specs, "--mask")
    stray = sorted(set(masks) - set(images))
    if stray:
        raise SarcogradeError(f"--mask {stray[0]}=... has no --image {stray[0]}=...")
    return Patient(patient_id, 0, None, images=images, masks=masks)


def series_overrides(specs: list[str], package: Package) -> dict[str, str]:
    """--series SEQ=UID by sequence, each a packaged sequence and a well-formed UID."""
    overrides = {}
    for spec in specs:
        sequence, uid = split_assignment(spec, "--series", "SEQ=UID")
        if sequence not in package.sequences:
            raise SarcogradeError(f"--series {spec!r}: the package has no sequence {sequence} "
                                  f"({', '.join(package.sequences)})")
        problem = series_uid_problem(uid)
        if problem:
            raise SarcogradeError(f"--series {spec!r}: {problem}")
        overrides[sequence] = uid
    return overrides


def exam_series(folder: Path, package: Package, specs: list[str]) -> dict[str, str]:
    """Each packaged sequence's SeriesInstanceUID in the exam; no match or several is one line
    listing the candidates, and nothing is graded."""
    overrides = series_overrides(specs, package)
    chosen = {}
    for sequence in package.sequences:
        rules = package.models[sequence].settings.get("series_rules") or []
        try:
            chosen[sequence] = select_series(folder, rules, overrides.get(sequence)).uid
        except SeriesChoiceError as exc:
            raise SarcogradeError(f"{sequence}: {exc.reason}; name its series with --series "
                                  f"{sequence}=UID: {describe(exc.candidates)}",
                                  path=folder) from None
    return chosen


def exam_contours(folder: Path, series: dict[str, str]) -> dict[str, Path]:
    """The RTSTRUCT (or else DICOM SEG) files of the exam by the sequence whose chosen series
    they reference."""
    from .. import dicom_seg, rtstruct

    readers = {"RTSTRUCT": rtstruct.referenced_series, "SEG": dicom_seg.referenced_series}
    by_uid = {uid: sequence for sequence, uid in series.items()}
    found = [(modality, path) for path in sorted(folder.rglob("*"))
             if (modality := dicom_modality(path)) in readers]
    contours: dict[str, Path] = {}
    for modality, path in sorted(found, key=lambda pair: pair[0] != "RTSTRUCT"):
        for uid in sorted(readers[modality](path) & set(by_uid)):
            contours.setdefault(by_uid[uid], path)
    if not contours:
        raise SarcogradeError("no RTSTRUCT or DICOM SEG in the exam references the chosen series ("
                              + ", ".join(f"{seq} {uid}" for seq, uid in series.items())
                              + "); give the contour with --mask SEQ=PATH", path=folder)
    return contours


def exam_patient(folder: Path, package: Package, series_specs: list[str],
                 mask_specs: list[str], patient_id: str) -> Patient:
    check_patient_id(patient_id)
    if not folder.is_dir():
        raise SarcogradeError("--exam is not a folder", path=folder)
    series = exam_series(folder, package, series_specs)
    masks = named_paths(mask_specs, "--mask") or exam_contours(folder, series)
    stray = sorted(set(masks) - set(series))
    if stray:
        raise SarcogradeError(f"--mask {stray[0]}=...: the package has no sequence {stray[0]}")
    return Patient(patient_id, 0, None, images={seq: folder for seq in series}, masks=masks,
                   series=series)
