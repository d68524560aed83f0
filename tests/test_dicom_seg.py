"""A DICOM SEG as a tumour contour: on a rotated, anisotropic DICOM series, a contour written as
an RTSTRUCT and, rasterised, as a DICOM SEG (by `grade --dicom-out`'s writer) reads back voxel
for voxel the same; a SEG with two segments is refused in one line listing them unless one is
named; another frame of reference or another series is refused as for an RTSTRUCT."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from sarcograde.dicom_out.seg import segmentation
from sarcograde.dicom_out.sources import SourceSeries, slice_headers
from sarcograde.errors import SarcogradeError
from sarcograde.io import read_image, read_mask
from dicom_exam import FRAME_OF_REFERENCE, write_series
from test_rtstruct import _physical, _square, write_rtstruct


@pytest.fixture
def series(tmp_path):
    """A 40 x 36 x 5 series rotated 30 degrees in-plane, read back as `grade` reads it."""
    image = sitk.Image(40, 36, 5, sitk.sitkInt16)
    image.SetSpacing((0.5, 0.8, 2.5))
    image.SetOrigin((12.0, -30.0, 40.0))
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    image.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
    folder = tmp_path / "series"
    uid, _ = write_series(image, folder, "T1 axial", 1)
    return folder, uid, read_image(folder)


@pytest.fixture
def contour(tmp_path, series):
    """The same contour as an RTSTRUCT and as a SEG, and the mask the RTSTRUCT gives."""
    folder, uid, reference = series
    polygons = [_physical(reference, _square(5.3, 20.6, 4.2, 17.8, k)) for k in (1, 2)]
    polygons.append(_physical(reference, _square(9.5, 30.2, 8.0, 30.5, 3)))
    rtstruct = write_rtstruct(tmp_path / "RS.dcm", {"GTV": polygons})
    ds = pydicom.dcmread(rtstruct)
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE
    ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID = FRAME_OF_REFERENCE
    ds.save_as(rtstruct)
    drawn = read_mask(rtstruct, reference)
    source = SourceSeries("T1", slice_headers(folder, uid, reference), reference, drawn)
    seg = tmp_path / "seg.dcm"
    segmentation(source, "0123456789abcdef", "0" * 64, carried=False).save_as(seg)
    return rtstruct, seg, drawn


def test_seg_in_equals_rtstruct_in_voxel_for_voxel(series, contour):
    _, _, reference = series
    rtstruct, seg, drawn = contour
    from_seg = read_mask(seg, reference)
    expected = sitk.GetArrayFromImage(drawn)
    assert expected.sum() > 100 and expected[[0, 4]].sum() == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(from_seg), expected)
    assert from_seg.GetOrigin() == reference.GetOrigin()
    assert from_seg.GetDirection() == reference.GetDirection()
    # the label chooses the segment as roi_<SEQ> does, case-insensitive
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_mask(seg, reference, "TUMOUR")),
                                  expected)


def _two_segments(seg_path, reference, tmp_path):
    """A SEG with segments 'tumour' (the contour) and 'oedema' (a box on slice 2)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frames = sitk.GetArrayFromImage(read_mask(seg_path, reference)).astype(np.uint8)
    frames[2, 30:34, 30:38] = 2
    slices = [pydicom.dcmread(f) for f in sorted((tmp_path / "series").iterdir())]
    slices.sort(key=lambda d: int(d.InstanceNumber))
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type="MANUAL")
        for n, label in ((1, "tumour"), (2, "oedema"))]
    seg = hd.seg.Segmentation(
        source_images=slices, pixel_array=frames, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=5,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test",
        manufacturer_model_name="test", software_versions="1", device_serial_number="1")
    path = tmp_path / "two.dcm"
    seg.save_as(path)
    return path, frames


def test_two_segments_need_a_label(series, contour, tmp_path):
    _, _, reference = series
    _, seg, drawn = contour
    path, frames = _two_segments(seg, reference, tmp_path)
    with pytest.raises(SarcogradeError) as refused:
        read_mask(path, reference)
    line = str(refused.value)
    assert len(line.splitlines()) == 1 and "2 segments" in line
    assert "'tumour'" in line and "'oedema'" in line and "roi_<SEQ>" in line
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_mask(path, reference, "oedema")),
                                  (frames == 2).astype(np.uint8))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_mask(path, reference, "tumour")),
                                  sitk.GetArrayFromImage(drawn))
    with pytest.raises(SarcogradeError, match="no segment labelled 'gtv'"):
        read_mask(path, reference, "gtv")


@pytest.mark.parametrize("attribute, message", [
    ("FrameOfReferenceUID", "frame of reference"), ("ReferencedSeriesSequence", "drawn on series")])
def test_seg_of_another_frame_or_series_is_refused(series, contour, tmp_path, attribute, message):
    _, _, reference = series
    _, seg, _ = contour
    ds = pydicom.dcmread(seg)
    if attribute == "FrameOfReferenceUID":
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.999"
    else:
        ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.998"
    ds.save_as(tmp_path / "moved.dcm")
    with pytest.raises(SarcogradeError, match=message) as refused:
        read_mask(tmp_path / "moved.dcm", reference)
    assert len(str(refused.value).splitlines()) == 1 and "moved.dcm" in str(refused.value)
