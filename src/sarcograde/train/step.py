"""One network's training step and epoch over a fold's slices, and its validation score.

A fold's slices are index tensors into the whole slice set, which stays on the training device
once; a batch is a gather from it, augmented on the device with the epoch's seeded draws.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from .. import model as model_lib
from ..data import SliceSet, augment_batch
from ..ensemble import patients_p_high
from ..splits import Split
from .settings import Settings


@dataclass
class FoldData:
    """One split's slices as index tensors into the whole set (kept once on the device)."""

    images: torch.Tensor         # all slices (n, S, S) float16, on the device
    slice_labels: torch.Tensor   # (n,) long, on the device
    train: torch.Tensor          # slice indices of the training patients
    val: torch.Tensor            # slice indices of the validation patients
    val_owner: torch.Tensor      # position of each validation slice's patient in val_patients
    val_patients: list[str]
    val_labels: np.ndarray       # per validation patient


def fold_data(slices: SliceSet, split: Split, images: torch.Tensor,
              slice_labels: torch.Tensor) -> FoldData:
    position = {pid: i for i, pid in enumerate(slices.patient_ids)}
    train_pos = np.array([position[p] for p in split.train])
    val_pos = np.array([position[p] for p in split.val])
    val_idx = slices.slices_of(val_pos)
    order = np.argsort(val_pos)  # searchsorted needs sorted positions
    owner = order[np.searchsorted(val_pos[order], slices.patient_index[val_idx])]
    device = images.device
    return FoldData(images=images, slice_labels=slice_labels,
                    train=torch.from_numpy(slices.slices_of(train_pos)).to(device),
                    val=torch.from_numpy(val_idx).to(device),
                    val_owner=torch.from_numpy(owner).to(device),
                    val_patients=list(split.val), val_labels=slices.labels[val_pos])


def epoch_batches(data: FoldData, settings: Settings, generator: torch.Generator) -> list[torch.Tensor]:
    """The epoch's batches of training-slice indices, in the seeded order of `generator`."""
    order = data.train[torch.randperm(len(data.train), generator=generator).to(data.train.device)]
    # Batch norm cannot train on a single slice: a last batch of one is left out.
    return [batch for batch in order.split(settings.batch_size) if len(batch) >= 2]


def augmented(data: FoldData, batch: torch.Tensor, settings: Settings,
              generator: torch.Generator) -> torch.Tensor:
    """The batch's slices `(B, S, S)`, augmented with the next draws of `generator`."""
    x = data.images[batch]
    return x if settings.augment is None else augment_batch(x, settings.augment, generator)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler,
               x: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
               settings: Settings) -> torch.Tensor:
    """Forward, class-weighted loss, backward and Adam step on one batch; the loss."""
    with settings.autocast():
        logits = model(x)
    loss = F.cross_entropy(logits.float(), labels, weight=weights)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler, data: FoldData,
                weights: torch.Tensor, meta: dict, settings: Settings, generator: torch.Generator,
                on_batch=None) -> float:
    """One pass over the training slices in a seeded order; the mean class-weighted loss."""
    model.train()
    total = torch.zeros((), device=settings.device)
    seen = 0
    for batch in epoch_batches(data, settings, generator):
        x = settings.to_input(augmented(data, batch, settings, generator), meta)
        loss = train_step(model, optimizer, scaler, x, data.slice_labels[batch], weights, settings)
        total += loss * len(batch)
        seen += len(batch)
        if on_batch is not None:
            on_batch()
    return float(total) / max(seen, 1)


def trial_step(model_cfg: dict, settings: Settings, meta: dict) -> float:
    """One training step of a fresh `model_cfg` network on a batch of zeros of the training
    batch and slice size, what planning measures (a fold's GPU memory, a CPU's step time); the
    seconds the step took (building the network not counted)."""
    device = settings.device
    net = model_lib.build_model(model_cfg).to(device)
    if settings.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = settings.optimizer(net)
    size = int(meta["size"])
    x = settings.to_input(torch.zeros(settings.batch_size, size, size, device=device), meta)
    labels = torch.zeros(settings.batch_size, dtype=torch.long, device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    net.train()
    start = time.perf_counter()
    train_step(net, optimizer, scaler, x, labels, torch.ones(2, device=device), settings)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@dataclass
class Evaluation:
    loss: float            # class-weighted cross-entropy over the validation slices
    auc: float             # patient level: mean logits over slices, then softmax
    p_high: np.ndarray     # per validation patient


def score(logits: torch.Tensor, labels: torch.Tensor, owner: torch.Tensor,
          patient_labels: np.ndarray, weights: torch.Tensor) -> Evaluation:
    """Validation loss over slices and patient-level AUC from one model's slice logits.

    The loss uses the training fold's class weights, so that early stopping watches the
    objective being minimised, whatever the validation fold's grade balance; patients are
    aggregated as `predict` aggregates them.
    """
    loss = F.cross_entropy(logits, labels, weight=weights).item()
    p_high = patients_p_high(logits.cpu().numpy(), owner.cpu().numpy(), len(patient_labels))
    auc = (float(roc_auc_score(patient_labels, p_high))
           if len(set(patient_labels.tolist())) == 2 else math.nan)
    return Evaluation(loss=loss, auc=auc, p_high=p_high)


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
             owner: torch.Tensor, patient_labels: np.ndarray, weights: torch.Tensor, meta: dict,
             settings: Settings) -> Evaluation:
    """`score` of `model` on validation slices, in batches of twice the training batch."""
    model.eval()
    logits = []
    for start in range(0, len(images), 2 * settings.batch_size):
        x = settings.to_input(images[start:start + 2 * settings.batch_size], meta)
        with settings.autocast():
            logits.append(model(x).float())
    return score(torch.cat(logits), labels, owner, patient_labels, weights)
