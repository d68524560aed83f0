"""The body mask: the voxels of the patient rather than the air around them."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import SarcogradeError

# Fewer body voxels than this share of the volume means the threshold found noise, not a body.
MIN_BODY_FRACTION = 0.01


def body_mask(image: sitk.Image) -> sitk.Image:
    """A UInt8 0/1 mask of the body in a canonically oriented (axial slices first) image.

    Otsu's threshold on log intensities separates air from tissue; on raw intensities it would
    rather split muscle from fat on T1. The largest connected component is kept (no noise
    specks), and holes are filled in every axial slice (bone cortex, vessels, dark tumour parts).
    """
    low = float(sitk.GetArrayViewFromImage(image).min())
    log = sitk.Log(sitk.Cast(image, sitk.sitkFloat32) - low + 1.0)
    foreground = sitk.OtsuThreshold(log, 0, 1)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True)
    largest = sitk.GetArrayFromImage(components) == 1
    filled = np.stack([ndimage.binary_fill_holes(axial) for axial in largest]).astype(np.uint8)
    if filled.mean() < MIN_BODY_FRACTION:
        raise SarcogradeError(f"no body found in the image (only {filled.mean():.2%} of voxels "
                              "above the air threshold)")
    mask = sitk.GetImageFromArray(filled)
    mask.CopyInformation(image)
    return mask
