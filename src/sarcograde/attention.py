"""Grad-CAM maps of an ensemble and the share of attention inside, around and away from the tumour.

Target. A two-logit network decides by the difference of its logits alone, so the map explains
the margin `logit(c) - logit(other)` of a class c (for two classes this is the direction of
the gradient of log p(c)): Grad-CAM of the patient's predicted class shows the evidence for that
prediction against the other class. The paper shows its maps with the prediction (figures 4-5),
both for high and low grade.

Ensemble. Each model's map of a slice is scaled to sum 1 before the models are averaged, so that
every model has the same say whatever the scale of its gradients.

Scores. A slice's map (non-negative) is normalised to sum 1 and split into the tumour mask, a ring
of `ring_mm` around it (Euclidean distance in mm, from the NPZ's pixel size) and the rest; the
three shares sum to 1. The patient's shares are the mean over slices with any attention, each
slice weighted equally, as each slice counts equally in the prediction.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.visualize import GradCAM, GradCAMpp
from monai.visualize.class_activation_maps import ModelWithHooks
from scipy.ndimage import distance_transform_edt
from torch import nn

from . import model as model_lib

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMpp}


class MarginHooks(ModelWithHooks):
    """MONAI's model hooks with the score of class c set to `logit(c) - logit(other)`."""

    def class_score(self, logits: torch.Tensor, class_idx: int) -> torch.Tensor:
        margin = logits[:, class_idx] - logits[:, 1 - class_idx]
        # Shaped (b, 1, 1, 1) so that Grad-CAM++ scales each slice's gradients by its own score
        # (MONAI squeezes it to (b,), which breaks batches); valued 0 with the margin's gradient,
        # since exp(score), Grad-CAM++'s per-slice factor, can overflow and cancels in
        # `normalise_per_slice` anyway.
        return (margin - margin.detach()).reshape(-1, 1, 1, 1)


def cam_explainers(models: list[nn.Module], method: str = "gradcam",
                   layer: str = model_lib.GRADCAM_LAYER) -> list:
    """One MONAI Grad-CAM (or Grad-CAM++) per model on `layer`, returning raw maps (no rescaling:
    MONAI's default min-max rescaling per image would hide how much attention a slice holds)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return [METHODS[method](nn_module=MarginHooks(net, layer, register_forward=True,
                                                  register_backward=True),
                            target_layers=layer, postprocessing=lambda x: x) for net in models]


def normalise_per_slice(maps: np.ndarray) -> np.ndarray:
    """Scale each map (n, H, W) to sum 1; a map without attention stays all zero."""
    sums = maps.reshape(len(maps), -1).sum(axis=1)
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return maps * scale[:, None, None]


def ensemble_cam(explainers: list, images: np.ndarray, target_class: int, input_meta: dict,
                 device: torch.device | str = "cpu", batch_size: int = 16) -> np.ndarray:
    """The ensemble's map of `target_class` for slices (n, S, S): float32 (n, S, S), each slice
    summing to 1 (or 0 where no model attends to anything)."""
    total = np.zeros(images.shape, dtype=np.float64)
    with torch.enable_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size]).to(device)
            x = model_lib.prepare_input(batch, input_meta).requires_grad_(True)
            for explainer in explainers:
                cam = explainer(x, class_idx=target_class)[:, 0].detach().cpu().numpy()
                total[start:start + len(x)] += normalise_per_slice(np.maximum(cam, 0.0))
    return normalise_per_slice(total).astype(np.float32)


def tumour_regions(mask: np.ndarray, pixel_mm: float, ring_mm: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (inside, ring) of one slice: the mask, and the pixels outside it whose centre lies
    within `ring_mm` of a tumour pixel's centre."""
    inside = mask > 0
    if not inside.any():
        return inside, np.zeros_like(inside)
    distance_mm = distance_transform_edt(~inside, sampling=float(pixel_mm))
    return inside, ~inside & (distance_mm <= ring_mm)


def slice_shares(cam: np.ndarray, mask: np.ndarray, pixel_mm: np.ndarray | float,
                 ring_mm: float = 10.0) -> np.ndarray:
    """Shares of attention (n, 3): inside, ring, elsewhere, each row summing to 1; NaN for a
    slice without attention."""
    pixel_mm = np.broadcast_to(np.asarray(pixel_mm, dtype=float), (len(cam),))
    shares = np.full((len(cam), 3), np.nan)
    for i, (c, m, mm) in enumerate(zip(cam.astype(np.float64), mask, pixel_mm)):
        total = c.sum()
        if total <= 0:
            continue
        inside, ring = tumour_regions(m, mm, ring_mm)
        shares[i, 0] = c[inside].sum() / total
        shares[i, 1] = c[ring].sum() / total
        shares[i, 2] = 1.0 - shares[i, 0] - shares[i, 1]
    return shares


def patient_shares(shares: np.ndarray) -> np.ndarray:
    """The patient's (inside, ring, elsewhere): mean over slices with attention (NaN if none)."""
    attended = ~np.isnan(shares[:, 0])
    if not attended.any():
        return np.full(3, np.nan)
    return shares[attended].mean(axis=0)
