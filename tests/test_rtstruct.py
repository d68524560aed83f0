"""RTSTRUCT rasterisation: synthetic contours with known areas, ROI selection, errors, real data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from sarcograde.cohort import load_manifest
from sarcograde.errors import SarcogradeError
from sarcograde.io import grid_mismatches, read_image, read_mask, write_image
from sarcograde.rtstruct import ContourWarning, rasterise_rtstruct, roi_names

FRAME_UID = "1.2.826.0.1.3680043.8.498.1"
RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def _reference() -> sitk.Image:
    """40 x 36 x 5 voxels, anisotropic, rotated 30 degrees in-plane and with a reversed slice axis,
    so that index order, physical order and contour order all differ."""
    image = sitk.Image(40, 36, 5, sitk.sitkInt16)
    image.SetSpacing((0.5, 0.8, 2.5))
    image.SetOrigin((12.0, -30.0, 40.0))
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    image.SetDirection((c, -s, 0, s, c, 0, 0, 0, -1))
    return image


def _physical(reference: sitk.Image, index_points) -> np.ndarray:
    """Index-space vertices -> patient coordinates, with SimpleITK (independent of the module)."""
    return np.array([reference.TransformContinuousIndexToPhysicalPoint([float(v) for v in p])
                     for p in index_points])


def _square(x0, x1, y0, y1, k):
    return [(x0, y0, k), (x1, y0, k), (x1, y1, k), (x0, y1, k)]


def _contour(points, kind="CLOSED_PLANAR") -> Dataset:
    contour = Dataset()
    contour.ContourGeometricType = kind
    contour.NumberOfContourPoints = len(points)
    contour.ContourData = [f"{v:.4f}" for v in np.asarray(points).ravel()]
    return contour


def write_rtstruct(path, rois: dict[str, list[np.ndarray]], modality="RTSTRUCT",
                   kind="CLOSED_PLANAR"):
    """A minimal RTSTRUCT with one ROI per name, each a list of (n, 3) physical polygons."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_CLASS
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.FrameOfReferenceUID = modality, "SYN_001", FRAME_UID
    structures, contours = [], []
    for number, (name, polygons) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, FRAME_UID
        structures.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = Sequence([_contour(p, kind) for p in polygons])
        contours.append(item)
    ds.StructureSetROISequence = Sequence(structures)
    ds.ROIContourSequence = Sequence(contours)
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.fixture
def reference():
    return _reference()


@pytest.fixture
def holed(tmp_path, reference):
    """Outer square 20 x 20 voxels with a 10 x 10 hole on slices 1 and 3, listed out of order.
    Edges lie half-way between voxel centres, so the exact mask is known voxel by voxel."""
    outer = [_physical(reference, _square(9.5, 29.5, 7.5, 27.5, k)) for k in (3, 1)]
    hole = [_physical(reference, _square(14.5, 24.5, 12.5, 22.5, k)) for k in (1, 3)]
    expected = np.zeros((5, 36, 40), dtype=np.uint8)
    expected[[1, 3], 8:28, 10:30] = 1
    expected[[1, 3], 13:23, 15:25] = 0
    path = write_rtstruct(tmp_path / "RS.dcm", {"GTV_Mass": [outer[0], hole[0], hole[1], outer[1]],
                                                "Edema": [outer[0]]})
    return path, expected


def test_square_with_hole_is_exact_on_a_rotated_grid(holed, reference):
    path, expected = holed
    mask = rasterise_rtstruct(path, reference, "GTV_Mass")
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert grid_mismatches(reference, mask) == []
    array = sitk.GetArrayFromImage(mask)
    np.testing.assert_array_equal(array, expected)
    # Analytic area per slice: 20 x 20 voxels minus the 10 x 10 hole.
    assert array[1].sum() == array[3].sum() == 20 * 20 - 10 * 10
    assert array[1, 13:23, 15:25].sum() == 0


def test_disk_keeps_sub_voxel_position(tmp_path, reference):
    # A 720-gon of radius 11.3 voxels centred off the voxel grid: the filled voxels must be the
    # centres inside the true circle (counted directly), not those of a polygon snapped to
    # integer vertices.
    cx, cy, radius, k = 19.37, 17.81, 11.3, 2
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    polygon = np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles),
                               np.full(720, k)])
    path = write_rtstruct(tmp_path / "RS.dcm", {"disk": [_physical(reference, polygon)]})
    array = sitk.GetArrayFromImage(rasterise_rtstruct(path, reference, None))
    ys, xs = np.mgrid[0:36, 0:40]
    circle = (xs - cx) ** 2 + (ys - cy) ** 2 < radius ** 2
    assert np.sum(array[k] != circle) <= 2
    assert abs(array.sum() - np.pi * radius ** 2) < 2 * np.pi * radius * 0.5  # < half a voxel rim
    assert array.sum() == array[k].sum()


def test_roi_names_case_insensitive_missing_and_ambiguous(tmp_path, holed, reference):
    path, expected = holed
    assert roi_names(path) == ["GTV_Mass", "Edema"]
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(rasterise_rtstruct(path, reference, "  gtv_MASS ")), expected)
    with pytest.raises(SarcogradeError, match=r"no ROI named 'GTV'; ROIs present: 'GTV_Mass', 'Edema'"):
        rasterise_rtstruct(path, reference, "GTV")
    with pytest.raises(SarcogradeError, match=r"2 ROIs \('GTV_Mass', 'Edema'\); name the one"):
        rasterise_rtstruct(path, reference, None)
    square = [_physical(reference, _square(9.5, 29.5, 7.5, 27.5, 1))]
    twins = write_rtstruct(tmp_path / "twins.dcm", {"GTV": square, "gtv": square})
    with pytest.raises(SarcogradeError, match=r"ambiguous: 2 ROIs match \('GTV', 'gtv'\)"):
        rasterise_rtstruct(twins, reference, "Gtv")


def _bad_cases(reference):
    square = _physical(reference, _square(9.5, 29.5, 7.5, 27.5, 2))
    tilted = square.copy()
    tilted[:2] = _physical(reference, _square(9.5, 29.5, 7.5, 27.5, 3))[:2]
    return {
        "not an RTSTRUCT": ({"GTV": [square]}, {"modality": "MR"}, r"not a DICOM-RTSTRUCT \(Modality MR\)"),
        "no contours": ({"GTV": []}, {}, r"ROI 'GTV' has no contours"),
        "open contour": ({"GTV": [square]}, {"kind": "OPEN_PLANAR"}, r"contour 1 is OPEN_PLANAR"),
        "non-planar": ({"GTV": [tilted]}, {}, r"contour 1 is not planar"),
        "between slices": ({"GTV": [_physical(reference, _square(9.5, 29.5, 7.5, 27.5, 2.5))]}, {},
                           r"lies between image slices \(slice index 2.50\)"),
        "off the grid": ({"GTV": [_physical(reference, _square(9.5, 29.5, 7.5, 27.5, 9))]}, {},
                         r"all 1 contours lie outside the image grid"),
    }


@pytest.mark.parametrize("case", list(_bad_cases(_reference())))
def test_bad_rtstruct_is_a_one_line_error_naming_the_file(tmp_path, reference, case):
    rois, options, message = _bad_cases(reference)[case]
    path = write_rtstruct(tmp_path / "RS.dcm", rois, **options)
    with pytest.raises(SarcogradeError, match=message) as error:
        rasterise_rtstruct(path, reference, "GTV")
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_frame_of_reference_mismatch(holed, reference):
    path, _ = holed
    reference.SetMetaData("0020|0052", "1.2.3.999")
    with pytest.raises(SarcogradeError, match="frame of reference"):
        rasterise_rtstruct(path, reference, "GTV_Mass")
    reference.SetMetaData("0020|0052", FRAME_UID)
    assert sitk.GetArrayFromImage(rasterise_rtstruct(path, reference, "GTV_Mass")).sum() == 600


def test_contour_partly_outside_is_clipped_with_a_warning(tmp_path, reference):
    path = write_rtstruct(tmp_path / "RS.dcm",
                          {"GTV": [_physical(reference, _square(29.5, 45.5, 7.5, 27.5, 2))]})
    with pytest.warns(ContourWarning, match="2 of 4 contour points lie outside"):
        array = sitk.GetArrayFromImage(rasterise_rtstruct(path, reference, "GTV"))
    assert array.sum() == 10 * 20 and array[2, 8:28, 30:40].all()


def test_read_mask_dispatch_and_manifest_row(tmp_path, holed, reference):
    path, expected = holed
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(read_mask(path, reference=reference, roi="gtv_mass")), expected)
    with pytest.raises(SarcogradeError, match="needs its reference image"):
        read_mask(path)
    write_image(reference, tmp_path / "t1.nii.gz")
    (tmp_path / "manifest.csv").write_text(
        "patient_id,grade,image_T1,mask_T1,roi_T1\nSYN_001,2,t1.nii.gz,RS.dcm,GTV_MASS\n")
    patient = load_manifest(tmp_path / "manifest.csv", strict=True).patients[0]
    image = read_image(patient.images["T1"])
    mask = read_mask(patient.masks["T1"], reference=image, roi=patient.rois["T1"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), expected)


@pytest.mark.realdata
@pytest.mark.parametrize("patient", ["STS_002", "STS_008"])
def test_real_rtstruct_matches_the_nifti_mask(tcia_root, patient):
    folder = tcia_root / "dicom" / patient / "MR_T1"
    image = read_image(folder / "image")
    reference = read_image(tcia_root / "nifti" / patient / "MR_T1_mask.nii.gz")
    assert grid_mismatches(image, reference) == []  # same grid: compared voxel by voxel
    with warnings.catch_warnings():
        warnings.simplefilter("error", ContourWarning)  # nothing may be clipped
        mask = sitk.GetArrayFromImage(read_mask(folder / "mask" / "RS.dcm", image,
                                                "gtv_mass_mr_t1")).astype(bool)
    truth = sitk.GetArrayFromImage(reference).astype(bool)
    dice = 2 * np.sum(mask & truth) / (mask.sum() + truth.sum())
    assert dice >= 0.95
    assert abs(mask.sum() / truth.sum() - 1) <= 0.05


def _break_frame(ds):
    ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID = "1.2.3.4"


def _break_series(ds):
    (ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
     .RTReferencedSeriesSequence[0].SeriesInstanceUID) = "1.2.3.5"


# (name, how to break an RTSTRUCT, problem given the file's own ROI name, frame and series UIDs)
RTSTRUCT_FAULTS = [
    ("other frame of reference", _break_frame,
     lambda roi, frame, series: f"ROI {roi!r} is in frame of reference 1.2.3.4, the image in "
                                f"{frame}"),
    ("other series", _break_series,
     lambda roi, frame, series: f"ROI {roi!r} was drawn on series 1.2.3.5, the image is series "
                                f"{series}"),
    ("ROI without ROIName", lambda ds: delattr(ds.StructureSetROISequence[0], "ROIName"),
     lambda roi, frame, series: "StructureSetROISequence item 1 has no ROIName"),
    ("contour without ReferencedROINumber",
     lambda ds: delattr(ds.ROIContourSequence[0], "ReferencedROINumber"),
     lambda roi, frame, series: "ROIContourSequence item 1 has no ReferencedROINumber"),
]


@pytest.mark.parametrize("name, breaks, problem", RTSTRUCT_FAULTS,
                         ids=[f[0] for f in RTSTRUCT_FAULTS])
def test_real_rtstruct_faults_fail_that_patient_only(tcia_root, tmp_path, capsys, name, breaks,
                                                     problem):
    """The two real DICOM patients; STS_008's RTSTRUCT is broken, STS_002 still gets its row."""
    import pydicom

    from sarcograde.cli import main

    rows = ["patient_id,image_T1,mask_T1,roi_T1"]
    for pid in ("STS_002", "STS_008"):
        folder = tcia_root / "dicom" / pid / "MR_T1"
        ds = pydicom.dcmread(folder / "mask" / "RS.dcm")
        roi = str(ds.StructureSetROISequence[0].ROIName)
        rs = folder / "mask" / "RS.dcm"
        if pid == "STS_008":
            frame = str(ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID)
            image = pydicom.dcmread(next((folder / "image").iterdir()), stop_before_pixels=True)
            expected = problem(roi, str(image.FrameOfReferenceUID), str(image.SeriesInstanceUID))
            assert frame == str(image.FrameOfReferenceUID)   # the unbroken file matches
            breaks(ds)
            rs = tmp_path / "RS.dcm"
            ds.save_as(rs)
        rows.append(f"{pid},{folder / 'image'},{rs},{roi}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    assert main(["check", str(manifest)]) == 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("STS_")] == \
        [f"STS_008: {tmp_path / 'RS.dcm'}: mask: {expected}"]
    qa = pd.read_csv(tmp_path / "qa.csv")
    assert qa.usable.tolist() == [True, False]
