"""A sequence's attention map on its source series' own grid, as a DICOM Parametric Map.

explain computes Grad-CAM on the preprocessed crops: square windows of the resampled, canonical
(LPS, identity direction) volume, resized to the network's input. The cache keeps where each crop
lies (the window's first voxel, its pixel size, each slice's z position), so the map is put back
into patient space as an image of its own and resampled (linear) onto the source series' grid;
outside the tumour's slices and the window it is 0. A viewer overlays it on the series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..formats.cache import read_patient_file
from .codes import private, no_units
from .common import copy_laterality, equipment
from .sources import SourceSeries, derived_uid

SERIES_NUMBER = 9902
CROP_GEOMETRY = ("z_mm", "pixel_mm", "spacing", "origin", "crop_index")


def map_in_patient_space(cam: np.ndarray, crops: dict) -> sitk.Image:
    """The crops' map (n, S, S) as a 3D image in patient coordinates: one plane per resampled
    axial slice from the first tumour slice to the last (0 on slices without tumour)."""
    sx, sy, sz = (float(v) for v in crops["spacing"])
    row, col = (int(v) for v in crops["crop_index"])
    pixel = float(crops["pixel_mm"][0])
    z_mm = np.asarray(crops["z_mm"], dtype=float)
    planes = np.rint((z_mm - z_mm[0]) / sz).astype(int)
    volume = np.zeros((planes.max() + 1, *cam.shape[1:]), np.float32)
    volume[planes] = cam
    image = sitk.GetImageFromArray(volume)
    origin = np.asarray(crops["origin"], dtype=float)
    # crop pixel (0, 0) covers resampled voxels from index (col, row) - 0.5 on: its centre
    image.SetOrigin((origin[0] + (col - 0.5) * sx + pixel / 2,
                     origin[1] + (row - 0.5) * sy + pixel / 2, float(z_mm[0])))
    image.SetSpacing((pixel, pixel, sz))
    image.SetDirection(np.eye(3).ravel().tolist())
    return image


def read_crops(cache_npz: Path) -> dict:
    """Where the patient's crops lie, from its preprocessed cache file."""
    return read_patient_file(cache_npz, CROP_GEOMETRY)


def map_on_source(cam: np.ndarray, crops: dict, source: sitk.Image) -> sitk.Image:
    """The map resampled onto the source series' grid (Float32, 0 outside the crops)."""
    return sitk.Resample(map_in_patient_space(cam.astype(np.float32), crops), source,
                         sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def parametric_map(series: SourceSeries, values: sitk.Image, package_id: str,
                   package_checksum: str):
    import highdicom as hd

    frames = sitk.GetArrayFromImage(values).astype(np.float32)
    top = float(frames.max()) or 1.0
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ATTENTION", lut_explanation="Grad-CAM attention, mean of the fold models",
        unit=no_units(), value_range=(0.0, top), slope=1.0, intercept=0.0,
        quantity_definition=private("ATTENTION_MAP", "Grad-CAM attention"))
    pm = hd.pm.ParametricMap(
        source_images=series.slices, pixel_array=frames,
        series_instance_uid=derived_uid(package_checksum, series.series_uid, "map-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=derived_uid(package_checksum, series.series_uid, "map"),
        instance_number=1, contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        # LINEAR_EXACT: the window of a map whose values lie in 0..1 may be narrower than 1
        voi_lut_transformations=[hd.VOILUTTransformation(
            window_center=top / 2, window_width=top, voi_lut_function="LINEAR_EXACT")],
        content_label="ATTENTION",
        content_description=f"attention of the {series.sequence} models"[:64],
        **equipment(package_id, package_checksum))
    copy_laterality(series, pm)
    return pm
