"""DICOM-RTSTRUCT contours to a voxel mask on the grid of the image they were drawn on.

Treatment-planning systems (Eclipse, MIM, RayStation) export a tumour outline as closed planar
polygons in patient coordinates (mm), one or more per image slice. `rasterise_rtstruct` maps
every polygon into the reference image's continuous index space, puts it on the slice at its
position (not on the n-th slice, and not by SOP instance UID, which a re-exported or resampled
series does not keep), and fills the voxels whose centres lie inside it. Polygons on the same
slice are combined with the even-odd rule, so a contour inside another one is a hole.

Why not rt-utils or dcmrtstruct2nii: both need the DICOM image series itself (here the reference
may be a NIfTI or an already loaded image), and rt-utils fills polygons with OpenCV's fillPoly at
integer vertices, which moves every edge by up to half a voxel; the voxel-centre test below keeps
the polygon's sub-voxel position and needs no dependency beyond matplotlib.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.path import Path as Polygon

from .dicom_tags import space_mismatch
from .errors import SarcogradeError

# A contour's distance from the nearest slice centre, and the spread of its points across the
# slice axis, in units of the slice spacing. Exported coordinates are rounded to ~0.01 mm, so
# anything larger means the contour was drawn on another grid (or is not planar).
SLICE_TOL = 0.25
PLANAR_TOL = 0.1


class ContourWarning(UserWarning):
    """A contour problem that was repaired (e.g. points outside the image clipped)."""


def _read(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise SarcogradeError("file not found", path=path)
    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise SarcogradeError(f"cannot read DICOM file ({str(exc).splitlines()[0][:120]})",
                              path=path) from None
    modality = getattr(ds, "Modality", None)
    if modality != "RTSTRUCT":
        raise SarcogradeError(f"not a DICOM-RTSTRUCT (Modality {modality or 'missing'})",
                              path=path)
    return ds


def _structures(ds, path: Path) -> list:
    """The StructureSetROISequence items; one without ROINumber or ROIName is an error."""
    items = list(ds.get("StructureSetROISequence", []))
    for position, item in enumerate(items, start=1):
        for attribute in ("ROINumber", "ROIName"):
            if item.get(attribute) in (None, ""):
                raise SarcogradeError(f"StructureSetROISequence item {position} has no "
                                      f"{attribute}", path=path)
    return items


def roi_names(path: str | Path) -> list[str]:
    """The names of the ROIs (structures) in an RTSTRUCT file, in file order."""
    path = Path(path)
    return [str(r.ROIName) for r in _structures(_read(path), path)]


def _select_roi(ds, roi: str | None, path: Path):
    """The StructureSetROISequence item named `roi` (case-insensitive), or the only one."""
    items = _structures(ds, path)
    present = ", ".join(repr(str(r.ROIName)) for r in items) or "none"
    if roi is None:
        if len(items) != 1:
            raise SarcogradeError(f"{len(items)} ROIs ({present}); name the one to use "
                                  "(roi_<SEQ> in the manifest)", path=path)
        return items[0]
    matches = [r for r in items if str(r.ROIName).strip().lower() == roi.strip().lower()]
    if not matches:
        raise SarcogradeError(f"no ROI named {roi!r}; ROIs present: {present}", path=path)
    if len(matches) > 1:
        raise SarcogradeError(f"ROI name {roi!r} is ambiguous: {len(matches)} ROIs match "
                              f"({', '.join(repr(str(r.ROIName)) for r in matches)})", path=path)
    return matches[0]


def _contours(ds, item, path: Path) -> list[np.ndarray]:
    """The ROI's closed planar polygons, each an (n, 3) array of patient coordinates in mm."""
    name = str(item.ROIName)
    roi_contours = list(ds.get("ROIContourSequence", []))
    for position, candidate in enumerate(roi_contours, start=1):
        if candidate.get("ReferencedROINumber") in (None, ""):
            raise SarcogradeError(f"ROIContourSequence item {position} has no "
                                  "ReferencedROINumber", path=path)
    roi_contour = next((c for c in roi_contours
                        if int(c.ReferencedROINumber) == int(item.ROINumber)), None)
    sequence = [] if roi_contour is None else list(roi_contour.get("ContourSequence", []))
    polygons = []
    for number, contour in enumerate(sequence, start=1):
        kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR"))
        if kind != "CLOSED_PLANAR":
            raise SarcogradeError(f"ROI {name!r}: contour {number} is {kind}; only CLOSED_PLANAR "
                                  "contours enclose a volume", path=path)
        data = np.asarray(contour.get("ContourData", []), dtype=float)
        if data.size == 0 or data.size % 3:
            raise SarcogradeError(f"ROI {name!r}: contour {number} has {data.size} coordinates, "
                                  "not a list of (x, y, z) points", path=path)
        polygons.append(data.reshape(-1, 3))
    if not polygons:
        raise SarcogradeError(f"ROI {name!r} has no contours", path=path)
    return polygons


def _referenced_series(ds) -> set[str]:
    """The image series UIDs the RTSTRUCT says it was drawn on (may be empty)."""
    return {str(series.SeriesInstanceUID)
            for frame in ds.get("ReferencedFrameOfReferenceSequence", [])
            for study in frame.get("RTReferencedStudySequence", [])
            for series in study.get("RTReferencedSeriesSequence", [])
            if series.get("SeriesInstanceUID")}


def referenced_series(path: str | Path) -> set[str]:
    """The SeriesInstanceUIDs of the images an RTSTRUCT file says it was drawn on (may be empty)."""
    return _referenced_series(_read(Path(path)))


def _check_frame_of_reference(ds, item, reference: sitk.Image, path: Path) -> None:
    """Where the reference carries its DICOM frame of reference and series UIDs (a DICOM series
    read by `io.read_image`), the ROI's frame and the RTSTRUCT's referenced series must match."""
    frame = str(item.get("ReferencedFrameOfReferenceUID", "") or ds.get("FrameOfReferenceUID", ""))
    problem = space_mismatch(reference, frame, _referenced_series(ds))
    if problem:
        raise SarcogradeError(f"ROI {str(item.ROIName)!r} {problem}", path=path)


def physical_to_index(reference: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Continuous (x, y, z) voxel indices of physical points (n, 3), vectorised."""
    spacing = np.asarray(reference.GetSpacing())
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    origin = np.asarray(reference.GetOrigin())
    return np.linalg.solve(direction * spacing, (points - origin).T).T


def _fill(vertices: np.ndarray, nx: int, ny: int) -> tuple[np.ndarray, slice, slice]:
    """Voxel centres inside one polygon (x, y in index units), within its bounding box."""
    lo = np.clip(np.ceil(vertices.min(axis=0)), 0, [nx, ny]).astype(int)
    hi = np.clip(np.floor(vertices.max(axis=0)) + 1, 0, [nx, ny]).astype(int)
    ys, xs = np.mgrid[lo[1]:hi[1], lo[0]:hi[0]]
    inside = Polygon(vertices).contains_points(np.column_stack([xs.ravel(), ys.ravel()]))
    return inside.reshape(xs.shape), slice(lo[1], hi[1]), slice(lo[0], hi[0])


def rasterise_rtstruct(path: str | Path, reference: sitk.Image,
                       roi: str | None = None) -> sitk.Image:
    """Rasterise one ROI of an RTSTRUCT onto `reference`'s grid: a UInt8 0/1 mask.

    `roi` names the ROI (case-insensitive); None takes the only ROI in the file. Raises a
    `SarcogradeError` naming the file when the ROI is missing or ambiguous, has no contours, a
    contour is not planar in the image's slices, or the contours lie off the image grid.
    """
    path = Path(path)
    ds = _read(path)
    item = _select_roi(ds, roi, path)
    name = str(item.ROIName)
    polygons = _contours(ds, item, path)
    _check_frame_of_reference(ds, item, reference, path)

    nx, ny, nz = reference.GetSize()
    mask = np.zeros((nz, ny, nx), dtype=bool)
    n_points = n_outside = 0
    for number, points in enumerate(polygons, start=1):
        index = physical_to_index(reference, points)
        z = index[:, 2]
        if np.ptp(z) > PLANAR_TOL:
            raise SarcogradeError(f"ROI {name!r}: contour {number} is not planar in the image's "
                                  f"slices (it spans slice index {z.min():.2f} to {z.max():.2f})",
                                  path=path)
        k = int(np.rint(z.mean()))
        if abs(z.mean() - k) > SLICE_TOL:
            raise SarcogradeError(f"ROI {name!r}: contour {number} at z = {points[0, 2]:.2f} mm "
                                  f"lies between image slices (slice index {z.mean():.2f}); "
                                  "was it drawn on this image?", path=path)
        xy = index[:, :2]
        outside = ((xy < -0.5) | (xy > np.array([nx, ny]) - 0.5)).any(axis=1)
        n_points += len(points)
        if not 0 <= k < nz:
            n_outside += len(points)
            continue
        n_outside += int(outside.sum())
        inside, rows, cols = _fill(xy, nx, ny)
        mask[k, rows, cols] ^= inside  # even-odd: a contour inside another is a hole
    if n_outside == n_points:
        raise SarcogradeError(f"ROI {name!r}: all {len(polygons)} contours lie outside the image "
                              f"grid ({nx} x {ny} x {nz} voxels); was it drawn on this image?",
                              path=path)
    if n_outside:
        warnings.warn(ContourWarning(f"{path}: ROI {name!r}: {n_outside} of {n_points} contour "
                                     "points lie outside the image; the mask is clipped to it"),
                      stacklevel=2)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    return image
