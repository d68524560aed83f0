"""A sequence's attention montage (explain's PNG: the tumour's slices with the map over them) as
a DICOM Secondary Capture, for viewers that cannot overlay a Parametric Map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import MANUFACTURER, copy_laterality
from .sources import SourceSeries, derived_uid

SERIES_NUMBER = 9903


def secondary_capture(series: SourceSeries, montage: Path, package_checksum: str):
    import highdicom as hd
    from PIL import Image

    with Image.open(montage) as picture:
        pixels = np.asarray(picture.convert("RGB"), dtype=np.uint8)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=series.slices[0], pixel_array=pixels, photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT",
        series_instance_uid=derived_uid(package_checksum, series.series_uid, "montage-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=derived_uid(package_checksum, series.series_uid, "montage"),
        instance_number=1, manufacturer=MANUFACTURER,
        # the montage's tiles are axial slices of the canonical volume: columns run to the
        # patient's left, rows to posterior
        patient_orientation=("L", "P"))
    copy_laterality(series, sc)
    return sc
