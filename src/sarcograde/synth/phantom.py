"""Rendering a synthetic patient (`patients.PatientSpec`) into an MR image and a tumour mask.

The limb's tissues are functions of position in the limb frame, evaluated at the voxel centres
of each sequence's own grid; the tumour (surface, necrosis, texture, oedema) is drawn once on a
2 mm lattice and interpolated onto every grid, so each sequence shows the same tumour in its own
geometry. Tissue grey values follow the sequence name (T1/T2 weighting, fat suppression,
gadolinium); then come a smooth multiplicative bias field, Rician noise and the site's scale.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .patients import OEDEMA_REACH_MM, Grid, PatientSpec, Tumour
from .site import stable_int

AIR, SKIN, FAT, MUSCLE, CORTEX, MARROW, VESSEL = range(7)
TISSUES = ("air", "skin", "fat", "muscle", "cortex", "marrow", "vessel")

# Relative signal of each tissue (tumour ~ 0.6) in native T1 and T2 weighting. The grade
# features are split between the sequences (patients.FEATURE_PROBABILITY): necrosis is nearly
# isointense to viable tumour on T2 here and oedema nearly isointense to muscle with gadolinium,
# so that each sequence carries information the other lacks.
_T1 = {"air": 0.0, "skin": 0.45, "fat": 0.95, "muscle": 0.32, "cortex": 0.03, "marrow": 0.85,
       "vessel": 0.25, "tumour": 0.36, "necrosis": 0.18, "oedema": 0.3}
_T2 = {"air": 0.0, "skin": 0.3, "fat": 0.8, "muscle": 0.2, "cortex": 0.03, "marrow": 0.7,
       "vessel": 0.45, "tumour": 0.62, "necrosis": 0.66, "oedema": 0.52}
# Gadolinium: viable tumour and vessels enhance; necrosis does not; oedema barely.
_GD = {"tumour": 0.72, "vessel": 0.9, "oedema": 0.38, "muscle": 0.36, "skin": 0.5}
_FAT_SUPPRESSION = {"fat": 0.1, "marrow": 0.15}
_CAPSULE_MM, _CAPSULE_FACTOR = 1.5, 0.7
_LATTICE_MM = 2.0


def texture_weights(sequence: str) -> tuple[float, float]:
    """How strongly a sequence shows the tumour's enhancement and T2 heterogeneity (0-1)."""
    name = sequence.upper()
    enhanced = "T1" in name and any(k in name for k in ("GD", "C+", "CE", "POST"))
    if enhanced:
        return 1.0, 0.15
    return (0.3, 0.3) if "T1" in name else (0.15, 1.0)


def contrast(sequence: str) -> dict[str, float]:
    """Tissue signals for a sequence named like T1FSGd, T2FS, T1, T2, STIR, T1C+, ...

    T1 weighting when the name contains T1 (else T2-like); fat suppressed for FS/STIR/SAT/SPAIR;
    contrast-enhanced for GD/C+/CE/POST.
    """
    name = sequence.upper()
    table = dict(_T1 if "T1" in name else _T2)
    if "T1" in name and any(k in name for k in ("GD", "C+", "CE", "POST")):
        table.update(_GD)
    if any(k in name for k in ("FS", "STIR", "SAT", "SPAIR", "SPIR")):
        for tissue, factor in _FAT_SUPPRESSION.items():
            table[tissue] *= factor
    return table


class TumourLattice:
    """The tumour's sequence-independent properties on a 2 mm lattice around it (limb axes).

    Components: signed radial distance to the surface in mm (< 0 inside), necrosis weight, two
    independent textures (unit variance: enhancement, T2) and oedema weight. Every sequence
    interpolates the same lattice onto its own grid, so each shows the same tumour in its own
    geometry (and, through its contrast, the features it can show).
    """

    def __init__(self, tumour: Tumour, rng: np.random.Generator):
        reach = OEDEMA_REACH_MM if tumour.oedema > 0 else 0.0
        a, b, c = np.array(tumour.axes) * tumour.max_radius + reach   # bounding ellipsoid
        cos_a, sin_a = np.cos(tumour.angle), np.sin(tumour.angle)
        half = np.array([np.hypot(a * cos_a, b * sin_a), np.hypot(a * sin_a, b * cos_a), c]) \
            + 2 * _LATTICE_MM
        counts = np.ceil(2 * half / _LATTICE_MM).astype(int) + 1          # x, y, z
        self.origin = np.array(tumour.centre) - half
        x, y, z = (np.arange(n, dtype=np.float32) * _LATTICE_MM - h for n, h in zip(counts, half))
        x, y, z = x[None, None, :], y[None, :, None], z[:, None, None]
        local = np.broadcast_arrays(cos_a * x + sin_a * y, -sin_a * x + cos_a * y, z)
        shape = local[0].shape
        normalised = np.stack([coord / np.float32(semi) for coord, semi in zip(local, tumour.axes)])
        radius = np.sqrt((normalised ** 2).sum(axis=0)) + np.float32(1e-6)
        depth = radius / tumour.boundary(normalised / radius)    # < 1 inside, 1 on the surface
        distance = np.sqrt(sum(coord * coord for coord in local))
        surface = distance * (1 - 1 / depth)                     # radial distance, mm
        fine = _unit_field(rng.standard_normal(shape, dtype=np.float32), 1.0)
        coarse = _unit_field(rng.standard_normal(shape, dtype=np.float32), 2.5)
        t2_texture = _unit_field(rng.standard_normal(shape, dtype=np.float32), 1.0)
        necrosis = np.zeros(shape, np.float32)
        if tumour.necrosis > 0:   # an irregular core with a soft edge
            necrosis = np.clip((tumour.necrosis * (1 + 0.3 * coarse) - depth) / 0.08 + 0.5, 0, 1)
        oedema = np.zeros(shape, np.float32)
        if tumour.oedema > 0:     # feathery, fading with distance, outside the tumour only
            feather = np.clip(0.6 + 0.4 * coarse + 0.3 * fine, 0, 1)
            oedema = tumour.oedema * np.exp(-np.maximum(surface, 0) / tumour.oedema_mm) \
                * feather * ((surface > 0) & (surface < reach))
        self.values = np.stack([surface, necrosis, fine, t2_texture, oedema],
                               axis=-1).astype(np.float32)

    def resample(self, grid: Grid, start: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
        """The lattice on the part of `grid` it covers: numpy slices and an (nz, ny, nx, 5) array.

        `start` is the grid's first voxel centre in the limb frame. The grid's axes must be those
        of the limb frame, permuted or flipped (as every orientation code gives), so that the
        interpolation separates into one linear interpolation per axis.
        """
        direction = np.array(grid.direction).reshape(3, 3)
        values, box, order = self.values, [slice(0, 0)] * 3, [0] * 3
        for axis in (2, 1, 0):   # limb z, y, x: the thick slices first, so the work shrinks early
            image_axis = int(np.argmax(np.abs(direction[axis])))
            step = direction[axis, image_axis] * grid.spacing[image_axis]
            count = values.shape[2 - axis]
            index = np.arange(grid.size[image_axis])
            position = (start[axis] + step * index - self.origin[axis]) / _LATTICE_MM
            index = index[(position >= 0) & (position <= count - 1)]
            position = position[index]
            low = np.clip(np.floor(position).astype(int), 0, count - 2)
            weight = (position - low).astype(np.float32)
            shape = [1, 1, 1, 1]
            shape[2 - axis] = len(index)
            weight = weight.reshape(shape)
            values = np.take(values, low, axis=2 - axis) * (1 - weight) \
                + np.take(values, low + 1, axis=2 - axis) * weight
            if len(index):
                box[2 - image_axis] = slice(int(index[0]), int(index[-1]) + 1)
            order[2 - image_axis] = 2 - axis
        return tuple(box), np.transpose(values, order + [3])


def _unit_field(noise: np.ndarray, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(noise, sigma, mode="wrap")
    return (field - field.mean()) / field.std()


def _voxel_coordinates(spec: PatientSpec, sequence: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Limb-frame x, y, z of every voxel centre, as arrays broadcastable to (nz, ny, nx), and
    the first voxel's position."""
    grid = spec.grids[sequence]
    direction = np.array(grid.direction).reshape(3, 3)
    steps = []
    for axis, (n, spacing) in enumerate(zip(grid.size, grid.spacing)):
        shape = [1, 1, 1]
        shape[2 - axis] = n                    # numpy order is (k, j, i)
        steps.append((np.arange(n, dtype=np.float32) * np.float32(spacing)).reshape(shape))
    start = np.array(grid.origin) - np.array(spec.anatomy.world_offset)
    coords = []
    for row in range(3):
        value = np.float32(start[row])
        for axis in range(3):
            if direction[row, axis] != 0:
                value = value + np.float32(direction[row, axis]) * steps[axis]
        coords.append(np.asarray(value, dtype=np.float32))
    return coords, start


def _paint(labels: np.ndarray, where: np.ndarray, tissue: int) -> None:
    labels[np.broadcast_to(where, labels.shape)] = tissue


def _tissue_labels(spec: PatientSpec, x, y, z, shape) -> np.ndarray:
    body = spec.anatomy
    labels = np.full(shape, AIR, dtype=np.uint8)
    rho = np.sqrt((x / body.ellipticity) ** 2 + y ** 2)
    toward_thick_fat = (x * np.cos(body.fat_phase) + y * np.sin(body.fat_phase)) / (rho + 1e-3)
    fat = body.fat_mm * (1 + 0.35 * toward_thick_fat)
    fascia = body.muscle_radius * (1 + body.taper * (z - body.fov_centre[2]) / (body.fov_z / 2))
    _paint(labels, rho < fascia + fat + 1.5, SKIN)
    _paint(labels, rho < fascia + fat, FAT)
    _paint(labels, rho < fascia, MUSCLE)
    bx, by = body.bone_centre
    dx, dy = x - bx, y - by
    for angle in body.septa:   # thin fat planes between muscles, radiating from the bone
        plane = (np.abs(dx * np.sin(angle) - dy * np.cos(angle)) < 0.6) \
            & (dx * np.cos(angle) + dy * np.sin(angle) > body.bone_radius)
        labels[np.broadcast_to(plane, shape) & (labels == MUSCLE)
               & np.broadcast_to(rho < fascia - 1, shape)] = FAT
    bone_r = np.sqrt(dx ** 2 + dy ** 2)
    _paint(labels, bone_r < body.bone_radius, CORTEX)
    _paint(labels, bone_r < body.bone_radius - body.cortex_mm, MARROW)
    for vx, vy, radius in body.vessels:
        _paint(labels, (x - vx) ** 2 + (y - vy) ** 2 < radius ** 2, VESSEL)
    return labels


def _tumour_signal(tumour: Tumour, sequence: str, values: np.ndarray, signal: np.ndarray,
                   tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signal and mask where the lattice `values` (..., 5) lie over `signal` and `tissue`."""
    table = contrast(sequence)
    surface, necrosis, texture, t2_texture, oedema = np.moveaxis(values, -1, 0)
    inside = surface < 0
    weight_enhancement, weight_t2 = texture_weights(sequence)
    variation = weight_enhancement * tumour.enhancement_heterogeneity * texture \
        + weight_t2 * tumour.t2_heterogeneity * t2_texture
    viable = table["tumour"] * np.maximum(1 + variation, 0.05)
    tumour_signal = viable * (1 - necrosis) + table["necrosis"] * (1 + 0.08 * texture) * necrosis
    if tumour.capsule:
        tumour_signal = np.where(surface > -_CAPSULE_MM, tumour_signal * _CAPSULE_FACTOR,
                                 tumour_signal)
    soft = np.isin(tissue, (MUSCLE, FAT, SKIN))
    surrounding = np.where(soft, signal * (1 - oedema) + table["oedema"] * oedema, signal)
    return np.where(inside, tumour_signal, surrounding).astype(np.float32), inside


def _bias_field(rng: np.random.Generator, spec: PatientSpec, x, y, z,
                strength: float) -> np.ndarray:
    """exp of a random quadratic polynomial, scaled so its largest deviation is `strength`."""
    body = spec.anatomy
    u = x / (body.fov_xy / 2)
    v = y / (body.fov_xy / 2)
    w = (z - body.fov_centre[2]) / (body.fov_z / 2)
    c = rng.normal(size=7).astype(np.float32)
    log_field = c[0] * u + c[1] * v + c[2] * w + c[3] * u * u + c[4] * v * v + c[5] * u * v \
        + c[6] * w * w
    log_field = log_field - (log_field.max() + log_field.min()) / 2
    peak = float(np.abs(log_field).max())
    scale = np.float32(np.log1p(strength) / peak) if peak > 0 else np.float32(0)
    return np.exp(log_field * scale)


def render(spec: PatientSpec, sequence: str, lattice: TumourLattice, noise: float,
           bias: float) -> tuple[sitk.Image, sitk.Image]:
    """The image (int16) and tumour mask (uint8, 0/1) of one sequence, on its own grid."""
    grid = spec.grids[sequence]
    shape = grid.size[::-1]
    (x, y, z), start = _voxel_coordinates(spec, sequence)
    labels = _tissue_labels(spec, x, y, z, shape)
    table = contrast(sequence)
    signal = np.array([table[t] for t in TISSUES], dtype=np.float32)[labels]
    mask = np.zeros(shape, dtype=np.uint8)
    box, values = lattice.resample(grid, start)
    signal[box], mask[box] = _tumour_signal(spec.tumour, sequence, values, signal[box],
                                            labels[box])

    rng = np.random.default_rng([spec.render_seed, stable_int(sequence)])
    signal *= _bias_field(rng, spec, x, y, z, bias)
    sigma = np.float32(noise * table["tumour"])   # Rician: magnitude of a complex signal
    real = signal + sigma * rng.standard_normal(shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(shape, dtype=np.float32)
    stored = np.sqrt(real * real + imag * imag) * np.float32(spec.scale / table["tumour"])
    image = sitk.GetImageFromArray(np.clip(np.rint(stored), 0, 32767).astype(np.int16))
    mask_image = sitk.GetImageFromArray(mask)
    for im in (image, mask_image):
        im.SetSpacing(grid.spacing)
        im.SetOrigin(grid.origin)
        im.SetDirection(grid.direction)
    return image, mask_image
