"""Square crops of every axial slice with tumour, resized to the network's input size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import SarcogradeError


@dataclass
class TumourSlices:
    image: np.ndarray        # (n, size, size) float32
    mask: np.ndarray         # (n, size, size) uint8
    z_mm: np.ndarray         # (n,) slice positions along the axial axis
    area_mm2: np.ndarray     # (n,) tumour area of each slice before the crop
    pixel_mm: np.ndarray     # (n,) edge of one output pixel
    crop_index: np.ndarray   # (2,) (row, column) of the crop's first voxel; negative if padded


def square_box(mask: np.ndarray, margin_vox: int) -> tuple[int, int, int]:
    """(row, column, side) of one square around the tumour's in-plane bounding box over all
    slices, `margin_vox` wider on each side of its longer edge.

    One box per patient gives every slice of the patient the same pixel size, so the network
    sees the tumour's size and texture at one scale; a box per slice would blow the small end
    slices of a tumour up to the size of its largest section.
    """
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    side = int(max(height, width) + 2 * margin_vox)
    return int(rows[0] - (side - height) // 2), int(cols[0] - (side - width) // 2), side


def crop(stack: np.ndarray, row: int, col: int, side: int, fill: float) -> np.ndarray:
    """`stack[:, row:row+side, col:col+side]`, with `fill` where the window leaves the stack."""
    n, height, width = stack.shape
    out = np.full((n, side, side), fill, dtype=stack.dtype)
    r0, r1 = max(row, 0), min(row + side, height)
    c0, c1 = max(col, 0), min(col + side, width)
    if r0 < r1 and c0 < c1:
        out[:, r0 - row:r1 - row, c0 - col:c1 - col] = stack[:, r0:r1, c0:c1]
    return out


def resize(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize the last two axes of a float stack to `size` x `size` by linear interpolation,
    pixel areas aligned (edges on edges), smoothed first when shrinking so as not to alias."""
    factor = size / stack.shape[-1]
    if factor < 1:
        sigma = (1 / factor - 1) / 2  # the anti-aliasing width of skimage.transform.resize
        stack = ndimage.gaussian_filter(stack, sigma=(0, sigma, sigma), mode="nearest")
    return ndimage.zoom(stack, (1, factor, factor), order=1, mode="nearest", grid_mode=True)


def tumour_slices(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
                  origin: tuple[float, float, float], margin_mm: float, size: int,
                  background: float) -> TumourSlices:
    """Crops of every axial slice of a canonical (z, y, x) volume that contains tumour.

    `spacing` and `origin` are in ITK (x, y, z) order, of an identity-direction grid.
    """
    sx, sy, sz = spacing
    if not np.isclose(sx, sy):
        raise SarcogradeError(f"in-plane spacing {sx:g} x {sy:g} mm is not square")
    keep = np.flatnonzero(mask.any(axis=(1, 2)))
    if keep.size == 0:
        raise SarcogradeError("tumour mask is empty after resampling")
    row, col, side = square_box(mask, int(round(margin_mm / sx)))
    image_crops = crop(image[keep].astype(np.float32), row, col, side, background)
    mask_crops = crop(mask[keep].astype(np.float32), row, col, side, 0.0)
    n = keep.size
    return TumourSlices(
        image=resize(image_crops, size),
        mask=(resize(mask_crops, size) >= 0.5).astype(np.uint8),
        z_mm=origin[2] + keep * sz,
        area_mm2=mask[keep].sum(axis=(1, 2)) * sx * sy,
        pixel_mm=np.full(n, side * sx / size),
        crop_index=np.array([row, col], dtype=np.int64),
    )
