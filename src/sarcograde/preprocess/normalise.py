"""z-score normalisation with statistics over the body, not the air around it."""

from __future__ import annotations

import numpy as np

from ..errors import SarcogradeError


def zscore(image: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, float, float]:
    """`(image - mean) / sd` with mean and SD over the voxels where `body` is set.

    Air would pull the mean down and inflate the SD by an amount that depends on the field of
    view; over the body the statistics describe the tissue, whatever the crop of the scan.
    Returns the normalised float32 image, the mean and the SD.
    """
    values = image[body.astype(bool)].astype(np.float64)
    if values.size < 2:
        raise SarcogradeError("body mask is empty after resampling; cannot normalise")
    mean, sd = float(values.mean()), float(values.std())
    if not np.isfinite(sd) or sd <= 0:
        raise SarcogradeError(f"image is constant inside the body (SD {sd:g}); cannot normalise")
    return ((image - mean) / sd).astype(np.float32), mean, sd
