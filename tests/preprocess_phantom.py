"""Small seeded synthetic MR volumes for the preprocessing tests: a limb-like elliptic cylinder
of uniform tissue in air, a spherical tumour, an optional multiplicative bias field."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

TISSUE, TUMOUR, AIR_NOISE = 100.0, 60.0, 2.0


def voxel_centres(shape_zyx, spacing, origin):
    """Physical x, y, z of every voxel centre of an identity-direction grid, each (z, y, x)."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape_zyx), indexing="ij")
    return (origin[0] + x * spacing[0], origin[1] + y * spacing[1], origin[2] + z * spacing[2])


def to_image(array: np.ndarray, spacing, origin, direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection(np.eye(3).ravel().tolist() if direction is None else list(direction))
    return image


def phantom(shape_zyx=(16, 48, 48), spacing=(1.5, 1.5, 3.0), radius_mm=10.0,
            centre=(3.0, -2.0, 1.0), bias: float = 0.0, seed: int = 0):
    """(image, mask, body) with the body an elliptic cylinder along z (semi-axes 45% and 38% of
    the in-plane field of view), a tumour sphere of `radius_mm` at `centre` (mm), and a bias
    field exp(bias * smooth ramp) multiplying the tissue (range about exp(+-bias))."""
    spacing = np.asarray(spacing, float)
    extent = (np.array(shape_zyx[::-1]) - 1) * spacing
    origin = -extent / 2
    x, y, z = voxel_centres(shape_zyx, spacing, origin)
    body = (x / (0.45 * extent[0])) ** 2 + (y / (0.38 * extent[1])) ** 2 <= 1
    tumour = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) <= radius_mm ** 2
    rng = np.random.default_rng(seed)
    signal = np.where(body, TISSUE, 0.0)
    signal[tumour] = TUMOUR
    field = np.exp(bias * (x / extent[0] + (y / extent[1]) ** 2 - z / (2 * extent[2])))
    noisy = np.abs(signal * field + AIR_NOISE * rng.standard_normal(signal.shape))
    return (to_image(noisy.astype(np.float32), spacing, origin),
            to_image(tumour.astype(np.uint8), spacing, origin), body)


def stored_ras(image: sitk.Image) -> sitk.Image:
    """The same physical image stored RAS: x and y array axes flipped, direction diag(-1,-1,1)."""
    array = sitk.GetArrayFromImage(image)[:, ::-1, ::-1]
    size, spacing, origin = image.GetSize(), np.array(image.GetSpacing()), np.array(image.GetOrigin())
    corner = origin + np.array([size[0] - 1, size[1] - 1, 0]) * spacing
    return to_image(np.ascontiguousarray(array), spacing, corner, (-1, 0, 0, 0, -1, 0, 0, 0, 1))


def stored_transposed(image: sitk.Image) -> sitk.Image:
    """The same physical image with the first two index axes swapped (rows along x)."""
    array = sitk.GetArrayFromImage(image).transpose(0, 2, 1)
    sx, sy, sz = image.GetSpacing()
    return to_image(np.ascontiguousarray(array), (sy, sx, sz), image.GetOrigin(),
                    (0, 1, 0, 1, 0, 0, 0, 0, 1))
