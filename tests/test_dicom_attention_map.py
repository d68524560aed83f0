"""The attention map back on the source series' grid: a map that is the preprocessed tumour
itself (explain's crops of a synthetic patient whose signal sits in the tumour), put back through
the crops' geometry onto a flipped, rotated, anisotropic DICOM series, covers the drawn tumour
(Dice > 0.85) and peaks inside it; the Parametric Map written from it has the source series'
grid frame by frame and the same values, and dciodvfy finds no error in it."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from sarcograde.dicom_out.attention_map import map_on_source, parametric_map
from sarcograde.dicom_out.sources import SourceSeries, slice_headers
from sarcograde.io import read_image
from sarcograde.preprocess.pipeline import Params, preprocess_volume
from dicom_exam import write_series


@pytest.fixture
def patient(tmp_path):
    """A DICOM series (x flipped, rotated 15 degrees, 0.9 x 0.9 x 3 mm) with a bright ellipsoid
    tumour, read back as grade reads it, and the tumour mask on its grid."""
    image = sitk.Image(64, 56, 14, sitk.sitkInt16)
    image.SetSpacing((0.9, 0.9, 3.0))
    image.SetOrigin((40.0, -20.0, 15.0))
    c, s = math.cos(math.radians(15)), math.sin(math.radians(15))
    image.SetDirection((-c, -s, 0, -s, c, 0, 0, 0, 1))
    z, y, x = np.mgrid[:14, :56, :64]
    tumour = ((x - 30) / 12) ** 2 + ((y - 26) / 9) ** 2 + ((z - 7) / 3.5) ** 2 < 1
    rng = np.random.default_rng(3)
    voxels = (200 + 20 * rng.normal(size=tumour.shape) + 600 * tumour).astype(np.int16)
    written = sitk.GetImageFromArray(voxels)
    written.CopyInformation(image)
    folder = tmp_path / "series"
    uid, _ = write_series(written, folder, "T1 axial", 1)
    source = read_image(folder)
    mask = sitk.GetImageFromArray(tumour.astype(np.uint8))
    mask.CopyInformation(image)
    # the mask on the grid as read (GDCM orders the slices along their normal)
    mask = sitk.Resample(mask, source, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return folder, uid, source, mask


def _crops_map(source, mask):
    pre = preprocess_volume(sitk.Cast(source, sitk.sitkFloat32), mask, Params(size=32, n4=False))
    crops = {"z_mm": pre.slices.z_mm, "pixel_mm": pre.slices.pixel_mm, "spacing": pre.spacing,
             "origin": pre.origin, "crop_index": pre.slices.crop_index}
    return pre.slices.mask.astype(np.float32), crops


def test_a_map_of_the_tumour_lands_on_the_tumour(patient):
    _, _, source, mask = patient
    cam, crops = _crops_map(source, mask)
    back = map_on_source(cam, crops, source)
    assert back.GetSize() == source.GetSize()
    assert back.GetOrigin() == source.GetOrigin() and back.GetSpacing() == source.GetSpacing()
    assert back.GetDirection() == source.GetDirection()
    values = sitk.GetArrayFromImage(back)
    drawn = sitk.GetArrayFromImage(mask).astype(bool)
    covered = values >= 0.5
    dice = 2 * (covered & drawn).sum() / (covered.sum() + drawn.sum())
    assert dice > 0.85, dice
    assert drawn[np.unravel_index(np.argmax(values), values.shape)]
    # a map peaked at one crop pixel peaks at the matching place of the source
    peaked = np.zeros_like(cam)
    k = len(cam) // 2
    row, col = np.argwhere(cam[k] > 0).mean(axis=0).round().astype(int)
    peaked[k, row, col] = 1.0
    spot = sitk.GetArrayFromImage(map_on_source(peaked, crops, source))
    assert drawn[np.unravel_index(np.argmax(spot), spot.shape)]


def test_parametric_map_is_on_the_source_grid_with_the_map_values(patient, tmp_path):
    folder, uid, source, mask = patient
    cam, crops = _crops_map(source, mask)
    back = map_on_source(cam, crops, source)
    slices = slice_headers(folder, uid, source)
    pm = parametric_map(SourceSeries("T1", slices, source, mask), back, "0123456789abcdef",
                        "0" * 64)
    path = tmp_path / "attention.dcm"
    pm.save_as(path)
    pm = pydicom.dcmread(path)
    shared = pm.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == pytest.approx(
        [float(v) for v in slices[0].PixelSpacing])
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == \
        pytest.approx([float(v) for v in slices[0].ImageOrientationPatient])
    # frames in highdicom's order: each is matched to the source slice at its position
    at = {tuple(np.round([float(v) for v in s.ImagePositionPatient], 4)): k
          for k, s in enumerate(slices)}
    frames = [at[tuple(np.round([float(v) for v in f.PlanePositionSequence[0]
                                 .ImagePositionPatient], 4))]
              for f in pm.PerFrameFunctionalGroupsSequence]
    assert sorted(frames) == list(range(source.GetDepth()))
    np.testing.assert_array_equal(pm.pixel_array, sitk.GetArrayFromImage(back)[frames])
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; .ci/run installs it)")
    report = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True)
    assert [line for line in (report.stdout + report.stderr).splitlines()
            if line.startswith("Error")] == []
