"""The grading network: a 2D DenseNet (DenseNet-161 in the paper) with a two-class head.

Also here: loading torchvision's ImageNet weights into MONAI's DenseNet, the fold-model file
(`fold_XX/model.pt`, see docs/artifacts.md) and the mapping from cached slices to network input.

Input convention. The cache holds slices z-scored over the body. A network trained from scratch
sees them as they are (mean 0, SD 1 per channel). An ImageNet-pretrained network expects a photo
in [0, 1] normalised with ImageNet's per-channel mean and SD; a z-scored slice is therefore first
turned into a grey picture whose intensity has the average ImageNet pixel statistics
(`grey_mean` + `grey_std` * z, i.e. body mean -> 0.449, one body SD -> 0.226), copied to R, G and
B, and then normalised per channel exactly as torchvision normalises a grey photo. Nothing is
clipped: bright enhancing tumour must stay bright.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import DenseNet
from torch import nn

from . import LABELS
from .errors import SarcogradeError
from .formats.run import read_fold_model, write_fold_model

# Huang et al. 2017, table 1; torchvision's densenet161.
DENSENET161 = {"init_features": 96, "growth_rate": 48, "block_config": [6, 12, 36, 24]}
IMAGENET_FILE = "densenet161-8d451a50.pth"
IMAGENET_URL = f"https://download.pytorch.org/models/{IMAGENET_FILE}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Mean and SD of an ImageNet pixel averaged over R, G, B: the grey picture a z-scored slice becomes.
IMAGENET_GREY_MEAN = float(np.mean(IMAGENET_MEAN))
IMAGENET_GREY_STD = float(np.mean(IMAGENET_STD))

# Grad-CAM target: the last feature map (after the final batch norm), as for torchvision DenseNets.
GRADCAM_LAYER = "features.norm5"

# torchvision < 0.4 checkpoints (the ImageNet file among them) spell "norm1" as "norm.1"; this is
# the pattern torchvision itself uses to rename them.
_OLD_DENSELAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
# torchvision's dense-layer modules sit one level higher than MONAI's (`.layers.`).
_TV_DENSELAYER_KEY = re.compile(r"^(features\.denseblock\d+\.denselayer\d+)\.(.+)$")
_HEAD_PREFIX = "class_layers.out."


def build_model(model_cfg: dict[str, Any]) -> nn.Module:
    """MONAI's 2D DenseNet with 3 input channels and 2 outputs (low, high) from a `model` config.

    `architecture: densenet161` gives DenseNet-161 (its numbers may be left out of the config);
    `architecture: densenet` takes `init_features`, `growth_rate` and `block_config` as given.
    """
    arch = model_cfg.get("architecture", "densenet161")
    if arch == "densenet161":
        params = {**DENSENET161, **{k: model_cfg[k] for k in DENSENET161 if k in model_cfg}}
        if params != DENSENET161:
            raise SarcogradeError(f"architecture densenet161 is {DENSENET161}, but the config "
                                  f"says {params}; use architecture: densenet for other sizes")
    elif arch == "densenet":
        missing = [k for k in DENSENET161 if k not in model_cfg]
        if missing:
            raise SarcogradeError(f"model config lacks {', '.join(missing)} for architecture densenet")
        params = {k: model_cfg[k] for k in DENSENET161}
    else:
        raise SarcogradeError(f"unknown model architecture {arch!r}; use densenet161 or densenet")
    model = DenseNet(spatial_dims=2, in_channels=3, out_channels=len(LABELS),
                     init_features=int(params["init_features"]),
                     growth_rate=int(params["growth_rate"]),
                     block_config=tuple(int(b) for b in params["block_config"]),
                     dropout_prob=float(model_cfg.get("dropout", 0.0)))
    # An in-place ReLU right after GRADCAM_LAYER would overwrite the hooked activation.
    model.class_layers.relu.inplace = False
    return model


def torchvision_to_monai_key(key: str) -> str:
    """The MONAI DenseNet key of a torchvision DenseNet state-dict key (old or new spelling)."""
    old = _OLD_DENSELAYER_KEY.match(key)
    if old:
        key = old.group(1) + old.group(2)
    layer = _TV_DENSELAYER_KEY.match(key)
    if layer:
        return f"{layer.group(1)}.layers.{layer.group(2)}"
    if key.startswith("classifier."):
        return _HEAD_PREFIX + key[len("classifier."):]
    return key


def imagenet_weights_file() -> Path:
    """torchvision's ImageNet DenseNet-161 file in torch's checkpoint folder, downloaded if absent."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    local = folder / IMAGENET_FILE
    if local.is_file():
        return local
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an offline machine should fail in seconds, not hang
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # torchvision's file names carry the first digits of the file's SHA-256; check them.
        torch.hub.download_url_to_file(IMAGENET_URL, str(local),
                                       hash_prefix=IMAGENET_FILE.split("-")[1].split(".")[0])
    except Exception as exc:  # no network, proxy, HTTP error, corrupt download: all the same to a user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SarcogradeError(
            f"ImageNet DenseNet-161 weights not found and the download from {IMAGENET_URL} "
            f"failed ({reason}); place {IMAGENET_FILE} in {folder}, or pass --pretrained PATH "
            f"to the file, or train from scratch with --pretrained none", path=local) from None
    finally:
        socket.setdefaulttimeout(previous)
    return local


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise SarcogradeError("pretrained weights file not found", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SarcogradeError(f"cannot read pretrained weights: {exc}", path=path) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise SarcogradeError("not a state dict of tensors", path=path)
    return state


def load_pretrained(model: nn.Module, source: str | Path) -> nn.Module:
    """Load torchvision ImageNet DenseNet weights into `model` (from `build_model`), in place.

    `source` is a path to torchvision's state-dict file, "imagenet" (torch's checkpoint folder,
    else the official download) or "none" (leave the random initialisation). The ImageNet
    classifier is dropped: the two-class head stays freshly initialised. Every other key of the
    file must map onto the model with the same shape, and every model weight must be covered.
    """
    if str(source).lower() == "none":
        return model
    path = imagenet_weights_file() if str(source).lower() == "imagenet" else Path(source)
    state = _read_state_dict(path)

    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unused, mismatched = [], []
    for key, value in state.items():
        new_key = torchvision_to_monai_key(key)
        if new_key.startswith(_HEAD_PREFIX):
            continue  # ImageNet's 1000-class head; replaced by the 2-class head
        if new_key not in target:
            unused.append(key)
        elif target[new_key].shape != value.shape:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target[new_key].shape)}")
        else:
            mapped[new_key] = value
    # BatchNorm's batch counter is absent from old checkpoints and irrelevant to the weights.
    missing = [k for k in target if k not in mapped and not k.startswith(_HEAD_PREFIX)
               and not k.endswith("num_batches_tracked")]
    for problem, keys in (("keys with a different shape", mismatched),
                          ("keys the model does not have", unused),
                          ("model weights missing from the file", missing)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            raise SarcogradeError(f"pretrained weights do not fit the model "
                                  f"({len(keys)} {problem}: {shown}); is it torchvision's "
                                  f"DenseNet-161 and the model config densenet161?", path=path)
    model.load_state_dict(mapped, strict=False)
    return model


def input_meta(size: int, pretrained: bool) -> dict[str, Any]:
    """How cached z-scored slices become network input (see the module docstring)."""
    if pretrained:
        return {"size": int(size), "channels": 3, "grey_mean": IMAGENET_GREY_MEAN,
                "grey_std": IMAGENET_GREY_STD, "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD)}
    return {"size": int(size), "channels": 3, "grey_mean": 0.0, "grey_std": 1.0,
            "mean": [0.0] * 3, "std": [1.0] * 3}


def prepare_input(images: np.ndarray | torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """Slices `(n, S, S)` (z-scored, float16/32) -> float32 network input `(n, 3, S, S)`.

    Channel c is `(grey_mean + grey_std * z - mean[c]) / std[c]`, one affine map per channel.
    """
    x = torch.as_tensor(images).float()
    if x.ndim != 3:
        raise ValueError(f"expected slices of shape (n, S, S), got {tuple(x.shape)}")
    # The per-channel factors in float32 on the host, used as plain numbers: no tensor travels
    # to the GPU (a copy would make the host wait, and a CUDA graph cannot replay one).
    mean = torch.tensor(meta["mean"], dtype=torch.float32)
    std = torch.tensor(meta["std"], dtype=torch.float32)
    scale = (float(meta.get("grey_std", 1.0)) / std).tolist()
    shift = ((float(meta.get("grey_mean", 0.0)) - mean) / std).tolist()
    return torch.stack([x * a + b for a, b in zip(scale, shift)], 1)


def save_fold_model(path: str | Path, model: nn.Module, *, model_cfg: dict, input_meta: dict,
                    preprocess_cfg: dict, best_epoch: int, repeat: int, fold: int) -> None:
    """Write `fold_XX/model.pt` atomically (format: docs/artifacts.md)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_fold_model(path, {"state_dict": state, "model": dict(model_cfg),
                            "classes": list(LABELS), "input": dict(input_meta),
                            "preprocess": dict(preprocess_cfg), "best_epoch": int(best_epoch),
                            "repeat": int(repeat), "fold": int(fold)})


def load_fold_model(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Read a fold model back: the network in eval mode on `device`, and the file's dict."""
    payload = read_fold_model(path)
    try:
        model = build_model(payload["model"])
        model.load_state_dict(payload["state_dict"])
    except SarcogradeError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SarcogradeError(f"not a readable sarcograde fold model: {reason}",
                              path=path) from None
    return model.to(device).eval(), payload
