"""One contour serves every sequence: carrying a mask between grids, in check and in preprocess."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from sarcograde.cli import main
from sarcograde.cohort import load_manifest
from sarcograde.errors import SarcogradeError
from sarcograde.io import tumour_volume_ml
from sarcograde.masks import carry_mask, mask_source, world_extents_overlap

CENTRE = np.array([12.0, -20.0, 35.0])   # mm, physical (LPS)
RADIUS = 18.0


def grid(size, spacing, direction, centre=CENTRE) -> sitk.Image:
    """An empty UInt8 image of `size` voxels centred on `centre`."""
    image = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in np.asarray(direction).ravel()])
    half = np.asarray(direction).reshape(3, 3) @ (np.array(spacing) * (np.array(size) - 1) / 2)
    image.SetOrigin([float(o) for o in np.asarray(centre) - half])
    return image


def centres(image: sitk.Image) -> np.ndarray:
    """Physical position of every voxel centre, (z, y, x, 3)."""
    k, j, i = np.indices(image.GetSize()[::-1])
    index = np.stack([i, j, k], axis=-1).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + (index * np.array(image.GetSpacing())) @ direction.T


def sphere_on(image: sitk.Image, centre=CENTRE, radius=RADIUS) -> sitk.Image:
    inside = np.linalg.norm(centres(image) - centre, axis=-1) <= radius
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def centroid(mask: sitk.Image) -> np.ndarray:
    return centres(mask)[sitk.GetArrayViewFromImage(mask) > 0].mean(axis=0)


# Drawn on thick axial slices (LPS); carried onto an oblique grid (rotated 25 and 10 degrees,
# axes permuted and flipped) of other spacing, and onto the reverse.
AXIAL = dict(size=(64, 64, 16), spacing=(0.8, 0.8, 3.5), direction=np.eye(3))
OBLIQUE = dict(size=(40, 60, 48), spacing=(1.3, 0.9, 1.1),
               direction=Rotation.from_euler("zx", [25, 10], degrees=True).as_matrix()
               @ np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]]))


@pytest.mark.parametrize("source, target", [(AXIAL, OBLIQUE), (OBLIQUE, AXIAL)])
def test_sphere_keeps_centre_and_volume(source, target):
    drawn = sphere_on(grid(**source))
    target_image = grid(**target)
    carried = carry_mask(drawn, target_image, "P1")
    assert carried.GetSize() == target_image.GetSize()
    assert carried.GetDirection() == pytest.approx(target_image.GetDirection())
    assert set(np.unique(sitk.GetArrayViewFromImage(carried))) == {0, 1}
    # Centre within one voxel of the target grid, volume within 3% of the drawn one.
    shift = np.linalg.norm(centroid(carried) - centroid(drawn))
    assert shift < min(target["spacing"])
    assert tumour_volume_ml(carried) == pytest.approx(tumour_volume_ml(drawn), rel=0.03)
    # The carried voxels are those whose centre lies in the sphere, but for the boundary layer.
    truth = sitk.GetArrayViewFromImage(sphere_on(target_image)) > 0
    disagree = np.count_nonzero(truth != (sitk.GetArrayViewFromImage(carried) > 0))
    assert disagree < 0.1 * np.count_nonzero(truth)


def test_non_overlapping_images_are_a_one_line_error():
    drawn = sphere_on(grid(**AXIAL))
    far = grid(**{**OBLIQUE, "centre": CENTRE + [0, 0, 400]})
    assert not world_extents_overlap(drawn, far) and world_extents_overlap(drawn, grid(**OBLIQUE))
    with pytest.raises(SarcogradeError, match="do not overlap in physical space") as caught:
        carry_mask(drawn, far, "P7")
    assert str(caught.value).startswith("P7: ") and "\n" not in str(caught.value)


@pytest.fixture
def two_sequences(tmp_path):
    """P1: a sphere drawn on T1 only; P2: the sphere drawn on every other row and column
    only (a sieve of 0.8 mm voxels), whose volume changes when carried onto T2's coarser voxels;
    P3: T2 lies 40 cm away (no overlap)."""
    rows = []
    rng = np.random.default_rng(0)
    for pid, thin, offset in (("P1", False, 0), ("P2", True, 0), ("P3", False, 400)):
        for seq, geometry in (("T1", AXIAL), ("T2", OBLIQUE)):
            shifted = {**geometry, "centre": CENTRE + [0, 0, offset if seq == "T2" else 0]}
            image = sitk.Cast(grid(**shifted), sitk.sitkFloat32)
            mask = sphere_on(image)
            if thin:
                array = sitk.GetArrayFromImage(mask)
                array[:, :, 1::2] = array[:, 1::2, :] = 0
                mask = sitk.GetImageFromArray(array)
                mask.CopyInformation(image)
            body = np.linalg.norm(centres(image) - shifted["centre"], axis=-1) <= 30
            array = np.abs(100.0 * body + 60 * sitk.GetArrayFromImage(mask)
                           + rng.normal(0, 5, body.shape))
            noisy = sitk.GetImageFromArray(array.astype(np.float32))
            noisy.CopyInformation(image)
            sitk.WriteImage(noisy, str(tmp_path / f"{pid}_{seq}.nii.gz"))
            sitk.WriteImage(mask, str(tmp_path / f"{pid}_{seq}_mask.nii.gz"))
        rows.append({"patient_id": pid, "grade": 2, "image_T1": f"{pid}_T1.nii.gz",
                     "mask_T1": f"{pid}_T1_mask.nii.gz", "image_T2": f"{pid}_T2.nii.gz",
                     "mask_T2": ""})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv"


def test_manifest_accepts_an_empty_mask_cell_only_where_another_sequence_has_one(two_sequences):
    cohort = load_manifest(two_sequences, strict=True)
    source = mask_source(cohort.by_id()["P1"], "T2")
    assert source.carried and source.sequence == "T1" and source.label == "carried:T1"
    assert mask_source(cohort.by_id()["P1"], "T1").label == "drawn"
    frame = pd.read_csv(two_sequences, dtype=str, keep_default_na=False)
    frame.loc[frame.patient_id == "P2", "mask_T1"] = ""
    frame.to_csv(two_sequences, index=False)
    problems = load_manifest(two_sequences).problems
    assert [(p.patient_id, p.column, p.message) for p in problems] == [
        ("P2", "mask_T1", "no file given"), ("P2", "mask_T2", "no file given")]


def test_check_reports_drawn_and_carried_masks(two_sequences, capsys):
    assert main(["check", str(two_sequences)]) == 1   # P3 cannot be carried
    qa = pd.read_csv(two_sequences.parent / "qa.csv").fillna({"warnings": "", "problems": ""})
    qa = qa.set_index(["patient_id", "sequence"])
    assert qa.loc[("P1", "T1"), "mask_source"] == "drawn"
    assert qa.loc[("P1", "T2"), "mask_source"] == "carried:T1"
    # The volume on each grid: the drawn one on T1's, the carried one on T2's, within 3%.
    drawn = sitk.ReadImage(str(two_sequences.parent / "P1_T1_mask.nii.gz"))
    assert qa.loc[("P1", "T2"), "drawn_volume_ml"] == pytest.approx(tumour_volume_ml(drawn))
    assert qa.loc[("P1", "T2"), "tumour_volume_ml"] == pytest.approx(
        tumour_volume_ml(drawn), rel=0.03)
    assert qa.loc[("P1", "T2"), "warnings"] == "" and qa.loc[("P1", "T2"), "usable"]
    # A sieve finer than T2's voxels: carrying changes the volume by more than 10%.
    p2 = qa.loc[("P2", "T2")]
    change = p2["tumour_volume_ml"] / p2["drawn_volume_ml"] - 1
    assert abs(change) > 0.10 and p2["usable"]
    assert p2["warnings"] == (f"mask: carried from T1, the volume changes by {change:+.0%} "
                              f"({p2['drawn_volume_ml']:.2f} -> {p2['tumour_volume_ml']:.2f} ml)")
    assert not qa.loc[("P3", "T2"), "usable"] and qa.loc[("P3", "T1"), "usable"]
    assert "do not overlap in physical space" in qa.loc[("P3", "T2"), "problems"]
    err = capsys.readouterr().err
    assert any(line.startswith("P3: ") and "cannot carry the T1 contour" in line
               for line in err.splitlines())


def test_preprocess_uses_the_carried_mask(two_sequences, tmp_path, capsys):
    cache = tmp_path / "cache"
    rc = main(["preprocess", str(two_sequences), "--sequence", "T2", "--out", str(cache),
               "--preset", "quick", "--no-n4"])
    assert rc == 1   # P3 fails on its own line, P1 and P2 are cached
    lines = [line for line in capsys.readouterr().err.splitlines() if "failed: P3" in line]
    assert len(lines) == 1 and "do not overlap in physical space" in lines[0]
    index = pd.read_csv(cache / "index.csv").set_index("patient_id")
    assert list(index.index) == ["P1", "P2"] and index.loc["P1", "n_slices"] > 20
    drawn = sitk.ReadImage(str(two_sequences.parent / "P1_T1_mask.nii.gz"))
    assert index.loc["P1", "tumour_volume_ml"] == pytest.approx(tumour_volume_ml(drawn), rel=0.03)


@pytest.mark.realdata
def test_dicom_frames_of_reference_must_match(tcia_root):
    from sarcograde.io import read_image
    from sarcograde.masks import MaskSource, frame_of_reference, read_drawn_mask

    series = {pid: tcia_root / "dicom" / pid / "MR_T1" for pid in ("STS_002", "STS_008")}
    uids = {pid: frame_of_reference(read_image(folder / "image")) for pid, folder in series.items()}
    assert all(uid and uid.startswith("1.") for uid in uids.values())
    assert uids["STS_002"] != uids["STS_008"]
    nifti = read_image(tcia_root / "nifti" / "STS_002" / "MR_T1_image.nii.gz")
    assert frame_of_reference(nifti) is None  # not a DICOM series
    image = read_image(series["STS_002"] / "image")
    source = MaskSource("T1", series["STS_002"] / "mask" / "RS.dcm", series["STS_002"] / "image",
                        None, carried=True)
    mask = read_drawn_mask("STS_002", source, image)  # carries the frame it was drawn in
    # The same frame of reference: carried onto its own grid, the mask is unchanged.
    same = carry_mask(mask, image, "STS_002", source, series["STS_002"] / "image")
    assert np.array_equal(sitk.GetArrayViewFromImage(same), sitk.GetArrayViewFromImage(mask))
    other = read_image(series["STS_008"] / "image")
    with pytest.raises(SarcogradeError, match="different DICOM frames of reference") as caught:
        carry_mask(mask, other, "STS_008", source, series["STS_008"] / "image")
    assert str(caught.value).startswith("STS_008: ") and "\n" not in str(caught.value)
