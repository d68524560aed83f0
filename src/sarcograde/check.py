"""Validate a cohort before any work and write its QA table, qa.csv, and its acquisition table,
acquisition.csv (each image's scanner, protocol and geometry as its header gives them, no
identifier) with its summary per site and sequence, acquisition-summary.csv.

Every patient's image and mask are loaded and measured (shape, spacing, orientation, intensity
percentiles, tumour volume, longest diameter, connected pieces). A patient is unusable when a
file is missing, unreadable or truncated, image and mask are on different grids, the mask is
empty, one voxel or not binary, the image is blank, has NaN/inf voxels or is not 3D, a DICOM
series has a missing slice, a DICOM folder holds several image series and `series_<SEQ>` names
none of them, an RTSTRUCT belongs to another frame of reference or series, or the manifest row
has a duplicate or unusable id, an unparseable grade or a non-numeric clinical value. A mask in
several pieces or covering most of the image is a warning. A sequence without its own contour
gets the one drawn on another sequence carried onto its grid (`sarcograde.masks`; `mask_source`
says which, with a warning when carrying changes the volume by more than 10%). Each problem is
printed as one line "patient: file: problem"; the exit status is 0 when every patient is usable
and 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist

from .acquisition import protocol_row, read_header, summary
from .artifacts import RunRecord
from .cohort import Cohort, ManifestProblem, Patient, load_manifest
from .console import progress
from .dicom_tags import SERIES_UID_TAG
from .errors import SarcogradeError
from .formats.acquisition import ACQUISITION, write_acquisition
from .formats.qa import QA, QA_COLUMNS, QA_RECORD, write_qa  # noqa: F401 QA_COLUMNS: public here
from .io import (ImageWarning, grid_mismatches, is_dicom_contour, mask_pieces, orientation_code,
                 read_mask, tumour_volume_ml)
from .masks import (DRAWN, VOLUME_TOLERANCE, MaskSource, carry_mask, mask_source, read_drawn_mask,
                    volume_change)
from .sequence_image import read_sequence_image, sequence_image

# A mask covering more of the image than this is more likely the limb or the field of view.
MAX_MASK_SHARE = 0.5


@dataclass(frozen=True)
class Finding:
    """A problem or warning: `text` goes into qa.csv, `line()` to the terminal."""

    patient_id: str
    path: Path | str
    text: str

    def line(self) -> str:
        return f"{self.patient_id or '?'}: {self.path}: {self.text}"


@dataclass
class QaRow:
    """One patient and sequence: the measurements of qa.csv and what was found wrong."""

    patient_id: str
    sequence: str
    image: str = ""
    mask: str = ""
    values: dict = field(default_factory=dict)
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    acquisition: dict | None = None  # its row of acquisition.csv, where the image was read

    @property
    def usable(self) -> bool:
        return not self.problems

    def as_record(self) -> dict:
        return {"patient_id": self.patient_id, "sequence": self.sequence, "image": self.image,
                "mask": self.mask, **self.values, "usable": self.usable,
                "problems": "; ".join(f.text for f in self.problems),
                "warnings": "; ".join(f.text for f in self.warnings)}


def physical_points(image: sitk.Image, index_xyz: np.ndarray) -> np.ndarray:
    """Physical coordinates (mm) of voxel indices (n, 3) in x, y, z order: origin + D S index."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + (index_xyz * np.array(image.GetSpacing())) @ direction.T


def _max_distance(points: np.ndarray, chunk: int = 2048) -> float:
    best = 0.0
    for start in range(0, len(points), chunk):
        best = max(best, float(cdist(points[start:start + chunk], points[start:]).max()))
    return best


def longest_diameter_mm(mask: sitk.Image) -> float:
    """Largest distance in mm between two tumour voxel centres (0 for one voxel, NaN if empty).

    The farthest pair of a point set lies on its convex hull, and that hull is spanned by the
    surface voxels alone, so only the hull vertices of the surface are compared.
    """
    array = sitk.GetArrayViewFromImage(mask) > 0
    if not array.any():
        return math.nan
    box = ndimage.find_objects(array.view(np.uint8))[0]  # the tumour's bounding box
    crop = np.pad(array[box], 1)  # a False border, so voxels on the box's faces count as surface
    surface = crop & ~ndimage.binary_erosion(crop)
    index_zyx = np.argwhere(surface) - 1 + np.array([s.start for s in box])
    points = physical_points(mask, index_zyx[:, ::-1].astype(float))
    if len(points) > 64:  # below that, comparing all pairs is cheaper than a hull
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # all points in one plane or on one line, e.g. a one-slice tumour
            points = points[ConvexHull(points, qhull_options="QJ").vertices]
    return _max_distance(points)


def _measure_image(image: sitk.Image, row: QaRow, path: Path) -> None:
    array = sitk.GetArrayViewFromImage(image)  # finite: io.read_image refuses NaN and inf
    p1, p50, p99 = np.percentile(array, [1, 50, 99])
    row.values.update(
        series_uid=image.GetMetaData(SERIES_UID_TAG) if image.HasMetaDataKey(SERIES_UID_TAG)
        else "",
        shape="x".join(str(n) for n in image.GetSize()),
        spacing_mm="x".join(f"{s:.6g}" for s in image.GetSpacing()),
        orientation=orientation_code(image), p1=float(p1), p50=float(p50), p99=float(p99))


def _check_image_contrast(image: sitk.Image, row: QaRow, path: Path) -> None:
    """An image whose voxels all hold one value (all zero: a blank export) shows no tumour."""
    array = sitk.GetArrayViewFromImage(image)
    low, high = float(array.min()), float(array.max())
    if low == high:
        row.problems.append(Finding(row.patient_id, path,
                                    f"image: every voxel is {low:g} (a blank image)"))


def _measure_mask(mask: sitk.Image, row: QaRow, path: Path) -> None:
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    row.values.update(mask_voxels=voxels, tumour_volume_ml=tumour_volume_ml(mask),
                      longest_diameter_mm=longest_diameter_mm(mask))
    if voxels == 0:
        row.problems.append(Finding(row.patient_id, path, "mask: empty mask (no voxel above 0)"))


def _check_mask_size(mask: sitk.Image, row: QaRow, path: Path) -> None:
    """A one-voxel mask is no tumour outline; one covering most of the image is likely the limb."""
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    share = voxels / max(1, int(np.prod(mask.GetSize())))
    if voxels == 1:
        row.problems.append(Finding(row.patient_id, path,
                                    "mask: a single voxel, not a tumour outline"))
    elif share > MAX_MASK_SHARE:
        row.warnings.append(Finding(row.patient_id, path, f"mask: covers {share:.0%} of the "
                                    "image; is it the tumour?"))


def _check_mask_pieces(mask: sitk.Image, row: QaRow, path: Path) -> None:
    """Disconnected pieces (RTSTRUCT fragments, stray voxels) make the diameter and the crop span
    all of them; preprocess drops those under 1% of the largest and keeps the others."""
    _, sizes = mask_pieces(mask)
    if not len(sizes):
        return
    share = float(sizes[0] / sizes.sum())
    row.values.update(mask_pieces=len(sizes), largest_piece_share=round(share, 4))
    if len(sizes) > 1:
        row.warnings.append(Finding(row.patient_id, path,
                                    f"mask: {len(sizes)} disconnected pieces; the largest holds "
                                    f"{share:.1%} of the voxels"))


def _read(role: str, row: QaRow, reader, path: Path, *args) -> sitk.Image | None:
    """Run an io reader; its error becomes a problem and its ImageWarnings become warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageWarning)
        try:
            result = reader(path, *args)
        except SarcogradeError as exc:
            row.problems.append(Finding(row.patient_id, path, f"{role}: {exc.problem}"))
            result = None
        except Exception as exc:  # a library error on one patient must not stop the cohort's QA
            reason = " ".join(str(exc).split())[:200]
            row.problems.append(Finding(row.patient_id, path,
                                        f"{role}: {type(exc).__name__}: {reason}"))
            result = None
    for w in caught:
        if isinstance(w.message, ImageWarning):
            row.warnings.append(Finding(row.patient_id, w.message.path,
                                        f"{role}: {w.message.problem}"))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def check_patient(patient: Patient, sequence: str) -> QaRow:
    """Load and measure one patient's image and mask of one sequence."""
    row = QaRow(patient.patient_id, sequence)
    image_path, mask_path = patient.images.get(sequence), patient.masks.get(sequence)
    image = mask = None
    source = mask_source(patient, sequence)
    if image_path is not None:
        row.image = str(image_path)
        drawn = None if source is None or source.carried else source.mask
        image = _read("image", row, lambda path: read_sequence_image(
            patient.patient_id, sequence_image(patient, sequence), drawn), image_path)
        if image is not None:
            _measure_image(image, row, image_path)
            _check_image_contrast(image, row, image_path)
            header = _read("image header", row, lambda path: read_header(
                sequence_image(patient, sequence)), image_path)
            if header is not None:
                row.acquisition = protocol_row(patient.patient_id, sequence, patient.site or "",
                                               header)
    if source is not None and source.carried:
        row.mask = str(source.mask)
        if image is not None:
            _check_carried_mask(patient.patient_id, image, image_path, source, row)
    elif mask_path is not None:
        row.values.update(mask_source=DRAWN)
        row.mask = str(mask_path)
        # An RTSTRUCT or SEG needs its image: if that is unreadable, that is the problem to report.
        if image is not None or not is_dicom_contour(mask_path):
            mask = _read("mask", row, read_mask, mask_path, image, patient.rois.get(sequence))
            if mask is not None:
                _measure_mask(mask, row, mask_path)
                _check_mask_size(mask, row, mask_path)
                _check_mask_pieces(mask, row, mask_path)
    if image is not None and mask is not None:
        mismatches = grid_mismatches(image, mask)
        if mismatches:
            row.problems.append(Finding(patient.patient_id, mask_path,
                                        "image and mask on different grids: " +
                                        ", ".join(mismatches)))
    return row


def _check_carried_mask(patient_id: str, image: sitk.Image, image_path: Path,
                        source: MaskSource, row: QaRow) -> None:
    """Carry another sequence's contour onto `image`; its volume on both grids, a warning when
    they differ by more than masks.VOLUME_TOLERANCE."""
    row.values.update(mask_source=source.label)
    drawn = _read("mask", row, lambda path: read_drawn_mask(patient_id, source), source.mask)
    if drawn is None:
        return
    carried = _read("mask", row, lambda path: carry_mask(drawn, image, patient_id, source,
                                                         image_path), source.mask)
    if carried is None:
        return
    drawn_ml = tumour_volume_ml(drawn)
    row.values.update(drawn_volume_ml=drawn_ml)
    _measure_mask(carried, row, source.mask)
    change = volume_change(drawn_ml, row.values["tumour_volume_ml"])
    if abs(change) > VOLUME_TOLERANCE:
        row.warnings.append(Finding(patient_id, source.mask, f"mask: carried from "
                                    f"{source.sequence}, the volume changes by {change:+.0%} "
                                    f"({drawn_ml:.2f} -> {row.values['tumour_volume_ml']:.2f} ml)"))


def _manifest_finding(problem: ManifestProblem, manifest: Path) -> Finding:
    return Finding(problem.patient_id, manifest,
                   f"row {problem.row}, column {problem.column}: {problem.message}")


def _manifest_findings(cohort: Cohort, found: list[ManifestProblem], row: QaRow) -> list[Finding]:
    """The manifest's findings for a row: a file column's belong to its own sequence only."""
    def applies(problem: ManifestProblem) -> bool:
        for seq in cohort.sequences:
            if problem.column in (f"image_{seq}", f"mask_{seq}", f"roi_{seq}", f"series_{seq}"):
                return seq == row.sequence
        return True

    return [_manifest_finding(p, cohort.path) for p in found
            if p.patient_id == row.patient_id and applies(p)]


def check_cohort(cohort: Cohort, sequences: list[str]) -> list[QaRow]:
    """One QaRow per patient and sequence, plus one per manifest row that names no patient."""
    rows: list[QaRow] = []
    with progress() as bar:
        task = bar.add_task("checking", total=len(cohort.patients) * len(sequences))
        for patient in cohort.patients:
            for sequence in sequences:
                row = check_patient(patient, sequence)
                row.problems[:0] = _manifest_findings(cohort, cohort.problems, row)
                row.warnings[:0] = _manifest_findings(cohort, cohort.warnings, row)
                rows.append(row)
                bar.advance(task)
    known = {p.patient_id for p in cohort.patients}
    rows += [QaRow(problem.patient_id, "", problems=[_manifest_finding(problem, cohort.path)])
             for problem in cohort.problems if problem.patient_id not in known]
    return rows


def _fmt(value, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def print_table(rows: list[QaRow], out: Console) -> None:
    """The QA table for the terminal: the columns a reader scans; qa.csv has them all."""
    table = Table(title="cohort QA", box=box.SIMPLE_HEAD, header_style="bold")
    for name in ("patient", "seq", "shape", "spacing mm", "orient", "tumour mL", "diam. mm",
                 "status"):
        table.add_column(name, justify="right" if name in ("tumour mL", "diam. mm") else "left",
                         no_wrap=name in ("patient", "shape"))
    for r in rows:
        v = r.values
        spacing = v.get("spacing_mm", "")
        status = ("[red]unusable[/red]" if r.problems else
                  "[yellow]warning[/yellow]" if r.warnings else "[green]ok[/green]")
        table.add_row(escape(r.patient_id or "?"), escape(r.sequence), v.get("shape", ""),
                      "x".join(f"{float(x):.2f}" for x in spacing.split("x")) if spacing else "",
                      v.get("orientation", ""), _fmt(v.get("tumour_volume_ml"), 1),
                      _fmt(v.get("longest_diameter_mm"), 1), status)
    out.print(table)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path,
                        help="cohort manifest CSV (its columns: docs/manifest.md)")
    parser.add_argument("--sequence", action="append", metavar="SEQ",
                        help="check only this sequence (repeatable); default: every image_<SEQ>")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder for qa.csv and qa.run.json; default: the manifest's folder")


def output_folder(args: argparse.Namespace) -> Path:
    """Where qa.csv goes: --out, or the manifest's folder."""
    return args.out if args.out is not None else Path(args.manifest).parent


def run(args: argparse.Namespace) -> int:
    cohort = load_manifest(args.manifest, strict=False)
    sequences = [cohort.require_sequence(s) for s in args.sequence] if args.sequence \
        else cohort.sequences
    out = output_folder(args)  # checked (writable, not a file) and locked by the cli

    config = {"manifest": str(cohort.path.resolve()), "sequences": sequences}
    with RunRecord(out, config=config, inputs={"manifest": cohort.path},
                   name=QA_RECORD) as run_record:
        rows = check_cohort(cohort, sequences)
        write_qa(out, [r.as_record() for r in rows])
        acquired = [r.acquisition for r in rows if r.acquisition is not None]
        write_acquisition(out, acquired, summary(acquired))
        unusable = sorted({r.patient_id for r in rows if not r.usable})
        run_record.record["summary"] = {"patients": len(cohort.patients), "rows": len(rows),
                                        "unusable": unusable}

    # A terminal gets its own width; a log file (rich's default there: 80) gets room for the table.
    print_table(rows, Console(highlight=False, width=None if sys.stdout.isatty() else 110))
    # Plain prints, not rich: one line per finding however long, easy to grep.
    for r in rows:
        for f in r.warnings:
            print(f"warning: {f.line()}", file=sys.stderr)
    for r in rows:
        for f in r.problems:
            print(f.line(), file=sys.stderr)
    usable = len(cohort.patients) - len(set(unusable) & {p.patient_id for p in cohort.patients})
    print(f"{len(cohort.patients)} patient(s), {usable} usable; "
          f"{sum(len(r.problems) for r in rows)} problem(s), "
          f"{sum(len(r.warnings) for r in rows)} warning(s); wrote {out / QA} and "
          f"{out / ACQUISITION}",
          file=sys.stderr)
    return 1 if unusable else 0
