"""Reading and writing medical images with SimpleITK: NIfTI, NRRD, MHA and DICOM series folders.

Geometry (spacing, origin, direction) is kept as stored; nothing here resamples or reorients.
Every failure becomes a `SarcogradeError` naming the file, so a stage can report the patient.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .artifacts import atomic_path
from .dicom_series import find_series
from .dicom_tags import FRAME_OF_REFERENCE_TAG, SERIES_UID_TAG
from .errors import SarcogradeError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

# Two grids agree when sizes match and spacing, origin and direction differ by less than these.
SPACING_TOL = 1e-3   # relative
ORIGIN_TOL_MM = 1e-2  # absolute, in mm; also scaled by the spacing below
DIRECTION_TOL = 1e-3


class ImageWarning(UserWarning):
    """An input problem that was worked around; `check` lists it in the warnings column."""

    def __init__(self, problem: str, path: str | Path):
        super().__init__(f"{path}: {problem}")
        self.problem = problem
        self.path = path


class MaskWarning(ImageWarning):
    """A mask problem that was repaired (e.g. a multi-label mask binarised)."""


# Slice gaps may differ from the series' median gap by this fraction (rounded positions).
SLICE_GAP_TOL = 0.1

# NIfTI-1 and NIfTI-2 header layouts: (sizeof_hdr, datatype offset, dim offset and type,
# vox_offset offset and type); float datatype codes and their numpy types.
_NIFTI_LAYOUTS = {348: (70, 40, "i2", 108, "f4"), 540: (12, 16, "i8", 168, "i8")}
_NIFTI_FLOATS = {16: "f4", 64: "f8"}
_NIFTI_BITPIX_OFFSET = {348: 72, 540: 14}


def _read_dicom_series(folder: Path, series_uid: str | None) -> sitk.Image:
    """Read a series with its frame of reference and series UID (the image's own metadata
    dictionary stays empty), refusing a series with a missing slice."""
    files = list(find_series(folder, series_uid).files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    # ITK's multi-line warning about uneven slices would break the one-line report below.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        image = reader.Execute()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    _check_slice_gaps(reader, files, image, folder)
    for tag in (FRAME_OF_REFERENCE_TAG, SERIES_UID_TAG):
        if reader.HasMetaDataKey(0, tag):
            image.SetMetaData(tag, reader.GetMetaData(0, tag).strip())
    return image


def _check_slice_gaps(reader: sitk.ImageSeriesReader, files: list[str], image: sitk.Image,
                      folder: Path) -> None:
    """An uneven gap between slice positions (a missing or duplicated slice) is an error: ITK
    would assume even spacing and put every later slice in the wrong place."""
    tag = "0020|0032"  # Image Position (Patient)
    if len(files) < 3 or not all(reader.HasMetaDataKey(i, tag) for i in range(len(files))):
        return
    positions = np.array([[float(v) for v in reader.GetMetaData(i, tag).split("\\")]
                          for i in range(len(files))])
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    gaps = np.diff(positions @ normal)
    typical = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - typical) > SLICE_GAP_TOL * abs(typical))
    if len(uneven):
        i = int(uneven[0])
        raise SarcogradeError(
            f"uneven slice spacing in DICOM series: {abs(gaps[i]):.3g} mm between "
            f"{Path(files[i]).name} and {Path(files[i + 1]).name}, {abs(typical):.3g} mm elsewhere "
            "(a missing slice?)", path=folder)


def _check_nifti_voxels(path: Path) -> None:
    """Read a NIfTI file's raw voxel block: ITK reads a truncated file without an error (the
    missing voxels become 0) and turns NaN and infinite voxels into 0, so neither shows later."""
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as fh:
            data = fh.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise SarcogradeError(f"truncated or corrupt compressed file ({exc})", path=path) from None
    for order in "<>":
        size = int(np.frombuffer(data[:4], order + "i4")[0]) if len(data) >= 4 else 0
        if size in _NIFTI_LAYOUTS:
            break
    else:
        return  # not a NIfTI header: ITK will report the file as unreadable
    type_at, dim_at, dim_type, offset_at, offset_type = _NIFTI_LAYOUTS[size]
    if len(data) < offset_at + 8:
        raise SarcogradeError("truncated file (incomplete NIfTI header)", path=path)
    datatype = int(np.frombuffer(data, order + "i2", 1, type_at)[0])
    bitpix = int(np.frombuffer(data, order + "i2", 1, _NIFTI_BITPIX_OFFSET[size])[0])
    dims = np.frombuffer(data, order + dim_type, 8, dim_at).astype(np.int64)
    offset = int(np.frombuffer(data, order + offset_type, 1, offset_at)[0])
    count = int(np.prod(dims[1:1 + max(1, min(int(dims[0]), 7))]))
    expected = offset + count * bitpix // 8
    if len(data) < expected:
        raise SarcogradeError(f"truncated file: {max(0, len(data) - offset)} of "
                              f"{expected - offset} bytes of voxel data", path=path)
    if datatype in _NIFTI_FLOATS:
        voxels = np.frombuffer(data, order + _NIFTI_FLOATS[datatype], count, offset)
        _refuse_non_finite(voxels, path)


def _refuse_non_finite(voxels: np.ndarray, path: Path) -> None:
    n_bad = voxels.size - int(np.count_nonzero(np.isfinite(voxels)))
    if n_bad:
        raise SarcogradeError(f"{n_bad} NaN or infinite voxel(s)", path=path)


def read_image(path: str | Path, series_uid: str | None = None) -> sitk.Image:
    """Read a 3D image from a file or a DICOM series folder: the series `series_uid`, or the
    folder's only image series (several, and none named, is a `dicom_series.SeriesChoiceError`
    listing them).

    A truncated NIfTI file, NaN or infinite voxels (in any format) and a DICOM series with a
    missing slice are errors, never silently zero-filled or resampled.
    """
    path = Path(path)
    if not path.exists():
        raise SarcogradeError("file not found", path=path)
    if series_uid is not None and not path.is_dir():
        raise SarcogradeError(f"series {series_uid} is named, but this is a file, not a DICOM "
                              "folder", path=path)
    try:
        if path.is_dir():
            image = _read_dicom_series(path, series_uid)
        else:
            if path.name.endswith((".nii", ".nii.gz")):
                _check_nifti_voxels(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        reason = next((line for line in first if "ERROR" in line or "Unable" in line),
                      first[0] if first else "unknown error")
        raise SarcogradeError(f"cannot read file ({reason.strip()[:160]})", path=path) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise SarcogradeError(f"{image.GetNumberOfComponentsPerPixel()}-component (colour or "
                              "vector) image; a grey-value image is expected", path=path)
    if image.GetDimension() != 3:
        raise SarcogradeError(f"{image.GetDimension()}D image; a 3D volume is expected",
                              path=path)
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        _refuse_non_finite(sitk.GetArrayViewFromImage(image), path)
    return image


DICOM_CONTOURS = ("RTSTRUCT", "SEG")  # the DICOM objects a contour may come as


def dicom_modality(path: str | Path) -> str | None:
    """The Modality of a DICOM file; None for a folder or a file that is not DICOM."""
    path = Path(path)
    if not path.is_file():
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # not DICOM at all
        return None
    return getattr(ds, "Modality", None)


def is_rtstruct(path: str | Path) -> bool:
    """True for a DICOM file whose modality is RTSTRUCT."""
    return dicom_modality(path) == "RTSTRUCT"


def is_dicom_contour(path: str | Path) -> bool:
    """True for an RTSTRUCT or a DICOM SEG: a contour that needs the image it was drawn on."""
    return dicom_modality(path) in DICOM_CONTOURS


def binarise_mask(mask: sitk.Image, path: str | Path) -> sitk.Image:
    """Return a UInt8 0/1 mask; a multi-label mask is binarised (label > 0) with a warning.

    Non-integer values (a probability map, an interpolated mask) are an error, not a guess.
    """
    array = sitk.GetArrayViewFromImage(mask)
    if not np.all(np.isfinite(array)):
        raise SarcogradeError("mask has NaN or infinite voxels", path=path)
    values = np.unique(array)
    odd = values[(values != np.round(values)) | (values < 0)]
    if len(odd):
        shown = ", ".join(f"{v:g}" for v in odd[:3]) + (", ..." if len(odd) > 3 else "")
        raise SarcogradeError(f"non-binary mask: values other than 0 and positive integer labels "
                              f"({shown})", path=path)
    labels = values[values > 0]
    if len(labels) > 1 or (len(labels) == 1 and labels[0] != 1):
        shown = ", ".join(str(int(v)) for v in labels[:8]) + (", ..." if len(labels) > 8 else "")
        warnings.warn(MaskWarning(f"multi-label mask (labels {shown}) binarised as label > 0",
                                  path), stacklevel=2)
    binary = sitk.Cast(mask > 0, sitk.sitkUInt8)
    binary.CopyInformation(mask)
    return binary


def read_mask(path: str | Path, reference: sitk.Image | None = None,
              roi: str | None = None) -> sitk.Image:
    """Read a tumour mask as UInt8 0/1: an image file, a DICOM folder, a DICOM-RTSTRUCT or a
    DICOM SEG file.

    An RTSTRUCT is rasterised onto `reference`, the image it was drawn on, and a SEG's frames are
    put on its slices; `roi` names the ROI or segment.
    """
    path = Path(path)
    modality = dicom_modality(path)
    if modality in DICOM_CONTOURS:
        if reference is None:
            raise SarcogradeError(f"an {modality} mask needs its reference image", path=path)
        if modality == "SEG":
            from .dicom_seg import read_seg

            return read_seg(path, reference, roi)
        from .rtstruct import rasterise_rtstruct

        return rasterise_rtstruct(path, reference, roi)
    return binarise_mask(read_image(path), path)


def _fmt(values, digits: int) -> str:
    """A vector as "(0.977, 0.977, 3.27)": plain numbers, not numpy 2's np.float64(...) reprs."""
    return "(" + ", ".join(f"{round(float(v), digits):g}" for v in values) + ")"


def grid_mismatches(image: sitk.Image, mask: sitk.Image) -> list[str]:
    """Ways in which two images are not on the same voxel grid (empty when they are)."""
    problems = []
    if image.GetSize() != mask.GetSize():
        problems.append(f"size {image.GetSize()} vs {mask.GetSize()}")
    sp_i, sp_m = np.array(image.GetSpacing()), np.array(mask.GetSpacing())
    if np.any(np.abs(sp_i - sp_m) > SPACING_TOL * np.maximum(sp_i, sp_m)):
        problems.append(f"spacing {_fmt(sp_i, 4)} vs {_fmt(sp_m, 4)}")
    origin_tol = max(ORIGIN_TOL_MM, 0.01 * float(min(sp_i)))
    if np.any(np.abs(np.array(image.GetOrigin()) - np.array(mask.GetOrigin())) > origin_tol):
        problems.append(f"origin {_fmt(image.GetOrigin(), 3)} vs {_fmt(mask.GetOrigin(), 3)}")
    if np.any(np.abs(np.array(image.GetDirection()) - np.array(mask.GetDirection())) > DIRECTION_TOL):
        problems.append("direction differs")
    return problems


def tumour_volume_ml(mask: sitk.Image) -> float:
    """Number of mask voxels times the volume of one voxel, in millilitres."""
    voxels = np.count_nonzero(sitk.GetArrayViewFromImage(mask))
    return voxels * float(np.prod(mask.GetSpacing())) / 1000.0


def mask_pieces(mask: sitk.Image) -> tuple[sitk.Image, np.ndarray]:
    """The mask's connected pieces (26-connectivity: voxels touching by a corner are one piece):
    a label image with label 1 the largest piece, and the pieces' voxel counts, largest first."""
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask, True), sortByObjectSize=True)
    sizes = np.bincount(sitk.GetArrayViewFromImage(labels).ravel())[1:]
    return labels, sizes


def orientation_code(image: sitk.Image) -> str:
    """The three-letter orientation code of the image axes, e.g. 'LPS' (ITK/DICOM convention)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def write_image(image: sitk.Image, path: str | Path, compress: bool = True) -> None:
    """Write an image atomically; the format follows the file name (.nii.gz, .nrrd, .mha)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
