"""The preprocessing steps on small synthetic volumes: resampling, orientation, body mask, N4,
z-score, slice crops, and the whole per-patient pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from preprocess_phantom import phantom, stored_ras, stored_transposed, to_image
from sarcograde.config import load_preset
from sarcograde.errors import SarcogradeError
from sarcograde.preprocess import Params, preprocess_volume
from sarcograde.preprocess.bias import grid_factors, n4_correct
from sarcograde.preprocess.body import body_mask
from sarcograde.preprocess.geometry import isotropic_grid, resample_mask, to_canonical
from sarcograde.preprocess.normalise import zscore
from sarcograde.preprocess.slices import crop, resize, square_box
from sarcograde.radiomics.settings import load_settings

QUICK = Params(size=32, n4_iterations=(20, 20))


def test_sphere_at_anisotropic_spacing_keeps_its_volume_on_the_1mm_grid():
    radius = 12.0
    image, mask, _ = phantom(shape_zyx=(18, 64, 64), spacing=(0.9, 0.9, 3.3), radius_mm=radius,
                             centre=(1.3, -0.7, 0.9))
    grid = isotropic_grid(image, 1.0)
    resampled = sitk.GetArrayFromImage(resample_mask(mask, grid))
    assert grid.GetSpacing() == (1.0, 1.0, 1.0)
    assert set(np.unique(resampled)) == {0, 1}
    assert resampled.sum() == pytest.approx(4 / 3 * np.pi * radius ** 3, rel=0.03)


def test_isotropic_grid_covers_every_voxel_centre_with_patient_axes():
    image, _, _ = phantom(shape_zyx=(10, 20, 30), spacing=(0.7, 0.8, 3.0))
    stored = stored_ras(image)
    grid = isotropic_grid(stored, 1.0)
    low = np.array(image.GetOrigin())
    high = low + (np.array(image.GetSize()) - 1) * np.array(image.GetSpacing())
    assert grid.GetDirection() == tuple(np.eye(3).ravel())
    np.testing.assert_allclose(grid.GetOrigin(), low, atol=1e-9)
    last = np.array(grid.GetOrigin()) + np.array(grid.GetSize()) - 1
    assert np.all(last <= high + 1e-6) and np.all(last + 1 > high)


def test_grid_factors_bring_every_axis_near_the_grid_spacing_and_keep_voxels_per_span():
    assert grid_factors((0.78, 0.78, 4.2), (224, 224, 38), 6.0, 4) == [8, 8, 1]
    assert grid_factors((1.0, 1.0, 1.0), (200, 200, 200), 4.0, 4) == [4, 4, 4]
    assert grid_factors((0.9, 0.9, 3.3), (200, 200, 50), 0.0, 4) == [1, 1, 1]  # full resolution
    # a small crop keeps 3 voxels per span of the 4th level (8 spans): 24 voxels per axis
    assert grid_factors((0.98, 0.98, 3.27), (75, 55, 25), 6.0, 4) == [3, 2, 1]
    assert grid_factors((0.98, 0.98, 3.27), (75, 55, 25), 6.0, 2) == [6, 6, 2]


def test_auto_grid_is_the_coarsest_that_keeps_3_voxels_per_span_on_every_axis():
    # the synthetic patients of benchmarks/README.md: coarser than 6 mm where the image is large
    assert grid_factors((0.78, 0.78, 4.2), (243, 243, 43), "auto", 4) == [10, 10, 1]
    assert grid_factors((0.78, 0.78, 4.2), (196, 196, 26), "auto", 4) == [8, 8, 1]
    # whatever the spacing: the TCIA crop STS_025, and 2 levels (2 spans: 6 voxels per axis)
    assert grid_factors((0.98, 0.98, 3.27), (75, 55, 25), "auto", 4) == [3, 2, 1]
    assert grid_factors((0.98, 0.98, 3.27), (75, 55, 25), "auto", 2) == [12, 9, 4]
    assert grid_factors((0.5, 0.5, 0.5), (20, 30, 40), "auto", 4) == [1, 1, 1]
    for size in [(512, 512, 40), (97, 130, 23), (24, 47, 48)]:
        factors = grid_factors((0.47, 0.47, 4.0), size, "auto", 4)
        # N4 at the finest level has 8 spans per axis: 3 voxels each, and no coarser factor keeps 3
        assert all(n // f >= 24 or f == 1 for n, f in zip(size, factors))
        assert all(n // (f + 1) < 24 for n, f in zip(size, factors))


def test_body_mask_is_the_body_not_the_air():
    image, _, body = phantom(shape_zyx=(12, 48, 48), bias=0.3)
    found = sitk.GetArrayFromImage(body_mask(image)).astype(bool)
    dice = 2 * (found & body).sum() / (found.sum() + body.sum())
    assert dice > 0.98


def test_body_mask_of_pure_noise_is_an_error():
    # a few noise specks, no body: the largest component is a tiny fraction of the volume
    noise = np.zeros((8, 32, 32), np.float32)
    noise[4, 5, 5] = noise[2, 20, 20] = 100
    with pytest.raises(SarcogradeError, match="no body found"):
        body_mask(to_image(noise, (1, 1, 1), (0, 0, 0)))


def test_zscore_gives_mean_0_and_sd_1_over_the_body():
    rng = np.random.default_rng(3)
    image = np.zeros((10, 30, 30), np.float32)
    body = np.zeros(image.shape, bool)
    body[:, 5:25, 8:22] = True
    image[body] = rng.normal(300, 40, body.sum())
    normalised, mean, sd = zscore(image, body)
    values = normalised[body].astype(np.float64)
    assert abs(values.mean()) < 1e-5 and values.std() == pytest.approx(1, abs=1e-5)
    assert mean == pytest.approx(image[body].mean(), rel=1e-6)
    assert sd == pytest.approx(image[body].std(), rel=1e-5)
    # the air is not part of the statistics: over the whole volume the mean is far from 0
    assert normalised.mean() < -0.5


def test_zscore_of_a_constant_body_is_an_error():
    with pytest.raises(SarcogradeError, match="constant"):
        zscore(np.ones((4, 4, 4), np.float32), np.ones((4, 4, 4), bool))


def test_n4_removes_most_of_a_known_multiplicative_bias():
    image, tumour, body = phantom(shape_zyx=(20, 64, 64), spacing=(1.5, 1.5, 3.0), bias=0.4)
    # uniform tissue only: inside the body, away from its edge and from the tumour
    tumour = sitk.GetArrayFromImage(tumour).astype(bool)
    uniform = ndimage.binary_erosion(body, iterations=2) & ~ndimage.binary_dilation(tumour, iterations=2)
    corrected = n4_correct(image, body_mask(image), grid_mm=6.0, iterations=(20, 20))

    def cv(img):
        values = sitk.GetArrayFromImage(img)[uniform]
        return values.std() / values.mean()

    assert cv(corrected) <= 0.5 * cv(image)
    assert corrected.GetSize() == image.GetSize()


def test_n4_on_a_coarse_grid_agrees_with_full_resolution_n4_inside_the_body():
    # thin in-plane pixels and thick slices, as in the clinic: the 6 mm grid shrinks 8 x 8 x 1
    image, _, _ = phantom(shape_zyx=(12, 96, 96), spacing=(0.75, 0.75, 4.0), radius_mm=12.0,
                          bias=0.4)
    body = body_mask(image)
    inside = sitk.GetArrayFromImage(body).astype(bool)
    coarse = sitk.GetArrayFromImage(n4_correct(image, body, 6.0, (50, 50, 50)))[inside]
    full = sitk.GetArrayFromImage(n4_correct(image, body, 0.0, (50, 50, 50)))[inside]
    assert np.corrcoef(coarse, full)[0, 1] >= 0.99
    # and both removed the known bias: the raw image correlates less with either
    raw = sitk.GetArrayFromImage(image)[inside]
    assert np.corrcoef(raw, full)[0, 1] < np.corrcoef(coarse, full)[0, 1]


def test_n4_on_the_auto_grid_agrees_with_full_resolution_n4_inside_the_body():
    # 3 levels keep 12 voxels per axis: the auto grid shrinks 5 x 5 x 1 where 6 mm gives 3 x 3 x 1
    image, _, _ = phantom(shape_zyx=(12, 60, 60), spacing=(2.0, 2.0, 4.0), radius_mm=12.0,
                          bias=0.4)
    assert grid_factors(image.GetSpacing(), image.GetSize(), "auto", 3) == [5, 5, 1]
    body = body_mask(image)
    inside = sitk.GetArrayFromImage(body).astype(bool)
    coarse = sitk.GetArrayFromImage(n4_correct(image, body, "auto", (50, 50, 50)))[inside]
    full = sitk.GetArrayFromImage(n4_correct(image, body, 0.0, (50, 50, 50)))[inside]
    raw = sitk.GetArrayFromImage(image)[inside]
    assert np.corrcoef(coarse, full)[0, 1] >= 0.99 > np.corrcoef(raw, full)[0, 1]


def test_n4_result_does_not_depend_on_the_number_of_threads():
    image, _, _ = phantom(shape_zyx=(16, 48, 48), bias=0.4)
    body = body_mask(image)
    before = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    results = []
    try:
        for threads in (1, 4):
            sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)
            results.append(sitk.GetArrayFromImage(n4_correct(image, body, 3.0, (20, 20))))
    finally:
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(before)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("storage", [stored_ras, stored_transposed])
def test_same_scan_stored_in_another_orientation_gives_identical_slices(storage):
    image, mask, _ = phantom(bias=0.3)
    assert storage(image).GetDirection() != image.GetDirection()
    reference = preprocess_volume(image, mask, QUICK)
    other = preprocess_volume(storage(image), storage(mask), QUICK)
    np.testing.assert_array_equal(reference.slices.mask, other.slices.mask)
    np.testing.assert_array_equal(reference.slices.image, other.slices.image)
    np.testing.assert_array_equal(reference.slices.z_mm, other.slices.z_mm)
    np.testing.assert_allclose(reference.origin, other.origin, atol=1e-9)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        to_canonical(storage(image)).GetDirection()) == "LPS"


def test_square_box_is_one_box_around_all_slices_with_the_margin():
    mask = np.zeros((3, 40, 50), np.uint8)
    mask[0, 10:14, 20:22] = 1        # rows 10-13
    mask[2, 12:16, 15:30] = 1        # rows 12-15, columns 15-29
    row, col, side = square_box(mask, margin_vox=3)
    assert side == 15 + 2 * 3                       # the longer edge (columns 15-29) plus margins
    assert (row, col) == (10 - (side - 6) // 2, 15 - 3)


def test_crop_pads_with_the_fill_value_outside_the_volume():
    stack = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5)
    out = crop(stack, -2, 3, 4, fill=-9.0)
    assert out.shape == (2, 4, 4)
    np.testing.assert_array_equal(out[:, 2:, :2], stack[:, 0:2, 3:5])
    assert np.all(out[:, :2, :] == -9.0) and np.all(out[:, :, 2:] == -9.0)


@pytest.mark.parametrize("side,size", [(40, 64), (100, 32)])
def test_resize_aligns_pixel_areas(side, size):
    # a linear ramp sampled at pixel centres stays that ramp at the new pixel centres
    centres = np.arange(side) + 0.5
    stack = np.broadcast_to(centres[None, :], (side, side))[None].astype(np.float64)
    out = resize(stack, size)
    expected = (np.arange(size) + 0.5) * side / size
    assert out.shape == (1, size, size)
    np.testing.assert_allclose(out[0, size // 2, 2:-2], expected[2:-2], atol=1e-6)


def test_preprocess_volume_slices_every_tumour_millimetre_at_one_scale():
    radius, margin = 9.0, 6.0
    image, mask, _ = phantom(radius_mm=radius, centre=(2.0, -1.0, 0.4))
    params = Params(size=40, margin_mm=margin, n4=False)
    result = preprocess_volume(image, mask, params)
    s = result.slices
    n = s.z_mm.size
    assert s.image.shape == s.mask.shape == (n, 40, 40)
    np.testing.assert_allclose(np.diff(s.z_mm), 1.0)
    # every 1 mm slice whose centre lies within the sphere's z-extent (up to interpolation)
    assert abs(n - 2 * radius) <= 2
    assert np.all(s.area_mm2 > 0) and np.all(s.mask.reshape(n, -1).any(axis=1))
    # one pixel size for the patient; the crop is the tumour box plus the margin on each side
    assert np.all(s.pixel_mm == s.pixel_mm[0])
    widest = s.area_mm2.argmax()
    diameter_px = s.mask[widest].any(axis=0).sum()
    assert diameter_px * s.pixel_mm[0] == pytest.approx(2 * radius, abs=2.5)
    assert 40 * s.pixel_mm[0] == pytest.approx(2 * radius + 2 * margin, abs=2.5)
    # the native volume, and the resampled one within 3 %
    native = sitk.GetArrayFromImage(mask).sum() * np.prod(mask.GetSpacing()) / 1000
    assert result.tumour_volume_ml == pytest.approx(native)
    assert s.area_mm2.sum() / 1000 == pytest.approx(native, rel=0.03)
    arrays = result.arrays("k")
    assert arrays["image"].dtype == np.float16 and arrays["mask"].dtype == np.uint8
    assert str(arrays["key"]) == "k"


def test_params_from_config_rejects_unknown_and_bad_settings():
    assert Params.from_config({"size": 64, "n4_iterations": [5, 5]}) == \
        Params(size=64, n4_iterations=(5, 5))
    assert repr(Params.from_config({"spacing_mm": 1, "margin_mm": 5}).spacing_mm) == "1.0"
    for section, problem in [
            ({"sise": 64}, "unknown setting preprocess.sise; did you mean preprocess.size?"),
            ({"size": 2}, "preprocess.size 2 is not a whole number of pixels >= 8"),
            ({"size": "64"}, "preprocess.size '64' is not a whole number of pixels >= 8"),
            ({"n4_grid_mm": -1}, "preprocess.n4_grid_mm -1 is not auto or a number of mm >= 0"),
            ({"n4": "false"}, "preprocess.n4 'false' is not true or false")]:
        with pytest.raises(SarcogradeError) as caught:
            Params.from_config(section)
        assert str(caught.value).startswith(problem)


def test_n4_grid_mm_is_a_number_or_auto_and_anything_else_is_a_one_line_error():
    assert Params.from_config({"n4_grid_mm": "auto"}).n4_grid_mm == "auto"
    assert repr(Params.from_config({"n4_grid_mm": 4}).n4_grid_mm) == "4.0"
    for bad in ("fine", "Auto ", None, True, [6]):
        with pytest.raises(SarcogradeError, match=r"^preprocess.n4_grid_mm .* is not auto or a "
                                                  r"number of mm >= 0") as caught:
            Params.from_config({"n4_grid_mm": bad})
        assert "\n" not in str(caught.value)


def test_paper_preset_fits_n4_on_the_auto_grid_and_the_cache_key_says_so():
    paper = Params.from_config(load_preset("paper")["preprocess"])
    assert paper.n4_grid_mm == "auto"
    assert load_settings().preprocess.n4_grid_mm == "auto"  # the radiomics baseline's volume
    # a cache built on the former 6 mm grid is not reused
    assert paper.key_fields() != Params(**{**paper.as_dict(), "n4_grid_mm": 6.0,
                                          "n4_iterations": paper.n4_iterations}).key_fields()


def test_n4_settings_only_count_when_n4_is_on():
    on, off = Params(n4=True), Params(n4=False)
    assert on.key_fields() != Params(n4=True, n4_grid_mm=3.0).key_fields()
    assert off.key_fields() == Params(n4=False, n4_grid_mm=3.0).key_fields()
