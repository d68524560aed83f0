"""The training loop's settings, resolved from a config's `train` section for one device, and
the class weights of its loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import model as model_lib
from ..config import AugmentParams
from ..config_schema import check_settings
from ..ensemble import autocast, resolve_precision
from ..errors import SarcogradeError

# Train settings that change how fast the folds are trained, not their numbers: left out of the
# run's configuration hash, so a run may be resumed with another setting (on another GPU).
SPEED_ONLY = frozenset({"concurrent_folds", "cuda_graphs", "checkpoint_every_s"})


@dataclass(frozen=True)
class Settings:
    """The training loop's knobs, resolved from the `train` config for one device."""

    batch_size: int
    learning_rate: float
    max_epochs: int
    patience: int
    class_weighting: str            # "inverse_frequency" or "none"
    augment: AugmentParams | None
    device: torch.device
    amp_dtype: torch.dtype | None   # autocast dtype, None = float32
    channels_last: bool
    concurrent_folds: int | None    # folds trained side by side as one stack; None = auto
    cuda_graphs: bool               # replay the stacked step from a CUDA graph (on a GPU)
    checkpoint_every_s: float       # least seconds between two checkpoints of a fold
    threads_per_fold: int           # torch's CPU threads while a fold trains (its numbers)

    @classmethod
    def from_config(cls, train_cfg: dict[str, Any], device: torch.device) -> "Settings":
        check_settings({"train": train_cfg})  # types and ranges; what follows combines them
        cuda = device.type == "cuda"
        precision = str(train_cfg.get("precision", "auto"))
        if precision == "fp16" and not cuda:
            raise SarcogradeError("train.precision 'fp16' needs a GPU; use bf16 or fp32 on a CPU")
        amp_dtype = resolve_precision(precision, device)
        channels_last = train_cfg.get("channels_last", "auto")
        concurrent = train_cfg.get("concurrent_folds", 1)
        graphs = train_cfg.get("cuda_graphs", False)
        if graphs and amp_dtype == torch.float16:
            raise SarcogradeError("train.cuda_graphs cannot be used with fp16 autocast (its loss "
                                  "scaling is not replayed); use bf16 or fp32")
        every = train_cfg.get("checkpoint_every_s", 0)
        weighting = train_cfg.get("class_weights", "inverse_frequency")
        return cls(batch_size=int(train_cfg["batch_size"]),
                   learning_rate=float(train_cfg["learning_rate"]),
                   max_epochs=int(train_cfg["max_epochs"]), patience=int(train_cfg["patience"]),
                   class_weighting=weighting,
                   augment=AugmentParams.from_config(train_cfg.get("augment", True)),
                   device=device, amp_dtype=amp_dtype,
                   channels_last=cuda if channels_last == "auto" else bool(channels_last),
                   concurrent_folds=None if concurrent == "auto" else concurrent,
                   cuda_graphs=graphs, checkpoint_every_s=float(every),
                   threads_per_fold=int(train_cfg.get("threads_per_fold", 1)))

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    def optimizer(self, net: torch.nn.Module) -> torch.optim.Optimizer:
        """The paper's Adam. Fused: one kernel for all of the network's tensors (~480 in a
        DenseNet-161) instead of a loop over them; the same update up to float rounding, and 3
        to 6x faster on CPU cores (benchmarks/README.md). Capturable in a CUDA graph where the
        step is replayed from one."""
        return torch.optim.Adam(net.parameters(), lr=self.learning_rate, fused=True,
                                capturable=self.cuda_graphs and self.device.type == "cuda")

    def to_input(self, images: torch.Tensor, meta: dict) -> torch.Tensor:
        x = model_lib.prepare_input(images, meta)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Cross-entropy weights = inverse class frequency over the training fold's SLICES.

    Slice counts, not patient counts, because the loss is summed over slices: with these weights
    both grades weigh the same in the loss even where high-grade tumours (larger) give more
    slices per patient. Scaled as n / (2 n_c), scikit-learn's "balanced".
    """
    counts = np.bincount(np.asarray(labels), minlength=2)
    if (counts == 0).any():
        raise SarcogradeError("a training fold has slices of one grade only")
    return len(labels) / (2.0 * counts)
