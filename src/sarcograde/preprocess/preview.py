"""A PNG montage of a patient's cached slices with the tumour contour, to eyeball the crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..artifacts import save_figure
from ..formats.cache import read_patient_file

MAX_PANELS = 16


def save_preview(npz_path: Path, png_path: Path, title: str) -> None:
    """Up to 16 slices evenly spread through the tumour, one grey scale, mask contour in red."""
    npz = read_patient_file(npz_path, ("image", "mask", "z_mm", "pixel_mm"), title)
    n = npz["z_mm"].shape[0]
    picks = np.unique(np.linspace(0, n - 1, min(n, MAX_PANELS)).round().astype(int))
    images = npz["image"][picks].astype(np.float32)
    masks = npz["mask"][picks]
    z_mm, pixel_mm = npz["z_mm"][picks], float(npz["pixel_mm"][0])
    low, high = np.percentile(images, [1, 99])
    cols = int(np.ceil(np.sqrt(len(picks))))
    rows = int(np.ceil(len(picks) / cols))
    fig = Figure(figsize=(2.2 * cols, 2.2 * rows + 0.4))
    for i, ax in enumerate(fig.subplots(rows, cols, squeeze=False).ravel()):
        ax.set_axis_off()
        if i >= len(picks):
            continue
        ax.imshow(images[i], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        if masks[i].any():
            ax.contour(masks[i], levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"z {z_mm[i]:.0f} mm", fontsize=8)
    fig.suptitle(f"{title}: {n} slices, pixel {pixel_mm:.2f} mm", fontsize=10)
    save_figure(fig, png_path)
