"""A look at a synthetic cohort: each sequence's largest axial tumour slice, mask outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..artifacts import save_figure
from ..cohort import load_manifest
from ..masks import mask_source, read_patient_mask
from ..sequence_image import read_sequence_image, sequence_image


def axial_view(image: sitk.Image, mask: sitk.Image) -> tuple[np.ndarray, np.ndarray, float]:
    """The axial slice with the most tumour, in radiological display (LPS array: rows P, cols L),
    its mask, and the pixel aspect ratio (height / width)."""
    image, mask = sitk.DICOMOrient(image, "LPS"), sitk.DICOMOrient(mask, "LPS")
    m = sitk.GetArrayFromImage(mask)
    k = int(np.argmax(m.reshape(len(m), -1).sum(axis=1)))
    spacing = image.GetSpacing()
    return sitk.GetArrayFromImage(image)[k].astype(float), m[k], spacing[1] / spacing[0]


def save_preview(manifest: str | Path, target: str | Path, max_patients: int = 8) -> None:
    """A grid of patients (columns) x sequences (rows) with grade in the titles, as PNG."""
    import matplotlib.pyplot as plt

    cohort = load_manifest(manifest, strict=True)
    patients = cohort.patients[:max_patients]
    rows = len(cohort.sequences)
    fig, axes = plt.subplots(rows, len(patients), figsize=(2.2 * len(patients), 2.3 * rows),
                             squeeze=False)
    for col, patient in enumerate(patients):
        for row, seq in enumerate(cohort.sequences):
            image = read_sequence_image(patient.patient_id, sequence_image(patient, seq))
            # an empty mask cell: the carried contour
            mask = read_patient_mask(patient.patient_id, image, mask_source(patient, seq))
            pixels, outline, aspect = axial_view(image, mask)
            ax = axes[row, col]
            ax.imshow(pixels, cmap="gray", vmin=0, vmax=np.percentile(pixels, 99.5), aspect=aspect)
            ax.contour(outline, levels=[0.5], colors="tab:orange", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{patient.patient_id}\nG{patient.grade}", fontsize=8)
            if col == 0:
                ax.set_ylabel(seq, fontsize=8)
    fig.suptitle("synthetic cohort: largest tumour slice (orange: mask; oedema lies outside it)",
                 fontsize=9)
    save_figure(fig, target)
