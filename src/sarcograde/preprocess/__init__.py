"""Preprocessing of one MR sequence into the slice cache that training and prediction read.

Per patient: canonical orientation, N4 bias-field correction inside a body mask, resampling to
1 mm isotropic, z-score over the body and square crops of every axial slice with tumour
(`pipeline.preprocess_volume`). `stage` is the `sarcograde preprocess` command that runs it over
a cohort into a resumable cache (format: docs/artifacts.md).
"""

from .pipeline import (NormalisedVolume, Params, Preprocessed, load_patient, normalise_volume,
                       preprocess_volume)

__all__ = ["NormalisedVolume", "Params", "Preprocessed", "load_patient", "normalise_volume",
           "preprocess_volume"]
