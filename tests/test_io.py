"""Image I/O: format round trips with geometry, DICOM series folders, masks, grids, orientation."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sarcograde.dicom_series import SeriesChoiceError, find_series, list_series, select_series
from sarcograde.dicom_tags import SERIES_UID_TAG
from sarcograde.errors import SarcogradeError
from sarcograde.io import (ImageWarning, MaskWarning, binarise_mask, grid_mismatches,
                           is_rtstruct, orientation_code, read_image, read_mask, write_image)

# An oblique but orthonormal direction (rows of the rotation matrix), as a scanner would store it.
_c, _s = np.cos(0.3), np.sin(0.3)
OBLIQUE = (_c, -_s, 0.0, _s, _c, 0.0, 0.0, 0.0, 1.0)


def make_image(shape_zyx=(6, 10, 12), spacing=(0.7, 0.8, 3.0), origin=(-12.0, 30.5, -4.0),
               direction=OBLIQUE, dtype=np.int16, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(0, 1000, shape_zyx).astype(dtype))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def assert_same_geometry(a: sitk.Image, b: sitk.Image, atol=1e-5) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=atol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=atol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=atol)


def write_dicom_series(image: sitk.Image, folder, series_uid: str | None = None,
                       description: str = "") -> str:
    """Write a 3D int16 image as an MR DICOM series, one file per slice (SimpleITK's recipe)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (*direction[0::3], *direction[1::3]))
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        for tag, value in [("0008|0060", "MR"), ("0020|000e", series_uid),
                           ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0008|0018", generate_uid()), ("0020|0037", orientation),
                           ("0020|0032", "\\".join(f"{v:.6f}" for v in
                                                   image.TransformIndexToPhysicalPoint((0, 0, z)))),
                           ("0020|0013", str(z + 1)), ("0018|0050", f"{image.GetSpacing()[2]:.6f}"),
                           ("0008|103e", description)]:
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid[-8:]}_{z:03d}.dcm"))
        writer.Execute(slice_)
    return series_uid


@pytest.mark.parametrize("name", ["image.nii.gz", "image.nii", "image.nrrd", "image.mha"])
def test_file_round_trip_keeps_voxels_and_geometry(tmp_path, name):
    image = make_image(dtype=np.float32)
    write_image(image, tmp_path / name)
    back = read_image(tmp_path / name)
    assert_same_geometry(image, back)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert [p.name for p in tmp_path.iterdir()] == [name]     # no temporary file left


def test_dicom_series_folder_round_trip(tmp_path):
    image = make_image()
    write_dicom_series(image, tmp_path / "series")
    back = read_image(tmp_path / "series")
    assert_same_geometry(image, back, atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


@pytest.mark.parametrize("uids", [("1.2.9", "1.2.1"), ("1.2.1", "1.2.9")],
                         ids=["largest sorts last", "largest sorts first"])
def test_folder_with_two_series_is_refused_unless_one_is_named(tmp_path, uids):
    """Not the largest, not the first: a folder of two series names both, whatever their order."""
    big, small = make_image(shape_zyx=(6, 10, 12), seed=1), make_image(shape_zyx=(4, 10, 12), seed=2)
    big_uid = write_dicom_series(big, tmp_path / "mixed", uids[0], "T1 AX")
    small_uid = write_dicom_series(small, tmp_path / "mixed", uids[1], "T1 AX FS")
    with pytest.raises(SeriesChoiceError) as info:
        read_image(tmp_path / "mixed")
    assert str(info.value) == (f"{tmp_path / 'mixed'}: 2 DICOM image series in the folder; name "
                               f"one by its SeriesInstanceUID: 'T1 AX' {big_uid} (6 slices), "
                               f"'T1 AX FS' {small_uid} (4 slices)")
    assert [s.uid for s in info.value.candidates] == [big_uid, small_uid]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # naming the series: no warning
        named = read_image(tmp_path / "mixed", series_uid=small_uid)
        chosen = read_image(tmp_path / "mixed", series_uid=big_uid)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(named), sitk.GetArrayFromImage(small))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(chosen), sitk.GetArrayFromImage(big))
    assert chosen.GetMetaData(SERIES_UID_TAG) == big_uid
    with pytest.raises(SarcogradeError, match="series 1.2.3 is not in the folder; name one by "
                                              rf"its SeriesInstanceUID: 'T1 AX' {big_uid}"):
        read_image(tmp_path / "mixed", series_uid="1.2.3")


def test_folder_with_one_series_needs_no_name_and_a_file_holds_no_series(tmp_path):
    image = make_image()
    uid = write_dicom_series(image, tmp_path / "one", description="T2 COR")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(tmp_path / "one")),
                                      sitk.GetArrayFromImage(image))
    assert list_series(tmp_path / "one") == [find_series(tmp_path / "one", uid)]
    assert str(find_series(tmp_path / "one")) == f"'T2 COR' {uid} (6 slices)"
    with pytest.raises(SeriesChoiceError, match=rf"series 1.2.3 is not in the folder; name one "
                                                rf"by its SeriesInstanceUID: 'T2 COR' {uid} "):
        read_image(tmp_path / "one", series_uid="1.2.3")
    write_image(image, tmp_path / "image.nii.gz")
    with pytest.raises(SarcogradeError, match="series 1.2.3 is named, but this is a file, not a "
                                              "DICOM folder"):
        read_image(tmp_path / "image.nii.gz", series_uid="1.2.3")


@pytest.fixture
def exam(tmp_path):
    """A PACS export of a whole exam in one folder: three series (one without a description)."""
    folder = tmp_path / "exam"
    uids = {name: write_dicom_series(make_image(shape_zyx=(n, 10, 12), seed=n), folder,
                                     description=name)
            for name, n in (("T1 AX pre", 5), ("T1 AX FS +C", 4), ("", 3))}
    return folder, uids


def test_select_series_by_description_rules(exam):
    folder, uids = exam
    assert [(s.description, s.uid, s.slices) for s in list_series(folder)] == [
        ("", uids[""], 3), ("T1 AX FS +C", uids["T1 AX FS +C"], 4),
        ("T1 AX pre", uids["T1 AX pre"], 5)]
    chosen = select_series(folder, [r"t1.*\+c", "post"])     # any rule; case-insensitive search
    assert (chosen.uid, chosen.slices) == (uids["T1 AX FS +C"], 4)
    assert select_series(folder, ["pre"]).uid == uids["T1 AX pre"]
    # several matches: those listed; none: every series listed
    with pytest.raises(SeriesChoiceError) as info:
        select_series(folder, ["^T1"])
    assert info.value.problem == (f"2 image series have a SeriesDescription matching the rules "
                                  f"'^T1'; name one by its SeriesInstanceUID: 'T1 AX FS +C' "
                                  f"{uids['T1 AX FS +C']} (4 slices), 'T1 AX pre' "
                                  f"{uids['T1 AX pre']} (5 slices)")
    with pytest.raises(SeriesChoiceError) as info:
        select_series(folder, ["T2", "STIR"])
    assert info.value.problem.startswith("no image series has a SeriesDescription matching the "
                                         "rules 'T2', 'STIR'; name one by its SeriesInstanceUID: "
                                         f"(no description) {uids['']} (3 slices), ")
    assert len(info.value.candidates) == 3 and info.value.path == folder
    # the override wins over the rules, and must be in the folder
    assert select_series(folder, ["^T1"], override_uid=uids[""]).uid == uids[""]
    with pytest.raises(SeriesChoiceError, match="series 1.2.3 is not in the folder"):
        select_series(folder, ["pre"], override_uid="1.2.3")
    with pytest.raises(SarcogradeError, match=r"SeriesDescription rule 't1\(' is not a regular "
                                              "expression"):
        select_series(folder, ["t1("])


@pytest.mark.parametrize("make, problem", [
    (lambda p: None, "file not found"),
    (lambda p: p.mkdir(), "no DICOM image series in folder"),
    (lambda p: p.write_bytes(b"not an image" * 20), "cannot read file"),
    (lambda p: sitk.WriteImage(sitk.Image([8, 8], sitk.sitkUInt8), str(p)),
     "2D image; a 3D volume is expected"),
    (lambda p: sitk.WriteImage(sitk.JoinSeries([make_image()] * 3), str(p)),
     "4D image; a 3D volume is expected"),
    (lambda p: sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), str(p)),
     "3-component (colour or vector) image"),
], ids=["missing", "empty folder", "garbage", "2D", "4D", "vector"])
def test_read_image_errors_name_the_file(tmp_path, make, problem):
    path = tmp_path / "bad.nrrd"
    make(path)
    with pytest.raises(SarcogradeError) as info:
        read_image(path)
    assert str(info.value).startswith(f"{path}: {problem}")


def _mask(values: np.ndarray) -> sitk.Image:
    mask = sitk.GetImageFromArray(values)
    mask.SetSpacing((0.5, 0.5, 2.0))
    return mask


def test_binary_masks_pass_without_warning(tmp_path):
    values = np.zeros((3, 4, 5), np.float32)
    values[1, 1:3, 2:4] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = binarise_mask(_mask(values), "m.nii")
    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), values.astype(np.uint8))
    assert mask.GetSpacing() == (0.5, 0.5, 2.0)


def test_multilabel_mask_is_binarised_with_a_warning(tmp_path):
    values = np.zeros((3, 4, 5), np.int16)
    values[0, 0, :2], values[2, 3, 4] = 3, 7
    sitk.WriteImage(_mask(values), str(tmp_path / "labels.nrrd"))
    with pytest.warns(MaskWarning, match=r"multi-label mask \(labels 3, 7\) binarised as label > 0"):
        mask = read_mask(tmp_path / "labels.nrrd")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), (values > 0).astype(np.uint8))


@pytest.mark.parametrize("bad, problem", [
    (0.5, "non-binary mask: values other than 0 and positive integer labels (0.5)"),
    (-1.0, "non-binary mask: values other than 0 and positive integer labels (-1)"),
    (np.nan, "mask has NaN or infinite voxels"),
])
def test_non_binary_masks_are_errors(bad, problem):
    values = np.zeros((3, 4, 5), np.float32)
    values[1, 1, 1], values[1, 2, 2] = 1.0, bad
    with pytest.raises(SarcogradeError) as info:
        binarise_mask(_mask(values), "m.nii")
    assert str(info.value) == f"m.nii: {problem}"


def test_grid_mismatches():
    image = make_image()
    assert grid_mismatches(image, make_image(seed=5)) == []
    jitter = make_image()
    jitter.SetOrigin(np.array(image.GetOrigin()) + 0.002)        # below the tolerance
    assert grid_mismatches(image, jitter) == []
    cases = {"size": make_image(shape_zyx=(5, 10, 12)),
             "spacing": make_image(spacing=(0.7, 0.8, 3.5)),
             "origin": make_image(origin=(-12.0, 30.5, -3.0)),
             "direction differs": make_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))}
    for what, other in cases.items():
        found = grid_mismatches(image, other)
        assert len(found) == 1 and found[0].startswith(what), (what, found)


@pytest.mark.parametrize("direction, code", [
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), "LPS"),
    ((-1, 0, 0, 0, -1, 0, 0, 0, 1), "RAS"),
    ((0, 0, -1, 1, 0, 0, 0, -1, 0), "PIR"),   # a sagittal acquisition
    (OBLIQUE, "LPS"),                          # nearest axes of a slight obliquity
])
def test_orientation_code(direction, code):
    assert orientation_code(make_image(direction=direction)) == code


def _rtstruct_file(path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"   # RT Structure Set Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Modality = "RTSTRUCT"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def test_is_rtstruct_and_rtstruct_needs_reference(tmp_path):
    _rtstruct_file(tmp_path / "RS.dcm")
    write_dicom_series(make_image(), tmp_path / "series")
    write_image(make_image(), tmp_path / "image.nii.gz")
    assert is_rtstruct(tmp_path / "RS.dcm")
    assert not is_rtstruct(next((tmp_path / "series").iterdir()))   # an MR slice
    assert not is_rtstruct(tmp_path / "image.nii.gz")
    assert not is_rtstruct(tmp_path / "series")
    with pytest.raises(SarcogradeError, match="an RTSTRUCT mask needs its reference image"):
        read_mask(tmp_path / "RS.dcm")


def test_real_dicom_series_matches_its_nifti(tcia_root):
    """The TCIA DICOM series and the NIfTI of the same patient share voxels and geometry."""
    dicom = read_image(tcia_root / "dicom" / "STS_008" / "MR_T1" / "image")
    nifti = read_image(tcia_root / "nifti" / "STS_008" / "MR_T1_image.nii.gz")
    assert_same_geometry(dicom, nifti, atol=1e-3)
    assert orientation_code(dicom) == "LPS"
    assert is_rtstruct(tcia_root / "dicom" / "STS_008" / "MR_T1" / "mask" / "RS.dcm")


def test_select_series_in_a_real_exam_folder(tcia_two_series):
    folder, original, copy = tcia_two_series
    assert select_series(folder, ["copy"]).uid == copy
    assert select_series(folder, [r"^IBSI_\d_STS_002_MR_T1"]).uid == original
    with pytest.raises(SeriesChoiceError) as info:
        select_series(folder, ["mr_t1", "copy"])
    assert [s.uid for s in info.value.candidates] == [original, copy]
    with pytest.raises(SeriesChoiceError, match=r"no image series has a SeriesDescription "
                                                r"matching the rules 'T2'; .* 'T1 copy' "
                                                rf"{copy} \(35 slices\)$"):
        select_series(folder, ["T2"])


def test_write_image_failure_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        write_image(make_image(), tmp_path / "image.unknown-format")
    assert list(tmp_path.iterdir()) == []


def test_real_dicom_series_with_a_missing_slice_is_refused(tcia_root, tmp_path, capsys):
    import shutil

    from sarcograde.cli import main

    source = tcia_root / "dicom" / "STS_002" / "MR_T1"
    series = tmp_path / "image"
    shutil.copytree(source / "image", series)
    # Slices in position order, read with pydicom (independently of SimpleITK).
    def position(path) -> float:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        normal = np.cross(ds.ImageOrientationPatient[:3], ds.ImageOrientationPatient[3:])
        return float(np.dot(ds.ImagePositionPatient, normal))

    slices = sorted((position(p), p) for p in series.iterdir())
    gap = slices[11][0] - slices[10][0]
    slices[11][1].unlink()
    before, after = slices[10][1].name, slices[12][1].name
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"patient_id,image_T1,mask_T1,roi_T1\n"
                        f"STS_002,{series},{source / 'mask' / 'RS.dcm'},GTV_Mass_MR_T1\n")
    assert main(["check", str(manifest)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("STS_")]
    # GDCM may sort the series either way; the gap is named by the two files around it.
    first, second = (before, after) if lines and before in lines[0].split(" and ")[0] \
        else (after, before)
    assert lines == [f"STS_002: {series}: image: uneven slice spacing in DICOM series: "
                     f"{abs(2 * gap):.3g} mm between {first} and {second}, {abs(gap):.3g} mm "
                     "elsewhere (a missing slice?)"]
