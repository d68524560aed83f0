"""Reading and writing medical images with SimpleITK: NIfTI, NRRD, MHA and DICOM series folders.

Geometry (spacing, origin, direction) is kept as stored; nothing here resamples or reorients.
Every failure becomes a `SarcogradeError` naming the file, so a stage can report the patient.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .artifacts import atomic_path
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


def _dicom_series(folder: Path, series_uid: str | None) -> list[str]:
    reader = sitk.ImageSeriesReader
    uids = reader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise SarcogradeError("no DICOM image series in folder", path=folder)
    if series_uid is not None:
        if series_uid not in uids:
            raise SarcogradeError(f"series {series_uid} not in folder; found {', '.join(uids)}",
                                  path=folder)
        return list(reader.GetGDCMSeriesFileNames(str(folder), series_uid))
    # Each GetGDCMSeriesFileNames call scans the folder again: one per series, none repeated.
    files = {uid: reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in uids}
    chosen = max(uids, key=lambda uid: len(files[uid]))
    if len(uids) > 1:
        warnings.warn(ImageWarning(f"{len(uids)} DICOM series in folder; using the largest, "
                                   f"{chosen} ({len(files[chosen])} files)", folder),
                      stacklevel=3)
    return list(files[chosen])


def read_image(path: str | Path, series_uid: str | None = None) -> sitk.Image:
    """Read a 3D image from a file or a DICOM series folder (the named or the largest series)."""
    path = Path(path)
    if not path.exists():
        raise SarcogradeError("file not found", path=path)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(_dicom_series(path, series_uid))
            image = reader.Execute()
        else:
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
    return image


def is_rtstruct(path: str | Path) -> bool:
    """True for a DICOM file whose modality is RTSTRUCT."""
    path = Path(path)
    if not path.is_file():
        return False
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # not DICOM at all
        return False
    return getattr(ds, "Modality", None) == "RTSTRUCT"


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
    """Read a tumour mask as UInt8 0/1: an image file, a DICOM folder, or a DICOM-RTSTRUCT file.

    An RTSTRUCT is rasterised onto `reference`, the image it was drawn on; `roi` names the ROI.
    """
    path = Path(path)
    if is_rtstruct(path):
        if reference is None:
            raise SarcogradeError("an RTSTRUCT mask needs its reference image", path=path)
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


def orientation_code(image: sitk.Image) -> str:
    """The three-letter orientation code of the image axes, e.g. 'LPS' (ITK/DICOM convention)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def write_image(image: sitk.Image, path: str | Path, compress: bool = True) -> None:
    """Write an image atomically; the format follows the file name (.nii.gz, .nrrd, .mha)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
