"""MIRP's features on volumes whose values can be worked out by hand, and the empty-class rule."""

from __future__ import annotations

import numpy as np
import pytest

from sarcograde.errors import SarcogradeError
from sarcograde.radiomics.features import compute_features
from sarcograde.radiomics.settings import FAMILIES, TEXTURE, load_settings

SETTINGS = load_settings().features  # bin width 0.25 z, lower bound -5


def _feature(values: dict, prefix: str) -> float:
    (name,) = [k for k in values if k.startswith(prefix)]
    return values[name]


def test_first_order_mean_and_volume_of_a_box():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(10, 12, 14)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[2:6, 3:8, 4:10] = 1                                  # 4 x 5 x 6 = 120 voxels
    spacing = 2.0
    result = compute_features(image, mask, spacing, SETTINGS)
    inside = image[mask > 0].astype(np.float64)
    assert result.values["stat_mean"] == pytest.approx(inside.mean(), rel=1e-6)
    assert result.values["stat_max"] == pytest.approx(inside.max(), rel=1e-6)
    assert result.values["stat_var"] == pytest.approx(inside.var(), rel=1e-5)  # IBSI: 1/N
    # IBSI "volume (voxel counting)": voxels x voxel volume, in mm3.
    assert result.values["morph_vol_approx"] == pytest.approx(120 * spacing ** 3)
    assert result.empty == [] and result.reason == ""


def test_glcm_of_a_two_level_checkerboard():
    """A 3D checkerboard of two adjacent grey levels filling an n^3 mask. Merged over the 13
    directions, a direction with k non-zero steps has (n-1)^k n^(3-k) voxel pairs; face (k=1) and
    corner (k=3) neighbours differ in level, edge neighbours (k=2) share it."""
    n = 4
    z, y, x = np.indices((n + 4,) * 3)
    image = (((x + y + z) % 2) * SETTINGS["bin_width"]).astype(np.float32)  # bins 21 and 22
    mask = np.zeros(image.shape, np.uint8)
    mask[2:2 + n, 2:2 + n, 2:2 + n] = 1
    pairs = {k: count * (n - 1) ** k * n ** (3 - k) for k, count in ((1, 3), (2, 6), (3, 4))}
    total = sum(pairs.values())
    p_differ = (pairs[1] + pairs[3]) / total
    p_same_each = pairs[2] / total / 2  # each level has the same number of same-level pairs
    values = compute_features(image, mask, 1.0, SETTINGS).values
    assert _feature(values, "cm_contrast_") == pytest.approx(p_differ * 1 ** 2)
    assert _feature(values, "cm_joint_max_") == pytest.approx(max(p_differ / 2, p_same_each))
    assert _feature(values, "cm_energy_") == pytest.approx(
        2 * (p_differ / 2) ** 2 + 2 * p_same_each ** 2)
    assert _feature(values, "cm_joint_avg_") == pytest.approx(21.5)


def test_every_feature_class_is_computed_with_mirp_names():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(12, 12, 12)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[3:9, 3:9, 3:9] = 1
    values = compute_features(image, mask, 1.0, SETTINGS).values
    for family, prefix in FAMILIES.items():
        assert any(k.startswith(prefix) and np.isfinite(v) for k, v in values.items()), family


@pytest.mark.parametrize("case", ["constant", "tiny"])
def test_constant_image_or_tiny_mask_leaves_texture_classes_empty(case):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(10, 10, 10)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    if case == "constant":
        image[:] = 0.5
        mask[3:7, 3:7, 3:7] = 1
    else:
        mask[5, 5, 5:7] = 1  # two voxels
    result = compute_features(image, mask, 1.0, SETTINGS)
    assert result.empty == list(TEXTURE)
    assert ("constant" if case == "constant" else "2 voxel") in result.reason
    texture = [k for k in result.values if k.startswith(tuple(FAMILIES[f] for f in TEXTURE))]
    assert texture and all(np.isnan(result.values[k]) for k in texture)
    assert result.values["stat_mean"] == pytest.approx(image[mask > 0].mean(), rel=1e-6)


def test_settings_file_overrides_and_rejects_unknown_keys(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("features:\n  bin_width: 0.5\nmodel:\n  max_correlation: 0.8\n")
    settings = load_settings(good)
    assert settings.features["bin_width"] == 0.5 and settings.model["max_correlation"] == 0.8
    assert settings.features["families"] == SETTINGS["families"]  # the rest from the shipped file
    bad = tmp_path / "bad.yaml"
    bad.write_text("features:\n  bin_wdth: 0.5\n")
    with pytest.raises(SarcogradeError, match="unknown radiomics setting.*bin_wdth"):
        load_settings(bad)
    bad.write_text("features:\n  families: [glcm, wavelet]\n")
    with pytest.raises(SarcogradeError, match="wavelet"):
        load_settings(bad)


def _features_from_nifti_files(image, mask, spacing, folder) -> dict[str, float]:
    """MIRP on NIfTI files of the same box, as `compute_features` fed it before arrays."""
    import SimpleITK as sitk
    from mirp import extract_features

    from sarcograde.radiomics.features import _bounding_box, _mirp_settings, _quiet_mirp

    paths = {}
    for name, array in (("image", image.astype(np.float32)), ("mask", mask.astype(np.uint8))):
        volume = sitk.GetImageFromArray(np.ascontiguousarray(array[_bounding_box(mask)]))
        volume.SetSpacing([spacing] * 3)
        paths[name] = str(folder / f"{name}.nii")
        sitk.WriteImage(volume, paths[name])
    with _quiet_mirp():
        table = extract_features(**paths, **_mirp_settings(SETTINGS))[0]
    return {name: float(table[name].iloc[0]) for name in table.columns
            if name.startswith(tuple(FAMILIES.values()))}


def test_arrays_give_the_features_of_nifti_files(tmp_path):
    """Under 1000 voxels MIRP computes Moran's I and Geary's C over every pair too, so every
    feature of the array path equals MIRP's from files (spacing 2 mm: handed over, not 1 mm)."""
    rng = np.random.default_rng(7)
    image = rng.normal(size=(12, 13, 14)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[3:9, 4:10, 3:11] = rng.random((6, 6, 8)) < 0.9              # about 260 voxels
    image[mask > 0] += np.indices(image.shape)[0][mask > 0] * 0.3     # some spatial structure
    spacing = 2.0
    arrays = compute_features(image, mask, spacing, SETTINGS).values
    files = _features_from_nifti_files(image, mask, spacing, tmp_path)
    assert sorted(arrays) == sorted(files) and len(arrays) > 100
    for name, value in files.items():
        assert arrays[name] == pytest.approx(value, rel=1e-6, abs=1e-12, nan_ok=True), name
    assert arrays["morph_vol_approx"] == pytest.approx(mask.sum() * spacing ** 3)


def _all_pairs_moran_geary(positions, values, spacing):
    """IBSI's definitions with every pair's 1/distance weight (the independent reference)."""
    points = positions * spacing
    distance = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(distance, np.inf)
    weights = 1.0 / distance
    deviation = values - values.mean()
    n, variance = len(values), (deviation ** 2).sum()
    moran = n * (weights * np.outer(deviation, deviation)).sum() / (weights.sum() * variance)
    geary = ((n - 1) * (weights * (deviation[:, None] - deviation[None, :]) ** 2).sum()
             / (2 * weights.sum() * variance))
    return moran, geary


@pytest.mark.parametrize("pattern", ["gradient", "checkerboard", "noise"])
def test_moran_and_geary_of_a_large_tumour_are_over_every_pair(pattern):
    """Above 999 voxels MIRP would average random subsets of 100 voxels; the values are the
    all-pairs ones instead, the same on every run, and of the sign the pattern implies."""
    rng = np.random.default_rng(11)
    z, y, x = np.indices((16, 16, 16))
    image = {"gradient": 0.2 * (z + y), "checkerboard": ((z + y + x) % 2) * 1.0,
             "noise": rng.normal(size=z.shape)}[pattern].astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[2:14, 2:14, 1:15] = 1                                         # 2016 voxels
    values = compute_features(image, mask, 1.5, SETTINGS).values
    positions = np.argwhere(mask)
    moran, geary = _all_pairs_moran_geary(positions.astype(float),
                                          image[mask > 0].astype(np.float64), 1.5)
    assert values["morph_moran_i"] == pytest.approx(moran, rel=1e-9, abs=1e-12)
    assert values["morph_geary_c"] == pytest.approx(geary, rel=1e-9)
    assert compute_features(image, mask, 1.5, SETTINGS).values == values
    expected_sign = {"gradient": 1, "checkerboard": -1, "noise": 0}[pattern]
    if expected_sign:
        assert np.sign(moran) == expected_sign and np.sign(1 - geary) == expected_sign
    else:
        assert abs(moran) < 0.01 and abs(geary - 1) < 0.05
