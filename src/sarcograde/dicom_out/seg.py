"""The contour `grade` used on one sequence, as a DICOM Segmentation (binary, one segment) on
that sequence's source series: drawn there (MANUAL) or carried from the sequence it was drawn on
(SEMIAUTOMATIC: resampled by sarcograde). PACS viewers show it over the series; the SR refers to
its segment."""

from __future__ import annotations

from pydicom.sr.codedict import codes

from .. import __version__
from .common import equipment
from .sources import SourceSeries, derived_uid

SEGMENT_LABEL = "tumour"
SERIES_NUMBER = 9901


def segmentation(series: SourceSeries, package_id: str, package_checksum: str, carried: bool):
    import highdicom as hd

    algorithm = None
    if carried:
        algorithm = hd.AlgorithmIdentificationSequence(
            name="sarcograde contour carrying", family=codes.DCM.ImageProcessing,
            version=__version__)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if carried
                        else hd.seg.SegmentAlgorithmTypeValues.MANUAL),
        algorithm_identification=algorithm)
    return hd.seg.Segmentation(
        source_images=series.slices, pixel_array=series.mask_frames(),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=derived_uid(package_checksum, series.series_uid, "seg-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=derived_uid(package_checksum, series.series_uid, "seg"),
        instance_number=1, content_label="TUMOUR",
        content_description=f"tumour contour graded on {series.sequence}"[:64],
        omit_empty_frames=False, **equipment(package_id, package_checksum))
