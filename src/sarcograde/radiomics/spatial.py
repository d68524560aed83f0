"""Moran's I and Geary's C of a tumour (IBSI morphology) over every pair of its voxels, exactly.

IBSI weighs each pair of voxels by the inverse of their distance. MIRP computes the two features
in a Python loop: for more than 999 voxels it averages them over random subsets of 100 voxels
until the standard error drops under 0.002 (seconds per tumour, and a value that depends on
MIRP's hash of the input, file paths included), and over every pair only with `no_approximation`
(hours for a large tumour). On a voxel grid the weight depends only on the displacement, so the
sums over all pairs are convolutions of the tumour's fields with the weight kernel: five FFTs of
twice the tumour's bounding box give the exact values (MIRP's `no_approximation` ones) in about
a second for a 200 ml tumour (memory: about 24 bytes per voxel of the doubled box).
`exact_spatial_statistics` makes MIRP use them.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
from scipy import fft


def _inverse_distance_spectrum(shape: list[int], spacing: np.ndarray) -> np.ndarray:
    """The Fourier transform of 1 / distance (mm) for each displacement, laid out circularly on
    `shape` (0 at 0). The kernel is even, so its transform is real: kept as such (half the
    memory of the complex one)."""
    squared = np.zeros(shape)
    for axis, (size, step) in enumerate(zip(shape, spacing)):
        index = np.arange(size)
        offset = np.where(index <= size // 2, index, index - size) * float(step)
        squared += (offset ** 2).reshape([size if a == axis else 1 for a in range(3)])
    squared[0, 0, 0] = np.inf  # a voxel is not its own neighbour: weight 0
    kernel = np.reciprocal(np.sqrt(squared, out=squared), out=squared)
    return np.ascontiguousarray(fft.rfftn(kernel).real)  # a copy: frees the complex one


def moran_geary(positions: np.ndarray, values: np.ndarray,
                spacing: tuple[float, float, float]) -> tuple[float, float]:
    """Moran's I and Geary's C of `values` at the voxel indices `positions` (n x 3, z y x) of a
    grid of `spacing` mm, over all pairs, weights 1 / distance; both 1.0 for a constant image
    (MIRP's convention), as MIRP's `_spatial_distribution` over every pair."""
    n = len(values)
    positions = np.asarray(positions, dtype=np.int64)
    positions = positions - positions.min(axis=0)
    box = positions.max(axis=0) + 1
    # A circular convolution of length >= 2 x box - 1 equals the linear one inside the box.
    shape = [fft.next_fast_len(2 * int(s) - 1, real=True) for s in box]
    where = tuple(positions.T)
    deviation = np.asarray(values, dtype=np.float64) - np.mean(values, dtype=np.float64)
    inside = np.zeros(box, np.float64)
    inside[where] = 1.0
    field = np.zeros(box, np.float64)
    field[where] = deviation
    kernel = _inverse_distance_spectrum(shape, np.asarray(spacing, float))

    def weighted_sum(f: np.ndarray) -> np.ndarray:
        """sum over j of w_ij f_j at each tumour voxel i."""
        spectrum = fft.rfftn(f, s=shape)
        spectrum *= kernel
        return fft.irfftn(spectrum, s=shape, overwrite_x=True)[where]

    around_inside, around_field = weighted_sum(inside), weighted_sum(field)
    weights = 0.5 * around_inside.sum()                        # sum over pairs i < j of w_ij
    cross = 0.5 * np.dot(deviation, around_field)              # ... of w_ij d_i d_j
    squares = np.dot(deviation ** 2, around_inside) - 2.0 * cross  # ... of w_ij (d_i - d_j)^2
    variance = np.dot(deviation, deviation)
    if variance <= 0.0:
        return 1.0, 1.0
    return (float(n * cross / (weights * variance)),
            float((n - 1.0) * squares / (2.0 * weights * variance)))


def _exact_spatial_information(data, image=None, mask=None, allow_approximation=True) -> None:
    """Stand-in for MIRP's `Data3DSpatial.compute_spatial_information` (same signature): the
    exact values for MIRP's own voxels (`data_int`: the re-segmented ROI) and spacing."""
    voxels = data.data_int
    if len(voxels) > 1:
        data.moran_i, data.geary_c = moran_geary(voxels[["z", "y", "x"]].to_numpy(),
                                                 voxels["g"].to_numpy(), data.spacing)


@contextlib.contextmanager
def exact_spatial_statistics() -> Iterator[None]:
    """MIRP computes Moran's I and Geary's C with `moran_geary` while inside."""
    from mirp._features.morph_3d_data import Data3DSpatial

    mirp_own = Data3DSpatial.compute_spatial_information
    Data3DSpatial.compute_spatial_information = _exact_spatial_information
    try:
        yield
    finally:
        Data3DSpatial.compute_spatial_information = mirp_own
