"""Import the TCIA Soft-tissue-Sarcoma collection as the IBSI redistributes it (MR T1, 51 patients).

ROOT holds one folder per patient in either layout, or both:
  nifti/STS_001/MR_T1_image.nii.gz + MR_T1_mask.nii.gz
  dicom/STS_001/MR_T1/image/*.dcm  + MR_T1/mask/RS.dcm     (the mask is a DICOM-RTSTRUCT)
ROOT may also be the folder of patient folders itself (e.g. .../nifti). Where a patient has both
layouts, NIfTI is used (--prefer dicom for the DICOM series and its RTSTRUCT).

The clinical table is TCIA's INFOclinical_STS.xlsx as published (sheet "Clinical Information";
its notes rows at the end are skipped): Grade Low/Intermediate/High -> FNCLCC 1/2/3 (N/A ->
unknown); os_months = days from diagnosis to last follow-up / (365.25 / 12); os_event = 1 when
Status is D (dead), else 0; age; sex; site of primary and histology as primary_site, histology.
Sheet "Outcome vector" (column LungMets, 0/1) gives lung_metastasis (empty where the sheet or the
patient's row is absent).
The manifest's sequence is T1 (image_T1, mask_T1, roi_T1) and its site column names the cohort.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..artifacts import write_csv
from ..cohort import DAYS_PER_MONTH, is_missing, parse_grade, parse_sex
from ..console import info, warn
from ..errors import SarcogradeError
from ..rtstruct import roi_names

SEQUENCE = "T1"
SHEET = "Clinical Information"
OUTCOME_SHEET = "Outcome vector"
OUTCOME_COLUMN = "LungMets"
CLINICAL_FILE = "INFOclinical_STS.xlsx"
DEFAULT_ROI = "GTV_Mass_MR_T1"
DEFAULT_SITE = "TCIA-STS"
PATIENT_ID = re.compile(r"STS_\d+")
LAYOUTS = ("nifti", "dicom")
LAYOUT_NAMES = {"nifti": "NIfTI", "dicom": "DICOM + RTSTRUCT"}

# Spreadsheet header (lower case, dashes and spaces normalised) -> manifest field.
_COLUMNS = {
    "patient_id": r"^patient id",
    "age": r"^age\b",
    "sex": r"^sex\b",
    "histology": r"^histolog",
    "primary_site": r"^site of primary",
    "grade": r"^grade\b",
    "status": r"^status\b",
    "followup_days": r"last follow-?up",
}
_EVENT = {"D": 1, "NED": 0, "AWD": 0}   # dead; no evidence of disease; alive with disease

MANIFEST_COLUMNS = ["patient_id", "site", "grade", f"image_{SEQUENCE}", f"mask_{SEQUENCE}",
                    f"roi_{SEQUENCE}", "age", "sex", "os_months", "os_event", "lung_metastasis",
                    "primary_site", "histology"]


@dataclass(frozen=True)
class PatientFiles:
    """One patient's T1 image and mask, in the layout chosen for it."""
    patient_id: str
    layout: str           # "nifti" or "dicom"
    image: Path           # a NIfTI file or a DICOM series folder
    mask: Path            # a NIfTI file or an RTSTRUCT file
    roi: str | None = None


@dataclass
class ImportReport:
    manifest: pd.DataFrame
    layouts: dict[str, int]                     # layout -> number of patients
    clinical_patients: int                      # patient rows in the spreadsheet
    skipped_rows: int                           # notes and other non-patient rows
    no_clinical: list[str] = field(default_factory=list)   # images, no clinical row
    no_images: list[str] = field(default_factory=list)     # clinical row, no images
    incomplete: list[str] = field(default_factory=list)    # patient folders without a pair


def _layout_files(folder: Path) -> dict[str, tuple[Path, Path]]:
    found = {}
    image, mask = folder / "MR_T1_image.nii.gz", folder / "MR_T1_mask.nii.gz"
    if image.is_file() and mask.is_file():
        found["nifti"] = (image, mask)
    image, mask = folder / "MR_T1" / "image", folder / "MR_T1" / "mask" / "RS.dcm"
    if image.is_dir() and mask.is_file():
        found["dicom"] = (image, mask)
    return found


def _roi(rtstruct: Path, default: str) -> str:
    """The RTSTRUCT's only ROI, else `default`; an unreadable file is left to `check` to report."""
    try:
        names = roi_names(rtstruct)
    except SarcogradeError:
        return default
    return names[0] if len(names) == 1 else default


def find_patients(root: str | Path, prefer: str = "nifti",
                  roi: str = DEFAULT_ROI) -> tuple[dict[str, PatientFiles], list[str]]:
    """The patients under `root` with an MR T1 image and mask, one layout each (`prefer` first).

    Returns the patients by id and the ids of patient folders that hold neither layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise SarcogradeError("collection folder not found", path=root)
    found: dict[str, dict[str, tuple[Path, Path]]] = {}
    folders: set[str] = set()
    for parent in (root / "nifti", root / "dicom", root):
        if not parent.is_dir():
            continue
        for folder in sorted(parent.iterdir()):
            if folder.is_dir() and PATIENT_ID.fullmatch(folder.name):
                folders.add(folder.name)
                for layout, files in _layout_files(folder).items():
                    found.setdefault(folder.name, {}).setdefault(layout, files)
    if not found:
        raise SarcogradeError("no patient folder (STS_xxx) with an MR T1 image and mask; expected "
                              "nifti/STS_001/MR_T1_image.nii.gz + MR_T1_mask.nii.gz or "
                              "dicom/STS_001/MR_T1/image/ + MR_T1/mask/RS.dcm", path=root)
    order = (prefer,) + tuple(layout for layout in LAYOUTS if layout != prefer)
    patients = {}
    for pid in sorted(found):
        layout = next(layout for layout in order if layout in found[pid])
        image, mask = found[pid][layout]
        patients[pid] = PatientFiles(pid, layout, image, mask,
                                     _roi(mask, roi) if layout == "dicom" else None)
    return patients, sorted(folders - set(found))


def _find_column(frame: pd.DataFrame, name: str, path: Path) -> str:
    pattern = _COLUMNS[name]
    normalised = {c: re.sub(r"\s+", " ", re.sub("[\u2013\u2014]", "-", str(c))).strip().lower()
                  for c in frame.columns}
    matches = [c for c, text in normalised.items() if re.search(pattern, text)]
    if len(matches) != 1:
        raise SarcogradeError(f"sheet {SHEET!r}: {'no' if not matches else 'more than one'} "
                              f"column for {name} (columns: {', '.join(map(str, frame.columns))})",
                              path=path)
    return matches[0]


def _number(value, what: str, pid: str, path: Path) -> float | None:
    if is_missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SarcogradeError(f"non-numeric {what} {value!r}", patient=pid, path=path) from None
    if not number >= 0:
        raise SarcogradeError(f"invalid {what} {value!r}", patient=pid, path=path)
    return number


def _lung_metastasis(workbook: pd.ExcelFile, path: Path) -> dict[str, int]:
    """Patient id -> LungMets (0/1) of the "Outcome vector" sheet; empty when there is no sheet."""
    if OUTCOME_SHEET not in workbook.sheet_names:
        return {}
    frame = workbook.parse(OUTCOME_SHEET, dtype=object)
    names = {str(c).strip().lower(): c for c in frame.columns}
    if "patient id" not in names or OUTCOME_COLUMN.lower() not in names:
        raise SarcogradeError(f"sheet {OUTCOME_SHEET!r} needs columns 'Patient ID' and "
                              f"{OUTCOME_COLUMN!r} (columns: {', '.join(map(str, frame.columns))})",
                              path=path)
    events = {}
    for pid, value in zip(frame[names["patient id"]], frame[names[OUTCOME_COLUMN.lower()]]):
        pid = "" if is_missing(pid) else str(pid).strip()
        if not PATIENT_ID.fullmatch(pid) or is_missing(value):
            continue
        if str(value).strip() not in ("0", "1", "0.0", "1.0"):
            raise SarcogradeError(f"sheet {OUTCOME_SHEET!r}: {OUTCOME_COLUMN} {value!r} is not "
                                  "0 or 1", patient=pid, path=path)
        events[pid] = int(float(value))
    return events


def read_clinical(path: str | Path) -> tuple[pd.DataFrame, int]:
    """TCIA's clinical spreadsheet as manifest fields, indexed by patient_id.

    Returns the table (columns grade, age, sex, os_months, os_event, lung_metastasis,
    primary_site, histology; None where unknown) and the number of non-empty rows that are not
    patients (the notes).
    """
    path = Path(path)
    if not path.is_file():
        raise SarcogradeError("clinical spreadsheet not found", path=path)
    try:
        workbook = pd.ExcelFile(path, engine="openpyxl")
    except Exception as exc:  # openpyxl raises zipfile, XML and its own errors on a bad file
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise SarcogradeError(f"cannot read spreadsheet ({reason})", path=path) from None
    with workbook:
        if SHEET not in workbook.sheet_names:
            raise SarcogradeError(f"no sheet {SHEET!r} (sheets: {', '.join(workbook.sheet_names)})",
                                  path=path)
        frame = workbook.parse(SHEET, dtype=object)
        lung_metastasis = _lung_metastasis(workbook, path)
    columns = {name: _find_column(frame, name, path) for name in _COLUMNS}

    rows, skipped = {}, 0
    for _, row in frame.iterrows():
        pid = "" if is_missing(row[columns["patient_id"]]) else str(row[columns["patient_id"]]).strip()
        if not PATIENT_ID.fullmatch(pid):
            skipped += int(not row.isna().all())  # notes and titles; blank rows are not counted
            continue
        if pid in rows:
            raise SarcogradeError(f"sheet {SHEET!r}: duplicate row", patient=pid, path=path)
        try:
            grade = parse_grade(row[columns["grade"]])
            sex = None if is_missing(row[columns["sex"]]) else parse_sex(row[columns["sex"]])
        except ValueError as exc:
            raise SarcogradeError(str(exc), patient=pid, path=path) from None
        status = row[columns["status"]]
        status = None if is_missing(status) else str(status).strip().upper()
        if status is not None and status not in _EVENT:
            raise SarcogradeError(f"unknown Status {status!r} (expected NED, AWD or D)",
                                  patient=pid, path=path)
        days = _number(row[columns["followup_days"]], "days to last follow-up", pid, path)
        age = _number(row[columns["age"]], "age", pid, path)
        rows[pid] = {
            "grade": grade,
            "age": None if age is None else (int(age) if age.is_integer() else age),
            "sex": sex,
            # Days are whole numbers: three decimals of a month (~0.03 days) lose nothing.
            "os_months": None if days is None else round(days / DAYS_PER_MONTH, 3),
            "os_event": None if status is None else _EVENT[status],
            "lung_metastasis": lung_metastasis.get(pid),
            "primary_site": None if is_missing(row[columns["primary_site"]])
            else str(row[columns["primary_site"]]).strip(),
            "histology": None if is_missing(row[columns["histology"]])
            else str(row[columns["histology"]]).strip(),
        }
    if not rows:
        raise SarcogradeError(f"sheet {SHEET!r} has no patient rows (Patient ID like STS_001)",
                              path=path)
    return pd.DataFrame.from_dict(rows, orient="index"), skipped


def _manifest_path(path: Path, base: Path) -> str:
    """Relative to the manifest's folder where the file lies below it, else absolute."""
    # abspath, not resolve: a folder of symbolic links to the data stays a relative reference.
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(os.path.abspath(base)).as_posix()
    except ValueError:
        return str(path)


def import_tcia_sts(root: str | Path, clinical: str | Path, out: str | Path, *,
                    prefer: str = "nifti", site: str = DEFAULT_SITE,
                    roi: str = DEFAULT_ROI) -> ImportReport:
    """Write the manifest of the collection under `root` to `out` (atomically); say what was done."""
    if prefer not in LAYOUTS:
        raise SarcogradeError(f"unknown layout {prefer!r} (use {' or '.join(LAYOUTS)})")
    out = Path(out)
    patients, incomplete = find_patients(root, prefer, roi)
    table, skipped = read_clinical(clinical)
    rows = []
    for pid, files in patients.items():
        clinical_row = table.loc[pid].to_dict() if pid in table.index else {}
        rows.append({"patient_id": pid, "site": site,
                     f"image_{SEQUENCE}": _manifest_path(files.image, out.parent),
                     f"mask_{SEQUENCE}": _manifest_path(files.mask, out.parent),
                     f"roi_{SEQUENCE}": files.roi, **clinical_row})
    manifest = pd.DataFrame(rows).reindex(columns=MANIFEST_COLUMNS)
    # Integers stay integers in the CSV (pandas would write a column with gaps as floats).
    for column in ("grade", "os_event", "lung_metastasis", "age"):
        manifest[column] = manifest[column].map(
            lambda v: "" if v is None or pd.isna(v) else (int(v) if float(v).is_integer() else v))
    write_csv(out, manifest.fillna(""))
    layouts = {layout: sum(f.layout == layout for f in patients.values()) for layout in LAYOUTS}
    return ImportReport(manifest, layouts, len(table), skipped,
                        no_clinical=[pid for pid in patients if pid not in table.index],
                        no_images=[pid for pid in table.index if pid not in patients],
                        incomplete=incomplete)


def _default_clinical(root: Path) -> Path:
    for folder in (root, root.parent):
        if (folder / CLINICAL_FILE).is_file():
            return folder / CLINICAL_FILE
    raise SarcogradeError(f"no {CLINICAL_FILE} in the folder or its parent; give the clinical "
                          "spreadsheet with --clinical", path=root)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, metavar="ROOT",
                        help="the collection folder (with nifti/ and/or dicom/) or the folder of "
                             "patient folders")
    parser.add_argument("--clinical", type=Path, default=None,
                        help=f"TCIA's clinical spreadsheet (default: ROOT/{CLINICAL_FILE} or "
                             "one folder up)")
    parser.add_argument("--out", type=Path, default=Path("manifest.csv"),
                        help="manifest to write (default: manifest.csv)")
    parser.add_argument("--prefer", choices=LAYOUTS, default="nifti",
                        help="layout used where a patient has both (default: nifti)")
    parser.add_argument("--site", default=DEFAULT_SITE,
                        help=f"cohort name for the manifest's site column (default: {DEFAULT_SITE})")
    parser.add_argument("--roi", default=DEFAULT_ROI,
                        help="RTSTRUCT ROI of the tumour where a file has several "
                             f"(default: {DEFAULT_ROI})")


def run(args: argparse.Namespace) -> int:
    clinical = args.clinical or _default_clinical(args.root)
    report = import_tcia_sts(args.root, clinical, args.out, prefer=args.prefer, site=args.site,
                             roi=args.roi)
    grades = report.manifest["grade"].map(lambda g: f"G{g}" if g != "" else "unknown")
    counts = ", ".join(f"{g} {n}" for g, n in sorted(grades.value_counts().items()))
    layouts = ", ".join(f"{n} {LAYOUT_NAMES[layout]}" for layout, n in report.layouts.items() if n)
    info(f"wrote {args.out}: {len(report.manifest)} patients ({layouts}; {args.prefer} preferred "
         f"where both exist); grades: {counts}")
    info(f"clinical table {clinical}: {report.clinical_patients} patients, "
         f"{report.skipped_rows} notes rows skipped")
    for pid in report.no_clinical:
        warn(f"{pid}: images but no row in the clinical table; grade and outcome left empty")
    if report.no_images:
        warn(f"{len(report.no_images)} patients of the clinical table have no images under "
             f"{args.root}: {', '.join(report.no_images)}")
    for pid in report.incomplete:
        warn(f"{pid}: patient folder without an MR T1 image and mask; not in the manifest")
    info(f"next: sarcograde check {args.out}")
    return 0
