"""`sarcograde check`: measurements in qa.csv, every bad-input case, and the 12 real patients."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import cdist, pdist

from sarcograde.check import QA_COLUMNS, longest_diameter_mm, tumour_volume_ml
from sarcograde.cli import main
from test_io import write_dicom_series

SPACING = (0.8, 0.9, 2.5)
ORIGIN = (-30.0, 12.5, 40.0)
SHAPE_ZYX = (12, 28, 32)


def volume(array: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy float image and an ellipsoidal uint8 tumour mask (z, y, x)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE_ZYX)
    mask = (((z - 6) / 3.5) ** 2 + ((y - 14) / 8) ** 2 + ((x - 15) / 9) ** 2 <= 1).astype(np.uint8)
    image = (rng.normal(100, 10, SHAPE_ZYX) + 80 * mask).astype(np.float32)
    return image, mask


def brute_force_diameter(mask: sitk.Image) -> float:
    """Max distance over all pairs of voxel centres, each placed by SimpleITK itself."""
    index = np.argwhere(sitk.GetArrayFromImage(mask) > 0)[:, ::-1]
    points = np.array([mask.TransformIndexToPhysicalPoint([int(i) for i in idx]) for idx in index])
    return float(pdist(points).max()) if len(points) > 1 else 0.0


@pytest.fixture
def cohort(tmp_path):
    """Three good patients (NIfTI, NRRD, MHA) and their manifest; returns (manifest, folder)."""
    rows = []
    for k, (pid, ext) in enumerate([("P1", ".nii.gz"), ("P2", ".nrrd"), ("P3", ".mha")]):
        image, mask = phantom(k)
        sitk.WriteImage(volume(image), str(tmp_path / f"{pid}_img{ext}"))
        sitk.WriteImage(volume(mask), str(tmp_path / f"{pid}_mask{ext}"))
        rows.append({"patient_id": pid, "grade": k + 1, "image_T1": f"{pid}_img{ext}",
                     "mask_T1": f"{pid}_mask{ext}", "age": 50 + k, "os_months": 12 + k,
                     "os_event": k % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv", tmp_path


def set_cell(manifest, pid: str, column: str, value) -> None:
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame.loc[frame.patient_id == pid, column] = value
    frame.to_csv(manifest, index=False)


def check(manifest, *extra) -> tuple[int, pd.DataFrame]:
    rc = main(["check", str(manifest), *extra])
    return rc, pd.read_csv(manifest.parent / "qa.csv", keep_default_na=False)


def test_good_cohort_measurements(cohort, capsys):
    manifest, folder = cohort
    (folder / "run.json").write_text('{"command": "sarcograde synth"}')   # synth's own record
    rc, qa = check(manifest)
    assert rc == 0
    assert (folder / "run.json").read_text(encoding="utf-8") == '{"command": "sarcograde synth"}'
    assert list(qa.columns) == QA_COLUMNS
    assert qa.usable.tolist() == [True, True, True]
    for k, row in qa.iterrows():
        image, mask = phantom(k)
        assert row["shape"] == f"{SHAPE_ZYX[2]}x{SHAPE_ZYX[1]}x{SHAPE_ZYX[0]}"
        assert [float(s) for s in row.spacing_mm.split("x")] == pytest.approx(SPACING)
        assert row.orientation == "LPS"
        assert [row.p1, row.p50, row.p99] == pytest.approx(np.percentile(image, [1, 50, 99]))
        assert row.mask_voxels == mask.sum()
        assert row.tumour_volume_ml == pytest.approx(mask.sum() * np.prod(SPACING) / 1000)
        assert row.longest_diameter_mm == pytest.approx(brute_force_diameter(volume(mask)))
        assert row.problems == "" and row.warnings == ""
    out = capsys.readouterr()
    assert "cohort QA" in out.out and "P3" in out.out
    assert "3 patient(s), 3 usable" in out.err
    record = json.loads((folder / "qa.run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished" and record["end"] >= record["start"]
    assert record["summary"] == {"patients": 3, "rows": 3, "unusable": []}
    assert record["config"]["sequences"] == ["T1"]


def _replace(path, image: sitk.Image) -> None:
    path.unlink()
    sitk.WriteImage(image, str(path))


def _mask_with(path, **geometry) -> None:
    _, mask = phantom(1)
    _replace(path, volume(mask, **geometry))


def _image_with(path, change) -> None:
    image, _ = phantom(1)
    change(image)
    _replace(path, volume(image))


# (name, how to break patient P2, file named in the line, expected problem text)
BROKEN = [
    ("missing image", lambda d, m: (d / "P2_img.nrrd").unlink(), "P2_img.nrrd",
     "image: file not found"),
    ("missing mask", lambda d, m: (d / "P2_mask.nrrd").unlink(), "P2_mask.nrrd",
     "mask: file not found"),
    ("unreadable image", lambda d, m: (d / "P2_img.nrrd").write_bytes(b"\x00garbage" * 50),
     "P2_img.nrrd", "image: cannot read file"),
    ("no file given", lambda d, m: set_cell(m, "P2", "mask_T1", ""), "manifest.csv",
     "row 3, column mask_T1: no file given"),
    ("grid size", lambda d, m: _replace(d / "P2_mask.nrrd",
                                        volume(np.zeros((12, 28, 30), np.uint8) + 1)),
     "P2_mask.nrrd", "image and mask on different grids: size (32, 28, 12) vs (30, 28, 12)"),
    ("grid spacing", lambda d, m: _mask_with(d / "P2_mask.nrrd", spacing=(0.8, 0.9, 3.0)),
     "P2_mask.nrrd", "image and mask on different grids: spacing"),
    ("grid origin", lambda d, m: _mask_with(d / "P2_mask.nrrd", origin=(-30.0, 12.5, 41.0)),
     "P2_mask.nrrd", "image and mask on different grids: origin"),
    ("grid direction", lambda d, m: _mask_with(d / "P2_mask.nrrd",
                                               direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)),
     "P2_mask.nrrd", "image and mask on different grids: direction differs"),
    ("empty mask", lambda d, m: _replace(d / "P2_mask.nrrd", volume(np.zeros(SHAPE_ZYX, np.uint8))),
     "P2_mask.nrrd", "mask: empty mask"),
    ("non-binary mask", lambda d, m: _replace(d / "P2_mask.nrrd",
                                              volume(phantom(1)[1].astype(np.float32) * 0.5)),
     "P2_mask.nrrd", "mask: non-binary mask: values other than 0 and positive integer labels (0.5)"),
    ("NaN voxels", lambda d, m: _image_with(d / "P2_img.nrrd",
                                            lambda a: a.__setitem__((0, 0, slice(0, 3)), np.nan)),
     "P2_img.nrrd", "image: 3 NaN or infinite voxel(s)"),
    ("inf voxels", lambda d, m: _image_with(d / "P2_img.nrrd",
                                            lambda a: a.__setitem__((5, 5, 5), -np.inf)),
     "P2_img.nrrd", "image: 1 NaN or infinite voxel(s)"),
    ("2D image", lambda d, m: _replace(d / "P2_img.nrrd", sitk.GetImageFromArray(np.ones((28, 32)))),
     "P2_img.nrrd", "image: 2D image; a 3D volume is expected"),
    ("4D image", lambda d, m: _replace(d / "P2_img.nrrd",
                                       sitk.JoinSeries([volume(phantom(1)[0])] * 2)),
     "P2_img.nrrd", "image: 4D image; a 3D volume is expected"),
    ("unparseable grade", lambda d, m: set_cell(m, "P2", "grade", "G5"), "manifest.csv",
     "row 3, column grade: unparseable grade 'G5'"),
    ("non-numeric age", lambda d, m: set_cell(m, "P2", "age", "sixty"), "manifest.csv",
     "row 3, column age: non-numeric age 'sixty'"),
    ("non-numeric survival", lambda d, m: set_cell(m, "P2", "os_months", "long"), "manifest.csv",
     "row 3, column os_months: non-numeric survival time 'long'"),
]


@pytest.mark.parametrize("name, breaks, file, problem", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_patient_is_reported_and_exits_1(cohort, capsys, name, breaks, file, problem):
    manifest, folder = cohort
    breaks(folder, manifest)
    rc, qa = check(manifest)
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("P2: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"P2: {folder / file}: {problem}"), lines[0]
    by_id = qa.set_index("patient_id")
    assert by_id.loc["P2", "problems"].startswith(problem.split(": ", 1)[0])
    assert not by_id.loc["P2", "usable"]
    assert by_id.loc["P1", "usable"] and by_id.loc["P3", "usable"]
    assert "3 patient(s), 2 usable" in err


def test_duplicate_patient_id(cohort, capsys):
    manifest, folder = cohort
    with open(manifest, "a") as fh:
        fh.write("P2,1,P1_img.nii.gz,P1_mask.nii.gz,50,12,0\n")
    rc, qa = check(manifest)
    err = capsys.readouterr().err
    assert rc == 1
    assert f"P2: {manifest}: row 5, column patient_id: duplicate patient_id (also on row 3)" in err
    assert qa.patient_id.tolist() == ["P1", "P2", "P3"]   # the duplicate row is not a patient
    assert qa.usable.tolist() == [True, False, True]


def test_row_without_patient_id_gets_its_own_row(cohort, capsys):
    manifest, _ = cohort
    with open(manifest, "a") as fh:
        fh.write(",1,P1_img.nii.gz,P1_mask.nii.gz,50,12,0\n")
    rc, qa = check(manifest)
    assert rc == 1
    assert f"?: {manifest}: row 5, column patient_id: empty patient_id" in capsys.readouterr().err
    assert qa.usable.tolist() == [True, True, True, False]


def test_tolerable_origin_jitter_is_not_a_problem(cohort):
    manifest, folder = cohort
    _mask_with(folder / "P2_mask.nrrd", origin=(-30.0, 12.5, 40.001))
    assert check(manifest)[0] == 0


def test_multilabel_mask_is_binarised_with_a_warning(cohort, capsys):
    manifest, folder = cohort
    _, mask = phantom(1)
    labels = mask.copy()
    labels[:6][mask[:6] > 0] = 2
    _replace(folder / "P2_mask.nrrd", volume(labels))
    rc, qa = check(manifest)
    err = capsys.readouterr().err
    assert rc == 0
    row = qa.set_index("patient_id").loc["P2"]
    assert row.usable and row.mask_voxels == mask.sum()
    assert row.warnings == "mask: multi-label mask (labels 1, 2) binarised as label > 0"
    assert f"warning: P2: {folder / 'P2_mask.nrrd'}: mask: multi-label mask" in err


def test_unknown_grade_is_a_warning_not_a_problem(cohort, capsys):
    manifest, _ = cohort
    set_cell(manifest, "P3", "grade", "N/A")
    rc, qa = check(manifest)
    assert rc == 0
    assert qa.warnings.tolist()[2].startswith("row 4, column grade: grade unknown")


def test_out_folder_and_sequence_selection(tmp_path, capsys):
    image, mask = phantom(0)
    sitk.WriteImage(volume(image), str(tmp_path / "img.nii.gz"))
    sitk.WriteImage(volume(mask), str(tmp_path / "mask.nii.gz"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("patient_id,grade,image_T1,mask_T1,image_T2,mask_T2\n"
                        "A,2,img.nii.gz,mask.nii.gz,img.nii.gz,missing.nii.gz\n")
    out = tmp_path / "qa_out"
    assert main(["check", str(manifest), "--sequence", "T1", "--out", str(out)]) == 0
    qa = pd.read_csv(out / "qa.csv")
    assert qa.sequence.tolist() == ["T1"] and (out / "qa.run.json").is_file()
    assert not (tmp_path / "qa.csv").exists()
    assert main(["check", str(manifest)]) == 1   # T2's mask is missing
    qa = pd.read_csv(tmp_path / "qa.csv", keep_default_na=False)
    assert qa.sequence.tolist() == ["T1", "T2"] and qa.usable.tolist() == [True, False]
    assert main(["check", str(manifest), "--sequence", "FLAIR"]) == 1
    assert "no image_FLAIR column; sequences in the manifest: T1, T2" in capsys.readouterr().err


def test_unreadable_manifest_writes_nothing(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,image_T1,mask_T1\nA,a.nii,b.nii\n")
    assert main(["check", str(manifest)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"sarcograde check: error: {manifest}: manifest has no patient_id column"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def _spheroid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape)
    return (sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1).astype(np.uint8)


def test_diameter_of_a_box_is_its_diagonal():
    mask = np.zeros((10, 12, 14), np.uint8)
    mask[2:7, 3:11, 1:13] = 1                      # 5 x 8 x 12 voxels (z, y, x)
    spacing = (0.7, 1.1, 3.0)                      # x, y, z
    expected = math.dist((0, 0, 0), (11 * 0.7, 7 * 1.1, 4 * 3.0))
    assert longest_diameter_mm(volume(mask, spacing=spacing)) == pytest.approx(expected)


@pytest.mark.parametrize("direction", [None, (0, 0, 1, 0.6, 0.8, 0, -0.8, 0.6, 0)],
                         ids=["axial", "oblique"])
def test_diameter_matches_all_pairs(direction):
    rng = np.random.default_rng(7)
    blob = _spheroid((14, 30, 26), (7, 15, 12), (5, 12, 9))
    blob &= rng.random(blob.shape) < 0.9           # ragged, with holes: many hull vertices
    image = volume(blob, spacing=(0.6, 1.3, 2.2), direction=direction)
    assert longest_diameter_mm(image) == pytest.approx(brute_force_diameter(image))


def test_diameter_of_flat_and_tiny_masks():
    flat = np.zeros((3, 30, 30), np.uint8)
    flat[1] = _spheroid((30, 30), (14, 15), (11, 7))   # one slice: a planar point set
    image = volume(flat)
    assert longest_diameter_mm(image) == pytest.approx(brute_force_diameter(image))
    line = np.zeros((3, 3, 90), np.uint8)
    line[1, 1, 4:80] = 1                                 # collinear
    assert longest_diameter_mm(volume(line)) == pytest.approx(75 * SPACING[0])
    single = np.zeros((3, 3, 3), np.uint8)
    single[1, 1, 1] = 1
    assert longest_diameter_mm(volume(single)) == 0.0
    assert math.isnan(longest_diameter_mm(volume(np.zeros((3, 3, 3), np.uint8))))
    assert tumour_volume_ml(volume(single)) == pytest.approx(np.prod(SPACING) / 1000)


def test_real_tcia_patients_all_usable(tcia_nifti_manifest, tcia_root, capsys):
    rc, qa = check(tcia_nifti_manifest)
    assert rc == 0, capsys.readouterr().err
    assert len(qa) == 12 and qa.usable.all()
    assert set(qa.orientation) == {"LPS"}
    for row in qa.itertuples():
        mask = sitk.ReadImage(str(tcia_root / "nifti" / row.patient_id / "MR_T1_mask.nii.gz"))
        voxels = int((sitk.GetArrayFromImage(mask) > 0).sum())
        voxel_ml = np.prod(mask.GetSpacing()) / 1000
        assert row.mask_voxels == voxels
        assert row.tumour_volume_ml == pytest.approx(voxels * voxel_ml, rel=1e-12)
    smallest = qa.loc[qa.mask_voxels.idxmin()]
    mask = sitk.ReadImage(str(tcia_root / "nifti" / smallest.patient_id / "MR_T1_mask.nii.gz"))
    index = np.argwhere(sitk.GetArrayFromImage(mask) > 0)[:, ::-1]
    points = np.array([mask.TransformContinuousIndexToPhysicalPoint(i.tolist()) for i in
                       index.astype(float)])
    all_pairs = max(cdist(points[i:i + 1000], points).max() for i in range(0, len(points), 1000))
    assert smallest.longest_diameter_mm == pytest.approx(all_pairs)


def _nifti_image(folder, change) -> None:
    """Rewrite P1's NIfTI image after `change(array)`; the phantom is float32."""
    image, _ = phantom(0)
    change(image)
    _replace(folder / "P1_img.nii.gz", volume(image))


def _truncate(path, keep: float, compressed: bool = True) -> None:
    if not compressed:  # an uncompressed copy, then cut
        sitk.WriteImage(sitk.ReadImage(str(path)), str(path.with_suffix("")))
        path.unlink()
        path = path.with_suffix("")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _uncompressed_truncation(folder, manifest):
    _truncate(folder / "P1_img.nii.gz", 0.5, compressed=False)
    set_cell(manifest, "P1", "image_T1", "P1_img.nii")


VOXELS = int(np.prod(SHAPE_ZYX))
HEADER = 352  # NIfTI-1 vox_offset of ITK's files
CUT = int((HEADER + 4 * VOXELS) * 0.5)

# (name, how to break P1 (NIfTI), file named, exact problem): what ITK reads without an error.
NIFTI_FAULTS = [
    ("NaN in a NIfTI", lambda d, m: _nifti_image(d, lambda a: a.__setitem__((0, 0, slice(0, 3)),
                                                                          np.nan)),
     "P1_img.nii.gz", "image: 3 NaN or infinite voxel(s)"),
    ("inf in a NIfTI", lambda d, m: _nifti_image(d, lambda a: a.__setitem__((4, 4, 4), np.inf)),
     "P1_img.nii.gz", "image: 1 NaN or infinite voxel(s)"),
    ("truncated .nii.gz", lambda d, m: _truncate(d / "P1_img.nii.gz", 1 / 3), "P1_img.nii.gz",
     "image: truncated or corrupt compressed file (Compressed file ended before the "
     "end-of-stream marker was reached)"),
    ("truncated .nii", _uncompressed_truncation, "P1_img.nii",
     f"image: truncated file: {CUT - HEADER} of {4 * VOXELS} bytes of voxel data"),
    ("all-zero image", lambda d, m: _nifti_image(d, lambda a: a.__setitem__(..., 0)),
     "P1_img.nii.gz", "image: every voxel is 0 (a blank image)"),
    ("constant image", lambda d, m: _nifti_image(d, lambda a: a.__setitem__(..., 7.5)),
     "P1_img.nii.gz", "image: every voxel is 7.5 (a blank image)"),
    ("one-voxel mask", lambda d, m: _replace(d / "P1_mask.nii.gz", volume(
        np.pad(np.ones((1, 1, 1), np.uint8), [(5, 6), (9, 18), (3, 28)]))),
     "P1_mask.nii.gz", "mask: a single voxel, not a tumour outline"),
]


@pytest.mark.parametrize("name, breaks, file, problem", NIFTI_FAULTS,
                         ids=[b[0] for b in NIFTI_FAULTS])
def test_silently_wrong_nifti_is_refused(cohort, capsys, name, breaks, file, problem):
    manifest, folder = cohort
    breaks(folder, manifest)
    rc, qa = check(manifest)
    err = capsys.readouterr().err
    assert rc == 1
    assert [line for line in err.splitlines() if line.startswith("P1: ")] == \
        [f"P1: {folder / file}: {problem}"]
    assert qa.usable.tolist() == [False, True, True]


def test_patient_id_that_cannot_name_a_file_is_refused_by_check_and_preprocess(cohort, capsys):
    manifest, folder = cohort
    set_cell(manifest, "P1", "patient_id", "../P1")
    problem = ("row 2, column patient_id: patient_id '../P1' cannot be a file name (letters, "
               "digits, '._+- ', starting with a letter or digit)")
    rc, qa = check(manifest)
    assert rc == 1
    assert f"../P1: {manifest}: {problem}\n" in capsys.readouterr().err
    assert qa.usable.tolist() == [False, True, True]
    # the same rule, not a copy of it, stops preprocess before any work
    assert main(["preprocess", str(manifest), "--out", str(folder / "cache")]) == 1
    assert capsys.readouterr().err == (f"sarcograde preprocess: error: {manifest}: ../P1: "
                                       f"{problem}\n")


def _with_pieces(mask: np.ndarray) -> np.ndarray:
    """The phantom tumour plus a 2 x 2 x 2 blob and a stray voxel, both apart from it."""
    mask = mask.copy()
    mask[0:2, 0:2, 0:2] = 1
    mask[11, 27, 31] = 1
    return mask


def test_implausible_masks_are_warned_about(cohort, capsys):
    manifest, folder = cohort
    _, tumour = phantom(0)
    _replace(folder / "P1_mask.nii.gz", volume(_with_pieces(tumour)))
    _replace(folder / "P2_mask.nrrd", volume(np.ones(SHAPE_ZYX, np.uint8)))
    rc, qa = check(manifest)
    err = capsys.readouterr().err
    assert rc == 0                                        # warnings, not problems
    labels, n = ndimage.label(_with_pieces(tumour), structure=np.ones((3, 3, 3)))
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
    share = sizes[0] / sizes.sum()
    assert n == 3
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert lines == [
        f"warning: P1: {folder / 'P1_mask.nii.gz'}: mask: 3 disconnected pieces; the largest "
        f"holds {share:.1%} of the voxels",
        f"warning: P2: {folder / 'P2_mask.nrrd'}: mask: covers 100% of the image; is it the "
        "tumour?"]
    assert qa.mask_pieces.tolist() == [3, 1, 1]
    assert qa.largest_piece_share[0] == pytest.approx(share, abs=1e-4)
    assert qa.largest_piece_share[2] == 1.0


def _findings(err: str, patient: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"{patient}: ")]


def test_dicom_folder_with_two_series_is_refused_unless_the_manifest_names_one(cohort, capsys):
    """P1's image is a folder of two DICOM series: refused in one line listing both, never the
    larger one taken; `series_T1` names the one to use."""
    manifest, folder = cohort
    image, _ = phantom(0)
    exam = folder / "P1_exam"
    pre = write_dicom_series(volume(image.astype(np.int16)), exam, description="T1 pre")
    post = write_dicom_series(volume((image + 50).astype(np.int16))[:, :, 2:], exam,
                              description="T1 post")
    set_cell(manifest, "P1", "image_T1", "P1_exam")
    capsys.readouterr()
    rc, qa = check(manifest)
    assert rc == 1 and qa.usable.tolist() == [False, True, True]
    assert _findings(capsys.readouterr().err, "P1") == [
        f"P1: {exam}: image: column image_T1: 2 DICOM image series in the folder; name one in "
        f"column series_T1: 'T1 post' {post} (10 slices), 'T1 pre' {pre} (12 slices)"]
    assert qa.series_uid[0] == ""

    set_cell(manifest, "P1", "series_T1", pre)
    rc, qa = check(manifest)
    assert rc == 0, capsys.readouterr().err
    assert qa.series_uid.tolist() == [pre, "", ""]       # which series was read; none for a file
    assert qa.p50[0] == pytest.approx(np.percentile(image.astype(np.int16), 50))

    set_cell(manifest, "P1", "series_T1", "1.2.3")
    set_cell(manifest, "P2", "series_T1", "T1 post")      # a description, not a UID
    set_cell(manifest, "P3", "series_T1", post)           # P3's image is a file
    capsys.readouterr()
    rc, qa = check(manifest)
    assert rc == 1 and not qa.usable.any()
    err = capsys.readouterr().err
    assert _findings(err, "P1") == [
        f"P1: {exam}: image: column series_T1: series 1.2.3 is not in the folder; name one in "
        f"column series_T1: 'T1 post' {post} (10 slices), 'T1 pre' {pre} (12 slices)"]
    assert _findings(err, "P2") == [
        f"P2: {manifest}: row 3, column series_T1: 'T1 post' is not a SeriesInstanceUID (numbers "
        "joined by dots, at most 64 characters)"]
    assert _findings(err, "P3") == [
        f"P3: {folder / 'P3_img.mha'}: image: column series_T1 names series {post}, but image_T1 "
        "is a file, not a DICOM folder"]


@pytest.mark.realdata
def test_real_exam_folder_with_two_series_is_refused_unless_the_manifest_names_one(
        tcia_two_series, tcia_root, tmp_path, capsys):
    """STS_002's T1 twice in one folder: refused with both listed and the series its RTSTRUCT
    references as a hint (the RTSTRUCT does not choose either); usable once `series_T1` names
    it, and refused by the RTSTRUCT when `series_T1` names the other."""
    folder, original, copy = tcia_two_series
    rtstruct = tcia_root / "dicom" / "STS_002" / "MR_T1" / "mask" / "RS.dcm"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"patient_id,image_T1,mask_T1,roi_T1\n"
                        f"STS_002,{folder},{rtstruct},GTV_Mass_MR_T1\n")
    rc, qa = check(manifest)
    assert rc == 1
    assert _findings(capsys.readouterr().err, "STS_002") == [
        f"STS_002: {folder}: image: column image_T1: 2 DICOM image series in the folder; name one "
        f"in column series_T1: 'IBSI_1_STS_002_MR_T1_image' {original} (35 slices), 'T1 copy' "
        f"{copy} (35 slices); the RTSTRUCT in mask_T1 references series {original}"]

    set_cell(manifest, "STS_002", "series_T1", original)
    rc, qa = check(manifest)
    assert rc == 0, capsys.readouterr().err
    assert qa.series_uid[0] == original and qa.mask_voxels[0] > 0

    set_cell(manifest, "STS_002", "series_T1", copy)
    rc, qa = check(manifest)
    assert rc == 1
    assert _findings(capsys.readouterr().err, "STS_002") == [
        f"STS_002: {rtstruct}: mask: ROI 'GTV_Mass_MR_T1' was drawn on series {original}, the "
        f"image is series {copy}"]
