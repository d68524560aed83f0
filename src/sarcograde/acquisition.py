"""The acquisition of one patient's image of one sequence: how it was scanned, as its file's header
says, and how its tumour looks after the preprocessing's normalisation; the training cohort's
range of each value, and where a new patient falls outside it.

A model has seen only the scanners and protocols of its training cohort. `preprocess` records
each patient's values in the cache's index.csv (`index_values`), `export` keeps the training
patients' range of each in the package (`training_ranges`), and `grade` compares a new patient's
values with them (`compare`). `check` writes the protocol table of a cohort (`protocol_row`,
acquisition.csv).

The values compared:
- in-plane pixel spacing and slice spacing of the image as stored, before the 1 mm resampling
  (a coarse source is smoothed by the resampling, not made sharp);
- slice thickness: DICOM SliceThickness; other formats do not hold it, so the slice spacing
  stands for it (`slice_thickness_from` says which);
- field strength in tesla: DICOM MagneticFieldStrength, unknown for other formats;
- the mean and SD of the tumour's voxels in the cached slices after the z-score over the body.
  The z-score fixes the body's mean at 0 and its SD at 1 whatever the scanner's units, so what
  is left to differ is the tumour's brightness against the body (contrast uptake, fat
  suppression, the sequence's weighting) and its spread (heterogeneity and noise): what the
  network sees of a protocol it was not trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .errors import SarcogradeError
from .formats.acquisition import (CATEGORICAL, COMPARED, NUMERIC, SUMMARY_COLUMNS,
                                  THICKNESS_FROM)
from .formats.common import first_line
from .sequence_image import SequenceImage

# The values `grade` compares (index.csv's columns): (name in words, unit).
VALUES = {
    "pixel_spacing_mm": ("in-plane pixel spacing", "mm"),
    "slice_spacing_mm": ("slice spacing", "mm"),
    "slice_thickness_mm": ("slice thickness", "mm"),
    "field_strength_t": ("field strength", "T"),
    "tumour_z_mean": ("mean tumour intensity after the z-score over the body", ""),
    "tumour_z_sd": ("SD of the tumour intensity after the z-score over the body", ""),
}
assert list(VALUES) == COMPARED, "index.csv's columns and their words must match"
DIGITS = 4  # values are rounded so that the range and the patient compare as written
RANGE_RULE = "minimum and maximum over the training patients whose value is known"
FLAG = "acquisition_outside_training_range"
# A MagneticFieldStrength above this is in gauss (some older scanners write 15000 for 1.5 T).
GAUSS_ABOVE = 100.0

# DICOM attributes of the protocol table (acquisition.csv): keyword -> column. None of them
# identifies a patient, an operator or an institution.
PROTOCOL_TAGS = {"Manufacturer": "manufacturer", "ManufacturerModelName": "model",
                 "MagneticFieldStrength": "field_strength_t", "SequenceName": "sequence_name",
                 "RepetitionTime": "repetition_time_ms", "EchoTime": "echo_time_ms",
                 "FlipAngle": "flip_angle_deg", "SliceThickness": "slice_thickness_mm"}
_FORMATS = {".nii": "NIfTI", ".nii.gz": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD",
            ".mha": "MetaImage", ".mhd": "MetaImage"}


@dataclass(frozen=True)
class Header:
    """What an image file's header says about its acquisition (arrays indexed as stored)."""

    format: str                         # DICOM, NIfTI, NRRD, MetaImage, ...
    pixel_spacing_mm: tuple[float, float]  # between rows, between columns
    slice_spacing_mm: float
    matrix: tuple[int, int]             # rows, columns
    n_slices: int
    dicom: dict                         # PROTOCOL_TAGS' attributes present (DICOM only)

    @property
    def field_strength_t(self) -> float | None:
        value = self.dicom.get("MagneticFieldStrength")
        if value is None:
            return None
        return value / 1e4 if value > GAUSS_ABOVE else value


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _dicom_value(ds, keyword: str):
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if keyword in ("Manufacturer", "ManufacturerModelName", "SequenceName"):
        return str(value).strip() or None
    return _number(value)


def _dicom_header(folder: Path, series: str | None) -> Header:
    """The series' first slice's attributes; pixel spacing and matrix as GDCM reads them (an
    enhanced multi-frame file too); the slice spacing from the slices' positions along the slice
    normal, as the image reader places them (GDCM's for one multi-frame file)."""
    import pydicom

    from .dicom_series import find_series

    files = find_series(folder, series).files
    geometry = ["ImagePositionPatient"]
    try:
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
        positions = [pydicom.dcmread(f, stop_before_pixels=True, specific_tags=geometry)
                     for f in files]
    except Exception as exc:  # the image reader read it: a header pydicom cannot parse
        raise SarcogradeError(f"cannot read the DICOM header ({first_line(exc)})",
                              path=folder) from None
    grid = _file_header(Path(files[0]))
    slice_spacing, n_slices = grid.slice_spacing_mm, grid.n_slices
    if len(files) > 1:
        n_slices = len(files)
        if "ImageOrientationPatient" in first and all("ImagePositionPatient" in p
                                                      for p in positions):
            cosines = np.array([float(v) for v in first.ImageOrientationPatient])
            normal = np.cross(cosines[:3], cosines[3:])
            along = np.sort([np.dot([float(v) for v in p.ImagePositionPatient], normal)
                             for p in positions])
            slice_spacing = float(np.median(np.diff(along)))
    return Header("DICOM", grid.pixel_spacing_mm, slice_spacing, grid.matrix, n_slices,
                  {keyword: value for keyword in PROTOCOL_TAGS
                   if (value := _dicom_value(first, keyword)) is not None})


def _file_header(path: Path) -> Header:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise SarcogradeError(f"cannot read the image header ({first_line(exc)})",
                              path=path) from None
    x, y, z = reader.GetSpacing()[:3]
    columns, rows, slices = reader.GetSize()[:3]
    name = path.name.lower()
    kind = next((f for suffix, f in _FORMATS.items() if name.endswith(suffix)), path.suffix[1:])
    return Header(kind, (y, x), z, (rows, columns), slices, {})


def read_header(image: SequenceImage) -> Header:
    """The acquisition header of a sequence's image: a DICOM series (the one the manifest names)
    or an image file; only the header is read, never the voxels."""
    if image.path.is_dir():
        return _dicom_header(image.path, image.series)
    return _file_header(image.path)


def tumour_intensity(image: np.ndarray, mask: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and SD of the cached (z-scored) slices' voxels inside the tumour; None without any."""
    values = np.asarray(image, dtype=np.float64)[np.asarray(mask) > 0]
    if values.size == 0:
        return None, None
    return float(values.mean()), float(values.std())


def index_values(header: Header, image: np.ndarray, mask: np.ndarray) -> dict:
    """A patient's acquisition columns of index.csv (INDEX_COLUMNS); "" where unknown."""
    thickness = header.dicom.get("SliceThickness")
    mean, sd = tumour_intensity(image, mask)
    values = {"pixel_spacing_mm": max(header.pixel_spacing_mm),
              "slice_spacing_mm": header.slice_spacing_mm,
              "slice_thickness_mm": header.slice_spacing_mm if thickness is None else thickness,
              "field_strength_t": header.field_strength_t,
              "tumour_z_mean": mean, "tumour_z_sd": sd}
    row = {name: "" if _number(v) is None else round(float(v), DIGITS)
           for name, v in values.items()}
    row[THICKNESS_FROM] = "slice spacing" if thickness is None else "SliceThickness"
    return row


def patient_values(row) -> dict[str, float | None]:
    """The compared values of one index.csv row (a mapping); None where unknown or absent."""
    return {name: _number(row.get(name)) for name in VALUES}


# ------------------------------------------------------------------------------- ranges

def not_recorded(reason: str) -> dict:
    """A package's range block when the training cohort's values are unknown."""
    return {"known": False, "reason": reason}


def training_ranges(rows: pd.DataFrame) -> dict:
    """model.json's `acquisition_range` of one sequence from its training patients' index.csv
    rows: per value the minimum, the maximum and the number of patients with it known (no
    patient id). A cache written before these columns gives `known: false` and why."""
    if not set(VALUES) <= set(rows.columns) or (rows[list(VALUES)] == "").all().all():
        return not_recorded("the training cache was written by a version of `sarcograde "
                            "preprocess` that did not record the acquisition")
    ranges = {}
    for name in VALUES:
        known = pd.to_numeric(rows[name], errors="coerce").dropna()
        ranges[name] = ({"min": float(known.min()), "max": float(known.max()), "n": len(known)}
                        if len(known) else None)
    sources = sorted(set(rows[THICKNESS_FROM]) - {""}) if THICKNESS_FROM in rows else []
    return {"known": True, "rule": RANGE_RULE, "n_patients": len(rows), "values": ranges,
            "slice_thickness_from": sources}


def amount(value: float, unit: str) -> str:
    """A value as the flags and pages write it: 4 significant digits and its unit."""
    return f"{value:.4g}" + (f" {unit}" if unit else "")


def span(low: float, high: float, unit: str) -> str:
    """A range as the flags and pages write it: "0.69–0.75 mm"."""
    return f"{low:.4g}–{high:.4g}" + (f" {unit}" if unit else "")


def compare(sequence: str, values: dict[str, float | None], block: dict | None) -> dict:
    """One sequence's comparison of a patient's `values` (patient_values) with a package's range
    `block`: `checked`, the values, each range, and the values `outside` (each with the flag's
    message in words) or `unknown` (the patient's or the training cohort's value missing)."""
    if not block or not block.get("known"):
        reason = (block or {}).get("reason") or ("the package holds no training range of the "
                                                  "acquisition (exported before it was recorded)")
        return {"checked": False, "reason": reason, "values": values}
    outside, unknown = [], []
    for name, (words, unit) in VALUES.items():
        value, known = values.get(name), block["values"].get(name)
        if value is None or known is None:
            unknown.append(name)
            continue
        low, high = known["min"], known["max"]
        if not low <= value <= high:
            outside.append({"value": name, "patient": value, "min": low, "max": high,
                            "message": f"{sequence}: {words} {amount(value, unit)} is outside "
                                       f"the training range {span(low, high, unit)} "
                                       f"({known['n']} patients)"})
    if set(unknown) == set(VALUES):
        return {"checked": False, "values": values,
                "reason": "no acquisition value is known both for this patient and for the "
                          "training cohort"}
    return {"checked": True, "values": values, "range": block["values"], "outside": outside,
            "unknown": unknown}


def range_words(block: dict | None) -> list[str]:
    """A package range block in words, one line per value (the model card's)."""
    if not block or not block.get("known"):
        return [(block or {}).get("reason") or "not recorded"]
    lines = []
    for name, (words, unit) in VALUES.items():
        known = block["values"].get(name)
        line = f"{words}: " + ("unknown" if known is None else
                               f"{span(known['min'], known['max'], unit)} ({known['n']} patients)")
        if name == "slice_thickness_mm" and block.get("slice_thickness_from") == ["slice spacing"]:
            line += " (the slice spacing: the headers hold no thickness)"
        lines.append(line)
    return lines


# ------------------------------------------------------------------------------- protocol table

def protocol_row(patient_id: str, sequence: str, site: str, header: Header) -> dict:
    """One row of acquisition.csv (PROTOCOL_COLUMNS): the DICOM protocol attributes where the
    image is DICOM ("" where a header does not hold them), the geometry for every format."""
    row = {"patient_id": patient_id, "sequence": sequence, "site": site, "format": header.format,
           **{column: header.dicom.get(keyword, "") for keyword, column in PROTOCOL_TAGS.items()},
           # 6 decimals: a NIfTI's float32 spacing or a sum of positions carries rounding noise
           "slice_spacing_mm": round(header.slice_spacing_mm, 6),
           "pixel_spacing_row_mm": round(header.pixel_spacing_mm[0], 6),
           "pixel_spacing_column_mm": round(header.pixel_spacing_mm[1], 6),
           "matrix_rows": header.matrix[0], "matrix_columns": header.matrix[1],
           "n_slices": header.n_slices}
    if header.field_strength_t is not None:
        row["field_strength_t"] = header.field_strength_t
    return row


def _counts(values: pd.Series) -> str:
    """"Siemens (20), GE (14)": each value with its count, commonest first."""
    shown = values.astype(str).replace("", "unknown").value_counts()
    return ", ".join(f"{value} ({count})" for value, count in shown.items())


def _median_range(values: pd.Series) -> str:
    known = pd.to_numeric(values, errors="coerce").dropna()
    if known.empty:
        return "unknown"
    low, mid, high = known.min(), known.median(), known.max()
    return f"{mid:.4g}" if low == high else f"{mid:.4g} ({low:.4g}–{high:.4g})"


def summary(rows: list[dict]) -> pd.DataFrame:
    """acquisition-summary.csv: per site and sequence, the patients counted, each categorical
    column's values with their counts and each numeric column's median (range)."""
    frame = pd.DataFrame(rows)
    out = []
    if not frame.empty:
        for (site, sequence), group in frame.groupby(["site", "sequence"], sort=True):
            out.append({"site": site, "sequence": sequence, "n": len(group),
                        **{c: _counts(group[c]) for c in CATEGORICAL},
                        **{c: _median_range(group[c]) for c in NUMERIC}})
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)
