"""Moran's I and Geary's C by FFT against MIRP's own computation over every pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sarcograde.radiomics.spatial import exact_spatial_statistics, moran_geary


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.27, 0.98, 0.98)])
def test_equal_to_mirps_sum_over_every_pair(spacing):
    from mirp._features.morph_3d_data import Data3DSpatial

    rng = np.random.default_rng(5)
    positions = np.argwhere(rng.random((9, 8, 10)) < 0.4) + [4, 0, 7]  # scattered, off origin
    values = rng.normal(size=len(positions)) + 0.2 * positions[:, 0]
    mirp = Data3DSpatial()
    mirp.spacing = spacing
    voxels = pd.DataFrame({"z": positions[:, 0], "y": positions[:, 1], "x": positions[:, 2],
                           "g": values})
    expected = mirp._spatial_distribution(voxels)  # brute force: fewer than 2000 voxels
    assert moran_geary(positions, values, spacing) == pytest.approx(expected, rel=1e-9)


def test_a_constant_image_gives_one_and_two_voxels_suffice():
    positions = np.array([[0, 0, 0], [0, 0, 1], [2, 3, 1]])
    assert moran_geary(positions, np.full(3, 0.5), (1.0, 1.0, 1.0)) == (1.0, 1.0)
    # two voxels: one pair, w cancels; Moran 2 d1 d2 / (d1^2 + d2^2) = -1, Geary (2d)^2/(2 2d^2)
    assert moran_geary(positions[:2], np.array([0.0, 1.0]), (2.0, 2.0, 2.0)) == (
        pytest.approx(-1.0), pytest.approx(1.0))


def test_mirps_method_is_restored_after_use():
    from mirp._features.morph_3d_data import Data3DSpatial

    own = Data3DSpatial.compute_spatial_information
    with pytest.raises(RuntimeError), exact_spatial_statistics():
        assert Data3DSpatial.compute_spatial_information is not own
        raise RuntimeError
    assert Data3DSpatial.compute_spatial_information is own
