"""A DICOM Segmentation (SEG) contour to a voxel mask on the grid of the image it was drawn on.

MONAI Label, 3D Slicer and OHIF save contours as DICOM SEG: a multi-frame object whose frames
are masks on the source series' slices, each frame naming its segment and its position in
patient coordinates. A SEG holds one or more segments, chosen by label as an RTSTRUCT's ROI is
(`roi_<SEQ>` in the manifest); several without a choice is an error listing them. Each frame of
the chosen segment is put on the image's slice at its position (not by SOP instance UID, like
`rtstruct`); a frame in another plane, off the slices, or on another pixel grid is an error, and
the frame of reference and the referenced series are checked against the image as for an
RTSTRUCT. A fractional SEG counts a voxel from half its maximum value on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .dicom_tags import space_mismatch
from .errors import SarcogradeError

SEG_MODALITY = "SEG"
# A frame's distance from the nearest slice centre, in voxels, and the tolerance of its in-plane
# grid against the image's (exported positions are rounded to ~0.01 mm).
POSITION_TOL = 0.25
DIRECTION_TOL = 1e-3


def _read(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise SarcogradeError(f"cannot read DICOM file ({str(exc).splitlines()[0][:120]})",
                              path=path) from None
    if ds.get("Modality") != SEG_MODALITY:
        raise SarcogradeError(f"not a DICOM SEG (Modality {ds.get('Modality') or 'missing'})",
                              path=path)
    return ds


def segment_labels(path: str | Path) -> list[str]:
    """The labels of the segments of a SEG file, in file order."""
    return [str(s.get("SegmentLabel", "")) for s in _read(Path(path)).get("SegmentSequence", [])]


def _select_segment(ds, label: str | None, path: Path) -> int:
    """The number of the segment labelled `label` (case-insensitive), or of the only one."""
    segments = list(ds.get("SegmentSequence", []))
    present = ", ".join(repr(str(s.get("SegmentLabel", ""))) for s in segments) or "none"
    if label is None:
        if len(segments) != 1:
            raise SarcogradeError(f"{len(segments)} segments ({present}); name the one to use "
                                  "(roi_<SEQ> in the manifest)", path=path)
        return int(segments[0].SegmentNumber)
    matches = [s for s in segments
               if str(s.get("SegmentLabel", "")).strip().lower() == label.strip().lower()]
    if len(matches) != 1:
        problem = "no segment labelled" if not matches else "ambiguous segment label"
        raise SarcogradeError(f"{problem} {label!r}; segments present: {present}", path=path)
    return int(matches[0].SegmentNumber)


def _referenced_series(ds) -> set[str]:
    return {str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", [])
            if s.get("SeriesInstanceUID")}


def referenced_series(path: str | Path) -> set[str]:
    """The SeriesInstanceUIDs of the images a SEG file says it was drawn on (may be empty)."""
    return _referenced_series(_read(Path(path)))


def _check_references(ds, reference: sitk.Image, path: Path) -> None:
    problem = space_mismatch(reference, str(ds.get("FrameOfReferenceUID", "")),
                             _referenced_series(ds))
    if problem:
        raise SarcogradeError(f"the SEG {problem}", path=path)


def _functional(ds, frame, name: str):
    """A functional group macro of a frame: its own, else the shared one."""
    for groups in (frame, *ds.get("SharedFunctionalGroupsSequence", [])):
        if name in groups:
            return groups[name].value[0]
    return None


def _check_plane(ds, frame, reference: sitk.Image, path: Path) -> None:
    """The frame's pixel grid is the image's slice grid: size, orientation and spacing."""
    size = reference.GetSize()
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    orientation = _functional(ds, frame, "PlaneOrientationSequence")
    measures = _functional(ds, frame, "PixelMeasuresSequence")
    problems = []
    if (int(ds.Columns), int(ds.Rows)) != (size[0], size[1]):
        problems.append(f"{ds.Columns} x {ds.Rows} pixels, the image {size[0]} x {size[1]}")
    if orientation is not None:
        cosines = np.array([float(v) for v in orientation.ImageOrientationPatient])
        if not np.allclose(cosines, [*direction[:, 0], *direction[:, 1]], atol=DIRECTION_TOL):
            problems.append("another orientation")
    if measures is not None:
        row, column = (float(v) for v in measures.PixelSpacing)
        if not np.allclose([column, row], reference.GetSpacing()[:2], rtol=1e-3):
            problems.append(f"pixel spacing {row:g} x {column:g} mm")
    if problems:
        raise SarcogradeError(f"the SEG is not on the image's grid ({'; '.join(problems)})",
                              path=path)


def _slice_index(frame, ds, reference: sitk.Image, number: int, path: Path) -> int:
    position = _functional(ds, frame, "PlanePositionSequence")
    if position is None:
        raise SarcogradeError(f"frame {number} has no position", path=path)
    index = np.array(reference.TransformPhysicalPointToContinuousIndex(
        [float(v) for v in position.ImagePositionPatient]))
    z = int(round(index[2]))
    if (np.abs(index[:2]) > POSITION_TOL).any() or abs(index[2] - z) > POSITION_TOL \
            or not 0 <= z < reference.GetDepth():
        raise SarcogradeError(f"frame {number} lies off the image's slices (index "
                              f"{', '.join(f'{v:.2f}' for v in index)})", path=path)
    return z


def read_seg(path: str | Path, reference: sitk.Image, label: str | None = None) -> sitk.Image:
    """The segment `label` (or the only one) as UInt8 0/1 on `reference`'s grid."""
    path = Path(path)
    ds = _read(path)
    number = _select_segment(ds, label, path)
    _check_references(ds, reference, path)
    pixels = ds.pixel_array.reshape(-1, int(ds.Rows), int(ds.Columns))
    threshold = (int(ds.get("MaximumFractionalValue", 1)) / 2
                 if ds.get("SegmentationType") == "FRACTIONAL" else 1)
    mask = np.zeros(reference.GetSize()[::-1], np.uint8)
    frames = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    if len(frames) != len(pixels):
        raise SarcogradeError(f"{len(pixels)} frames but {len(frames)} per-frame descriptions",
                              path=path)
    used = 0
    for position, (frame, pixel) in enumerate(zip(frames, pixels), start=1):
        segment = _functional(ds, frame, "SegmentIdentificationSequence")
        if segment is None or int(segment.ReferencedSegmentNumber) != number:
            continue
        _check_plane(ds, frame, reference, path)
        mask[_slice_index(frame, ds, reference, position, path)] |= pixel >= threshold
        used += 1
    if not used:
        raise SarcogradeError(f"segment {number} has no frames", path=path)
    image = sitk.GetImageFromArray(mask)
    image.CopyInformation(reference)
    return image
