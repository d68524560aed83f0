"""The DICOM tags that `io` copies from a series' first slice onto the image, as SimpleITK's
metadata keys ("group|element"), for checking an RTSTRUCT (`rtstruct`), a DICOM SEG (`dicom_seg`)
or a carried contour (`masks`) against the image, and that check of a DICOM contour.

In a module of their own so that `io` and `rtstruct` share them without importing each other:
`io` uses `rtstruct` to read an RTSTRUCT mask, never the other way round.
"""

FRAME_OF_REFERENCE_TAG = "0020|0052"
SERIES_UID_TAG = "0020|000e"


def space_mismatch(reference, frame_of_reference: str, series: set[str]) -> str | None:
    """How a DICOM contour (RTSTRUCT ROI or SEG) does not belong to the image `reference` (a
    SimpleITK image with the tags above, where read from a DICOM series): "is in frame of
    reference A, the image in B" or "was drawn on series A, the image is series B"; None when it
    does, or when the image carries no DICOM tags to compare with."""
    if frame_of_reference and reference.HasMetaDataKey(FRAME_OF_REFERENCE_TAG):
        actual = reference.GetMetaData(FRAME_OF_REFERENCE_TAG).strip()
        if frame_of_reference != actual:
            return f"is in frame of reference {frame_of_reference}, the image in {actual}"
    if series and reference.HasMetaDataKey(SERIES_UID_TAG):
        actual = reference.GetMetaData(SERIES_UID_TAG).strip()
        if actual not in series:
            return f"was drawn on series {', '.join(sorted(series))}, the image is series {actual}"
    return None
