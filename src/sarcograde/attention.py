"""Grad-CAM maps of an ensemble and the share of attention inside, around and away from the tumour.

Target. A two-logit network decides by the difference of its logits alone, so the map explains
the margin `logit(c) - logit(other)` of a class c (for two classes this is the direction of
the gradient of log p(c)): Grad-CAM of the patient's predicted class shows the evidence for that
prediction against the other class. The paper shows its maps with the prediction (figures 4-5),
both for high and low grade.

Ensemble. Each model's map of a slice is scaled to sum 1 before the models are averaged, so that
every model has the same say whatever the scale of its gradients.

Speed. MONAI's Grad-CAM runs a forward and a full backward pass per model, every parameter's
gradient included (`ensemble_cam(mode="monai")`, the reference). `stacked_cam` runs the forward
without autograd up to Grad-CAM's layer and the backward through the layers after it only, then
MONAI's formulas on the layer's activation and gradient: on CPU cores one model at a time (a
stack of one, "per-model"), on a GPU all models as one `StackedDenseNet` ("stacked": each kernel
launched once for all). Measured on 2 shared CPU cores, one thread (benchmarks/README.md): 3
quick-preset models, 30 slices, per-model 0.07-0.15 s against MONAI's 0.15-0.29 s (1.7-2.6x, the
same run) and 6-8 MiB of peak memory against 25-31 MiB; stacked no faster than per-model on CPU
cores (grouped convolutions); one model 0.025-0.035 s against 0.053-0.073 s (2.1x).

Forward-only Grad-CAM. The network ends in ReLU, global average pooling and a linear layer
after Grad-CAM's layer (the last batch norm), so the margin's gradient at that layer is known
without a backward pass: d margin / d A_k(i, j) = (w_c - w_other)_k [A_k(i, j) > 0] / (h w),
and Grad-CAM's channel weight (its spatial mean) is (w_c - w_other)_k times the share of positive
pixels of channel k over h w. `ForwardGradCam` returns a model's logits and this signed map of
class 1 (the map of class 0 is its negative) from one forward pass, on any engine that runs the
network (an ONNX graph holds it too); `forward_cam` makes the ensemble's map of either class from
it. Equal to MONAI's Grad-CAM (tests/test_attention.py); Grad-CAM++ needs the backward paths.

Scores. A slice's map (non-negative) is normalised to sum 1 and split into the tumour mask, a ring
of `ring_mm` around it (Euclidean distance in mm, from the NPZ's pixel size) and the rest; the
three shares sum to 1. The patient's shares are the mean over slices with any attention, each
slice weighted equally, as each slice counts equally in the prediction.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.visualize import GradCAM, GradCAMpp
from monai.visualize.class_activation_maps import ModelWithHooks, default_upsampler
from scipy.ndimage import distance_transform_edt
from torch import nn

from . import model as model_lib
from .device import batches_that_fit, to_device
from .train.stacked_densenet import StackedDenseNet

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMpp}


class MarginHooks(ModelWithHooks):
    """MONAI's model hooks with the score of class c set to `logit(c) - logit(other)`."""

    @staticmethod
    def class_score(logits: torch.Tensor, class_idx: int) -> torch.Tensor:
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


class ForwardGradCam(nn.Module):
    """A DenseNet of `model.build_model` returning `(logits, signed map of class 1)` from one
    forward pass: the map `sum_k weight_k A_k` at Grad-CAM's layer before MONAI's ReLU and
    upsampling (module docstring)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        last = list(net.features.named_children())[-1][0]
        head = [name for name, _ in net.class_layers.named_children()]
        if f"features.{last}" != model_lib.GRADCAM_LAYER or head != ["relu", "pool", "flatten",
                                                                      "out"]:
            raise ValueError(f"forward Grad-CAM needs {model_lib.GRADCAM_LAYER} followed by "
                             f"ReLU, pooling and a linear head, not {last} then {head}")
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        activation = self.net.features(x)
        logits = self.net.class_layers(activation)
        head = self.net.class_layers.out.weight
        h, w = activation.shape[2:]
        # The spatial mean of the margin's gradient: the pooled ReLU passes (w1 - w0)_k / (h w)
        # to each positive pixel of channel k and nothing to the others.
        positive = (activation > 0).to(activation.dtype).mean((2, 3))
        weights = (head[1] - head[0]) * positive / (h * w)
        return logits, (weights[:, :, None, None] * activation).sum(1)


def class_map(signed: torch.Tensor, target_class: int, size: tuple[int, int]) -> torch.Tensor:
    """One model's raw Grad-CAM maps `(n, H, W)` of `target_class` from its signed maps of
    class 1 `(n, h, w)` (`ForwardGradCam`): MONAI's ReLU and upsampling."""
    margin = signed if target_class == 1 else -signed
    return default_upsampler(size)(torch.relu(margin)[:, None])[:, 0]


def forward_cam(signed: np.ndarray, target_class: int, size: int) -> np.ndarray:
    """The ensemble's map of `target_class` (n, S, S) from every model's signed maps
    (models, n, h, w), combined as `ensemble_cam` combines its models' maps."""
    total = np.zeros((signed.shape[1], size, size), dtype=np.float64)
    for model_maps in signed:
        cam = class_map(torch.from_numpy(model_maps), target_class, (size, size)).numpy()
        total += normalise_per_slice(np.maximum(cam, 0.0))
    return normalise_per_slice(total).astype(np.float32)


class _Replay(ModelWithHooks):
    """MONAI's hooked model replaying one layer's activation and gradient, and the class score,
    already computed (by a stack): MONAI's Grad-CAM formulas then apply to them unchanged."""

    def __init__(self, activation: torch.Tensor, gradient: torch.Tensor, score: torch.Tensor):
        self.activation, self.gradient, self.score = activation, gradient, score

    def __call__(self, x, class_idx=None, retain_graph=False, **kwargs):
        return None, (self.activation,), (self.gradient,)


def method_of(explainer) -> str:
    """The METHODS name of a MONAI explainer (Grad-CAM++ is a Grad-CAM subclass: exact type)."""
    return next(name for name, cls in METHODS.items() if type(explainer) is cls)


def stacked_cam(stack: StackedDenseNet, x: torch.Tensor, target_class: int,
                method: str = "gradcam", layer: str = model_lib.GRADCAM_LAYER) -> torch.Tensor:
    """Every member's raw map `(B, K, H, W)` of a batch `x` `(B, 3, H, W)` from ONE forward and
    ONE backward of the stack, equal to each member's own `cam_explainers` map.

    The score is the sum over members of each member's margin (`MarginHooks.class_score`);
    members share no weights, so each member's share of the layer's gradient is that of its own
    margin. MONAI's Grad-CAM (++) formulas and upsampling then run on the activations and
    gradients of the B x K (slice, member) pairs as one batch.
    """
    b, k = len(x), stack.k
    training = stack.training
    stack.eval()
    try:
        with torch.enable_grad():
            logits, activation = stack(x[:, None].expand(-1, k, -1, -1, -1), capture=layer)
            score = MarginHooks.class_score(logits.reshape(b * k, -1), target_class)
            gradient, = torch.autograd.grad(score.sum(), activation)
    finally:
        stack.train(training)

    def pairs(t: torch.Tensor) -> torch.Tensor:  # (B, K x C, h, w) -> (B x K, C, h, w)
        return t.detach().reshape(b * k, -1, *t.shape[2:])

    explainer = METHODS[method](nn_module=_Replay(pairs(activation), pairs(gradient),
                                                  score.detach()),
                                target_layers=layer, postprocessing=lambda m: m)
    with torch.no_grad():
        return explainer(x, class_idx=target_class).reshape(b, k, *x.shape[2:])


def normalise_per_slice(maps: np.ndarray) -> np.ndarray:
    """Scale each map (n, H, W) to sum 1; a map without attention stays all zero."""
    sums = maps.reshape(len(maps), -1).sum(axis=1)
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return maps * scale[:, None, None]


CAM_MODES = ("monai", "per-model", "stacked")


def default_cam_mode(device: torch.device | str) -> str:
    """`ensemble_cam`'s mode on `device`: "stacked" on a GPU, "per-model" on CPU cores (where
    grouped convolutions are slow and the gain is the short backward, benchmarks/README.md)."""
    return "stacked" if torch.device(device).type == "cuda" else "per-model"


def ensemble_cam(explainers: list, images: np.ndarray, target_class: int, input_meta: dict,
                 device: torch.device | str = "cpu", batch_size: int = 16,
                 mode: str | None = None) -> np.ndarray:
    """The ensemble's map of `target_class` for slices (n, S, S): float32 (n, S, S), each slice
    summing to 1 (or 0 where no model attends to anything).

    `mode` (default `default_cam_mode(device)`); every mode gives the same maps:
    - "monai": each explainer runs MONAI's Grad-CAM on its own model, a forward and a full
      backward pass (all parameter gradients) per model: the reference.
    - "per-model": each model alone as a stack of one (`StackedDenseNet.of([model])`, the model's
      own tensors, no copy): `stacked_cam`'s forward without autograd up to Grad-CAM's layer and
      backward through the layers after it only. The default on CPU cores.
    - "stacked": all models as one `StackedDenseNet` (the ensemble's, as `slice_logits` builds
      it on a GPU), one forward and one short backward for all. The default on a GPU; one model
      runs as "per-model".
    """
    device = torch.device(device)
    mode = default_cam_mode(device) if mode is None else mode
    if mode not in CAM_MODES:
        raise ValueError(f"unknown Grad-CAM mode {mode!r}; choose one of {', '.join(CAM_MODES)}")
    def network_input(start: int, stop: int) -> torch.Tensor:
        return model_lib.prepare_input(to_device(torch.from_numpy(images[start:stop]), device),
                                       input_meta)

    if mode == "monai":
        def compute(start: int, stop: int) -> list[np.ndarray]:  # each model's (n, S, S)
            x = network_input(start, stop).requires_grad_(True)
            return [explainer(x, class_idx=target_class)[:, 0].detach().cpu().numpy()
                    for explainer in explainers]
    else:
        models = [e.nn_module.model for e in explainers]
        if mode == "stacked" and len(models) > 1:
            stacks = [StackedDenseNet.of(models, channels_last=device.type == "cuda")]
        else:
            stacks = [StackedDenseNet.of([net]) for net in models]
        method, layer = method_of(explainers[0]), explainers[0].nn_module.target_layers[-1]

        def compute(start: int, stop: int) -> list[np.ndarray]:
            x = network_input(start, stop)
            return [m for stack in stacks
                    for m in stacked_cam(stack, x, target_class, method, layer).cpu().numpy()
                    .transpose(1, 0, 2, 3)]

    total = np.zeros(images.shape, dtype=np.float64)
    with torch.enable_grad():
        for start, stop, cams in batches_that_fit(len(images), batch_size, device, "Grad-CAM",
                                                  compute):
            for cam in cams:
                total[start:stop] += normalise_per_slice(np.maximum(cam, 0.0))
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
