"""The DICOM tags that `io` copies from a series' first slice onto the image, as SimpleITK's
metadata keys ("group|element"), for checking an RTSTRUCT (`rtstruct`) or a carried contour
(`masks`) against the image.

In a module of their own so that `io` and `rtstruct` share them without importing each other:
`io` uses `rtstruct` to read an RTSTRUCT mask, never the other way round.
"""

FRAME_OF_REFERENCE_TAG = "0020|0052"
SERIES_UID_TAG = "0020|000e"
