"""Train the grading network with repeated stratified k-fold cross-validation over patients.

As in Navarro et al. 2021 (section 2.5): batch 30, Adam 1e-4, up to 100 epochs, early stopping
on the validation loss (best weights restored), class-weighted cross-entropy, on-the-fly
augmentation; 5 folds x 3 repeats = 15 models by default. Writes RUN/fold_XX/{model.pt,
history.csv, learning_curve.png}, RUN/folds.json and RUN/cv_predictions.csv.

Every epoch is checkpointed: rerun the same command after an interruption and training goes on
from the last finished epoch, skipping finished folds, with the numbers of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torch.utils.deterministic
from rich.progress import Progress, TaskID
from sklearn.metrics import roc_auc_score

from . import executors
from . import model as model_lib
from .artifacts import RunRecord, hash_config, save_figure
from .config import PRESETS, load_config
from .console import info, progress, warn
from .data import (AugmentDraws, AugmentParams, Resampling, SliceSet, augment_batch,
                   draw_augmentation, epoch_generator, epoch_seed, load_slices, resample)
from .device import resolve_device
from .ensemble import PRECISIONS, autocast, patients_p_high, resolve_precision
from .errors import SarcogradeError
from .formats import run as run_format
from .formats.run import (Folds, read_checkpoint, read_cv_predictions, read_run_config,
                          write_checkpoint, write_folds, write_history, write_run_config)
from .splits import Split, make_splits
from .stacked import StackedDenseNet

CHECKPOINT = "checkpoint.pt"
GIB = 2 ** 30
# Train settings that change how fast the folds are trained, not their numbers: left out of the
# run's configuration hash, so a run may be resumed with another setting (on another GPU).
SPEED_ONLY = frozenset({"concurrent_folds", "cuda_graphs", "checkpoint_every_s"})
# Share of the GPU's free memory that stacked folds may plan to use.
GPU_MEMORY_HEADROOM = 0.85


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

    @classmethod
    def from_config(cls, train_cfg: dict[str, Any], device: torch.device) -> "Settings":
        amp = str(train_cfg.get("amp", "auto")).lower()
        cuda = device.type == "cuda"
        amp = "fp32" if amp in ("none", "false") else amp
        if amp not in PRECISIONS or (amp == "fp16" and not cuda):
            raise SarcogradeError(f"train.amp {amp!r} is not auto, none, bf16 or fp16 (GPU only)")
        amp_dtype = resolve_precision(amp, device)
        channels_last = train_cfg.get("channels_last", "auto")
        concurrent = train_cfg.get("concurrent_folds", "auto")
        if concurrent != "auto" and not (isinstance(concurrent, int) and concurrent >= 1
                                         and not isinstance(concurrent, bool)):
            raise SarcogradeError(f"train.concurrent_folds {concurrent!r} is not auto or a "
                                  "whole number >= 1")
        graphs = train_cfg.get("cuda_graphs", False)
        if not isinstance(graphs, bool):
            raise SarcogradeError(f"train.cuda_graphs {graphs!r} is not true or false")
        if graphs and amp_dtype == torch.float16:
            raise SarcogradeError("train.cuda_graphs cannot be used with fp16 autocast (its loss "
                                  "scaling is not replayed); use bf16 or fp32")
        every = train_cfg.get("checkpoint_every_s", 0)
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not every >= 0:
            raise SarcogradeError(f"train.checkpoint_every_s {every!r} is not a number of "
                                  "seconds >= 0")
        weighting = str(train_cfg.get("class_weights", "inverse_frequency")).lower()
        if weighting not in ("inverse_frequency", "none"):
            raise SarcogradeError(f"train.class_weights {weighting!r} is not inverse_frequency "
                                  "or none")
        return cls(batch_size=int(train_cfg["batch_size"]),
                   learning_rate=float(train_cfg["learning_rate"]),
                   max_epochs=int(train_cfg["max_epochs"]), patience=int(train_cfg["patience"]),
                   class_weighting=weighting,
                   augment=AugmentParams.from_config(train_cfg.get("augment", True)),
                   device=device, amp_dtype=amp_dtype,
                   channels_last=cuda if channels_last == "auto" else bool(channels_last),
                   concurrent_folds=None if concurrent == "auto" else concurrent,
                   cuda_graphs=graphs, checkpoint_every_s=float(every))

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


def save_checkpoint(path: Path, state: dict) -> None:
    """Write the fold's training state after an epoch, atomically (see `FoldRun`)."""
    write_checkpoint(path, state)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class Bars:
    """The progress bars of a run: folds, epochs of the current fold(s), batches of the epoch."""

    progress: Progress
    folds: TaskID
    epochs: TaskID
    batches: TaskID

    @classmethod
    def start(cls, progress: Progress, n_folds: int, max_epochs: int) -> "Bars":
        return cls(progress, progress.add_task("folds", total=n_folds),
                   progress.add_task("epochs", total=max_epochs),
                   progress.add_task("batches", total=None))

    def new_epoch(self, epoch: int, n_batches: int):
        """Reset the batch bar; the callback that advances it."""
        self.progress.reset(self.batches, total=n_batches, description=f"epoch {epoch}")
        return lambda: self.progress.advance(self.batches)


class FoldRun:
    """One fold in training: its network, optimiser and early-stopping state.

    Built from the fold's checkpoint where one of this configuration exists, so training goes
    on after the last finished epoch. Each epoch draws its shuffling and augmentation from its
    own seed, so an epoch run after a resume is the epoch an uninterrupted run would have run.
    """

    def __init__(self, split: Split, slices: SliceSet, images: torch.Tensor,
                 slice_labels: torch.Tensor, model_cfg: dict, pretrained: str, meta: dict,
                 settings: Settings, out: Path, seed: int, config_hash: str):
        self.split, self.settings, self.meta, self.seed = split, settings, meta, seed
        self.slices, self.model_cfg, self.config_hash = slices, model_cfg, config_hash
        self.fold_dir = out / split.name
        self.path = self.fold_dir / CHECKPOINT
        self.data = fold_data(slices, split, images, slice_labels)
        train_labels = slices.labels[slices.patient_index[self.data.train.cpu().numpy()]]
        self.weights = torch.tensor(class_weights(train_labels)
                                    if settings.class_weighting != "none" else np.ones(2),
                                    dtype=torch.float32, device=settings.device)
        torch.manual_seed(seed)  # the fresh head (and everything, without pretrained weights)
        net = model_lib.load_pretrained(model_lib.build_model(model_cfg), pretrained)
        net = net.to(settings.device)
        self.net = net.to(memory_format=torch.channels_last) if settings.channels_last else net
        self.optimizer = settings.optimizer(self.net)
        self.scaler = torch.amp.GradScaler(settings.device.type,
                                           enabled=settings.amp_dtype == torch.float16)
        self.history: list[dict] = []
        self.best_state: dict | None = None
        self.best_loss, self.best_epoch, self.bad_epochs = math.inf, 0, 0
        self.started = time.perf_counter()
        self.checkpointed = time.monotonic()
        self._resume()

    def _resume(self) -> None:
        state = _read_checkpoint(self.path)
        if state is None:
            return
        if state.get("config_hash") != self.config_hash:
            warn(f"{self.fold_dir.name}: checkpoint of another configuration ignored")
            return
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.history, self.best_state = state["history"], state["best_state"]
        self.best_loss, self.best_epoch, self.bad_epochs = (state["best_loss"], state["best_epoch"],
                                                            state["bad_epochs"])
        info(f"{self.fold_dir.name}: resuming after epoch {len(self.history)}")

    @property
    def next_epoch(self) -> int:
        return len(self.history) + 1

    @property
    def finished(self) -> bool:
        return (self.bad_epochs >= self.settings.patience
                or len(self.history) >= self.settings.max_epochs)

    def generator(self) -> torch.Generator:
        """The next epoch's generator of shuffling and augmentation."""
        return epoch_generator(self.seed, self.next_epoch)

    def evaluate(self) -> Evaluation:
        data = self.data
        return evaluate(self.net, data.images[data.val], data.slice_labels[data.val],
                        data.val_owner, data.val_labels, self.weights, self.meta, self.settings)

    def end_epoch(self, train_loss: float, ev: Evaluation, seconds: float) -> None:
        """Record the epoch, keep the best weights, checkpoint (atomically) when
        `train.checkpoint_every_s` have passed since the last checkpoint (or the start).

        A checkpoint of DenseNet-161 holds ~430 MB (weights, Adam's two moments, best weights),
        which takes longer to write than a fast GPU takes for an epoch. Resuming from an older
        checkpoint redoes the epochs after it, with the same numbers (each epoch has its seed)."""
        epoch = self.next_epoch
        self.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": ev.loss,
                             "val_auc": ev.auc, "lr": self.optimizer.param_groups[0]["lr"],
                             "seconds": seconds})
        if ev.loss < self.best_loss:
            self.best_state, self.best_loss = _cpu_state(self.net), ev.loss
            self.best_epoch, self.bad_epochs = epoch, 0
        else:
            self.bad_epochs += 1
        if time.monotonic() - self.checkpointed < self.settings.checkpoint_every_s:
            return
        self.checkpointed = time.monotonic()
        save_checkpoint(self.path, {
            "config_hash": self.config_hash, "model": _cpu_state(self.net),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "history": self.history, "best_state": self.best_state, "best_loss": self.best_loss,
            "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs})

    def finish(self) -> None:
        """Restore the best weights and write the fold's folder; model.pt comes last, as the
        mark of a finished fold."""
        if self.best_state is None:
            raise SarcogradeError("training diverged: the validation loss was never finite",
                                  path=self.fold_dir)
        self.net.load_state_dict(self.best_state)
        split, data = self.split, self.data
        ev = self.evaluate()
        run_format.write_cv_predictions(self.fold_dir / "val_predictions.csv", pd.DataFrame({
            "patient_id": data.val_patients, "repeat": split.repeat, "fold": split.fold,
            "label": data.val_labels, "p_high": ev.p_high}))
        frame = write_history(self.fold_dir / "history.csv", self.history)
        plot_learning_curve(frame, self.best_epoch,
                            f"{split.name}: repeat {split.repeat}, fold {split.fold}",
                            self.fold_dir / "learning_curve.png")
        model_lib.save_fold_model(self.fold_dir / "model.pt", self.net, model_cfg=self.model_cfg,
                                  input_meta=self.meta, preprocess_cfg=self.slices.cache_config,
                                  best_epoch=self.best_epoch, repeat=split.repeat,
                                  fold=split.fold)
        self.path.unlink(missing_ok=True)
        info(f"{split.name}: best epoch {self.best_epoch} of {len(self.history)}, validation "
             f"loss {ev.loss:.3f}, patient AUC {ev.auc:.2f} "
             f"({time.perf_counter() - self.started:.0f} s)")

    def describe(self, bars: Bars | None, train_loss: float, ev: Evaluation) -> None:
        if bars is not None:
            bars.progress.update(bars.epochs, completed=len(self.history),
                                 description=f"{self.fold_dir.name} loss {train_loss:.3f} "
                                             f"val {ev.loss:.3f} AUC {ev.auc:.2f}")


def fit_fold(run: FoldRun, bars: Bars | None = None) -> None:
    """Train one fold alone, epoch by epoch, until early stopping or the last epoch."""
    settings = run.settings
    while not run.finished:
        start = time.perf_counter()
        torch.manual_seed(epoch_seed(run.seed, run.next_epoch))  # dropout, where configured
        on_batch = None
        if bars is not None:
            on_batch = bars.new_epoch(run.next_epoch,
                                      math.ceil(len(run.data.train) / settings.batch_size))
        train_loss = train_epoch(run.net, run.optimizer, run.scaler, run.data, run.weights,
                                 run.meta, settings, run.generator(), on_batch)
        ev = run.evaluate()
        run.end_epoch(train_loss, ev, time.perf_counter() - start)
        run.describe(bars, train_loss, ev)


def stacked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                          weights: torch.Tensor) -> torch.Tensor:
    """Each model's class-weighted mean cross-entropy, as `F.cross_entropy(weight=)` computes
    it, from logits `(B, K, 2)`, labels `(B, K)` and class weights `(K, 2)`: a tensor `(K,)`."""
    # The label's log-probability picked by a one-hot product, not `gather`: the backward of a
    # gather is a scatter, which deterministic mode runs through a sort.
    one_hot = (labels[..., None] == torch.arange(logits.shape[-1], device=labels.device))
    nll = -(F.log_softmax(logits, -1) * one_hot).sum(-1)
    w = weights.gather(1, labels.T).T
    return (w * nll).sum(0) / w.sum(0)


class StackedStep:
    """The full-batch training step of a stack of fold models: gather each fold's batch from the
    slices on the device, resample all K batches at once, forward, each model's loss, backward
    and each model's Adam step, as each model alone would (Adam's state is each fold's own).

    The step reads its inputs from fixed buffers (the K batches' slice indices and resampling)
    filled before each call, so every call has the same shapes. With `train.cuda_graphs` on a GPU
    the step is captured once in a CUDA graph, after a few eager steps on a side stream (the
    warm-up CUDA graphs ask for; they are real steps), and replayed from then on: the GPU is
    handed thousands of kernels at once instead of one by one. Otherwise it runs eagerly. The
    numbers are the same either way.
    """

    WARM_UP_STEPS = 3

    def __init__(self, stack: StackedDenseNet, runs: list[FoldRun]):
        settings = runs[0].settings
        if any(run.data.images is not runs[0].data.images for run in runs):
            raise ValueError("the folds of a stack train on one slice set")
        self.stack, self.runs, self.settings, self.meta = stack, runs, settings, runs[0].meta
        n, device = len(runs) * settings.batch_size, settings.device
        self.index = torch.zeros(n, dtype=torch.long, device=device)
        grid = settings.augment.elastic_grid if settings.augment is not None else 0
        self.resampling = None if settings.augment is None else Resampling(
            torch.zeros(n, 2, 2, device=device), torch.zeros(n, 2, device=device),
            torch.zeros(n, 2, grid, grid, device=device))
        self.weights = torch.stack([run.weights for run in runs])
        self.capture = settings.cuda_graphs and device.type == "cuda"
        self.side = torch.cuda.Stream(device) if self.capture else None  # for the warm-up
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.losses: torch.Tensor | None = None

    def __call__(self, batches: list[torch.Tensor],
                 generators: list[torch.Generator]) -> torch.Tensor:
        """One step on fold k's `batches[k]`, augmented with the next draws of `generators[k]`;
        each model's loss `(K,)`."""
        self.index.copy_(torch.cat(batches))
        if self.resampling is not None:
            self.resampling.copy_(Resampling.of(AugmentDraws.cat([
                draw_augmentation(len(b), self.settings.augment, g)
                for b, g in zip(batches, generators)])))
        if self.graph is not None:
            self.graph.replay()
            return self.losses.clone()
        if not self.capture:
            return self._step()
        device = self.settings.device
        if self.eager_steps < self.WARM_UP_STEPS:
            self.eager_steps += 1
            self.side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(self.side):
                losses = self._step()
            torch.cuda.current_stream(device).wait_stream(self.side)
            return losses
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # recorded, not run: the replay runs this step
            self.losses = self._step()
        self.graph.replay()
        return self.losses.clone()

    def _step(self) -> torch.Tensor:
        k, b = len(self.runs), self.settings.batch_size
        x = self.runs[0].data.images[self.index]
        if self.resampling is not None:
            x = resample(x, self.resampling)
        x = model_lib.prepare_input(x, self.meta).reshape(k, b, -1, *x.shape[-2:]).transpose(0, 1)
        labels = self.runs[0].data.slice_labels[self.index].reshape(k, b).T
        return self.update(x, labels)

    def update(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Forward of network input `x` `(B, K, 3, S, S)`, each model's loss on `labels` `(B, K)`,
        backward and each model's Adam step; the losses `(K,)`. (Gradients are set to None
        first: in a capture that records no kernel, and the backward writes them afresh.)"""
        for run in self.runs:
            run.optimizer.zero_grad(set_to_none=True)
        with autocast(self.settings.device, self.settings.amp_dtype, cache=False):
            logits = self.stack(x)
        losses = stacked_cross_entropy(logits.float(), labels, self.weights)
        losses.sum().backward()  # the models share no weight: each gets its own gradient
        self.stack.member_grads()
        for run in self.runs:
            run.optimizer.step()
        return losses.detach()


def stacked_epoch(step: StackedStep, on_batch=None) -> list[float]:
    """Each fold's next epoch, the folds side by side; each fold's mean training loss.

    Every fold takes its own batches, in its own seeded order, with its own augmentation and
    its own Adam step, as it would alone. While every fold has a full batch left the step is one
    `StackedStep`; the last batches (folds differ in size) are stepped fold by fold.
    """
    runs, settings, meta = step.runs, step.settings, step.meta
    step.stack.train()
    for run in runs:
        run.net.train()
    generators = [run.generator() for run in runs]
    batches = [epoch_batches(run.data, settings, g) for run, g in zip(runs, generators)]
    together = min(sum(len(b) == settings.batch_size for b in bs) for bs in batches)
    totals = torch.zeros(len(runs), device=settings.device)
    for i in range(together):
        totals += step([bs[i] for bs in batches], generators) * settings.batch_size
        if on_batch is not None:
            on_batch()
    seen = [together * settings.batch_size] * len(runs)
    for k, (run, bs, g) in enumerate(zip(runs, batches, generators)):
        for batch in bs[together:]:
            x = settings.to_input(augmented(run.data, batch, settings, g), meta)
            totals[k] += train_step(run.net, run.optimizer, run.scaler, x,
                                    run.data.slice_labels[batch], run.weights,
                                    settings) * len(batch)
            seen[k] += len(batch)
    return [float(t) / max(n, 1) for t, n in zip(totals.cpu(), seen)]


@torch.no_grad()
def evaluate_stacked(stack: StackedDenseNet, runs: list[FoldRun], settings: Settings,
                     meta: dict) -> list[Evaluation]:
    """`FoldRun.evaluate` of every fold in one stacked pass over the validation slices.

    In evaluation mode a slice's logits do not depend on the rest of its batch, so a fold with
    fewer validation slices is padded with its first slice and the padding dropped.
    """
    stack.eval()
    chunk = 2 * settings.batch_size
    vals = [run.data.val for run in runs]
    longest = max(len(v) for v in vals)
    logits: list[list[torch.Tensor]] = [[] for _ in runs]
    for start in range(0, longest, chunk):
        width = min(chunk, longest - start)
        parts = []
        for v in vals:
            idx = v[start:start + width]
            idx = torch.cat([idx, v[:1].expand(width - len(idx))])
            parts.append(model_lib.prepare_input(runs[0].data.images[idx], meta))
        with settings.autocast():
            out = stack(torch.stack(parts, 1)).float()
        for k, v in enumerate(vals):
            logits[k].append(out[:max(0, min(width, len(v) - start)), k])
    return [score(torch.cat(parts), run.data.slice_labels[run.data.val], run.data.val_owner,
                  run.data.val_labels, run.weights) for parts, run in zip(logits, runs)]


def fit_stacked(runs: list[FoldRun], bars: Bars | None = None) -> None:
    """Train folds side by side as one `StackedDenseNet` until each stops.

    A fold that stops early leaves the stack; the others go on in a smaller one, the last one
    alone (with `train.cuda_graphs`, in a stack of one, so that its steps are replayed too).
    Checkpoints, histories and fold files are those of `fit_fold`.
    """
    settings, meta = runs[0].settings, runs[0].meta
    active = [run for run in runs if not run.finished]
    while len(active) > (0 if settings.cuda_graphs else 1):
        stack = StackedDenseNet([run.net for run in active], settings.channels_last)
        step = StackedStep(stack, active)
        while not any(run.finished for run in active):
            start = time.perf_counter()
            on_batch = None
            if bars is not None:
                on_batch = bars.new_epoch(
                    max(run.next_epoch for run in active),
                    max(math.ceil(len(run.data.train) / settings.batch_size) for run in active))
            losses = stacked_epoch(step, on_batch)
            evaluations = evaluate_stacked(stack, active, settings, meta)
            seconds = time.perf_counter() - start
            for run, loss, ev in zip(active, losses, evaluations):
                run.end_epoch(loss, ev, seconds)
                run.describe(bars, loss, ev)
        del step  # its graph before the stack's memory
        stack.unstack()
        active = [run for run in active if not run.finished]
    for run in active:  # the last one left trains alone
        fit_fold(run, bars)


def fitting_folds(requested: int | None, pending: int, per_fold_bytes: float,
                  free_bytes: float, device: str) -> int:
    """How many folds to stack on a GPU with `free_bytes` free, one fold needing about
    `per_fold_bytes`: `requested` if it fits (else a one-line error), all that fit for auto."""
    fits = max(1, int(GPU_MEMORY_HEADROOM * free_bytes // per_fold_bytes))
    if requested is None:
        return max(1, min(pending, fits))
    if min(requested, pending) > fits:
        raise SarcogradeError(
            f"train.concurrent_folds {requested} does not fit on {device}: one fold needs about "
            f"{per_fold_bytes / GIB:.1f} GiB and {free_bytes / GIB:.1f} GiB is free, room for "
            f"{fits}; use {fits} or fewer, or auto")
    return max(1, min(requested, pending))


def fold_memory(model_cfg: dict, settings: Settings, meta: dict) -> float:
    """Bytes of GPU memory one fold needs: a trial step of a fresh network (weights, Adam state,
    activations at the training batch), measured with torch.cuda.max_memory_allocated."""
    device = settings.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    net = model_lib.build_model(model_cfg).to(device)
    if settings.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = settings.optimizer(net)
    size = int(meta["size"])
    x = settings.to_input(torch.zeros(settings.batch_size, size, size, device=device), meta)
    labels = torch.zeros(settings.batch_size, dtype=torch.long, device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    net.train()
    train_step(net, optimizer, scaler, x, labels, torch.ones(2, device=device), settings)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del net, optimizer, x
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return float(peak)


def concurrent_folds(settings: Settings, pending: int, model_cfg: dict, meta: dict) -> int:
    """The number of folds to train side by side (`train.concurrent_folds`).

    auto: on a GPU, as many of the pending folds as its free memory holds; on a CPU one at a
    time (stacked training is slower on CPU cores: benchmarks/README.md). Stacking needs no
    dropout (its random draws are per network) and no fp16 (its loss scaling is per network).
    """
    requested = settings.concurrent_folds
    if pending <= 1 or requested == 1:
        return 1
    blockers = []
    if float(model_cfg.get("dropout", 0.0)) > 0:
        blockers.append("model.dropout > 0")
    if settings.amp_dtype == torch.float16:
        blockers.append("fp16 autocast (use bf16 or fp32)")
    if blockers:
        if requested is not None:
            raise SarcogradeError(f"train.concurrent_folds {requested} cannot be used with "
                                  f"{' and '.join(blockers)}; set it to 1 or auto")
        return 1
    if settings.device.type != "cuda":
        return min(requested or 1, pending)
    free = torch.cuda.mem_get_info(settings.device)[0]
    return fitting_folds(requested, pending, fold_memory(model_cfg, settings, meta), free,
                         str(settings.device))


def _read_checkpoint(path: Path) -> dict | None:
    """The fold's saved training state, None where there is none; a damaged one is reported in
    one line and the fold starts over (it is resume state only)."""
    if not path.is_file():
        return None
    try:
        return read_checkpoint(path)
    except SarcogradeError as exc:
        warn(f"{exc}; this fold starts over")
        return None


def plot_learning_curve(history: pd.DataFrame, best_epoch: int, title: str, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(history["epoch"], history["train_loss"], "o-", ms=3, label="training loss")
    ax.plot(history["epoch"], history["val_loss"], "o-", ms=3, label="validation loss")
    ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch ({best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("class-weighted cross-entropy")
    auc_ax = ax.twinx()
    auc_ax.plot(history["epoch"], history["val_auc"], "s:", ms=3, color="tab:green",
                label="validation AUC (patients)")
    auc_ax.set_ylim(0, 1)
    auc_ax.set_ylabel("AUC")
    handles = ax.get_legend_handles_labels()
    auc_handles = auc_ax.get_legend_handles_labels()
    ax.legend(handles[0] + auc_handles[0], handles[1] + auc_handles[1], fontsize=8, loc="best")
    ax.set_title(title)
    save_figure(fig, target)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels where torch has them (a warning where it has not), then restore.

    Without torch's filling of every new tensor (NaN for floats), which deterministic mode turns
    on to expose reads of uninitialised memory: no computation here reads one, and the fill
    doubles the kernels of a training step (535 more fills in a step of the quick DenseNet)."""
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS needs it
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]
        torch.utils.deterministic.fill_uninitialized_memory = previous[3]


def write_cv_predictions(out: Path, splits: list[Split]) -> dict[str, float]:
    """Gather the finished folds' out-of-fold predictions into cv_predictions.csv.

    Returns the patient-level AUC of each complete repeat ("repeat_0": ...).
    """
    frames = [read_cv_predictions(out / s.name / "val_predictions.csv", "val_predictions.csv")
              for s in splits if (out / s.name / "model.pt").is_file()]
    if not frames:
        return {}
    cv = pd.concat(frames, ignore_index=True)
    run_format.write_cv_predictions(out / "cv_predictions.csv", cv)
    n_folds = {r: sum(1 for s in splits if s.repeat == r) for r in {s.repeat for s in splits}}
    aucs = {}
    for repeat, rows in cv.groupby("repeat"):
        if rows["fold"].nunique() == n_folds[repeat] and rows["label"].nunique() == 2:
            aucs[f"repeat_{repeat}"] = float(roc_auc_score(rows["label"], rows["p_high"]))
    return aucs


def train_cv(cache: str | Path, out: str | Path, config: dict[str, Any], *, seed: int = 0,
             only_fold: int | None = None, sequence: str | None = None,
             device: str = "auto", executor: "executors.RayExecutor | None" = None,
             report_auc: bool = True) -> Path:
    """Cross-validated training of `config['model']` on CACHE into OUT (the `train` stage).

    `config` is a merged config (`sarcograde.config.load_config`); `train.folds` and
    `train.repeats` set the splits, `only_fold` trains one of them (0-based, as fold_XX).
    With a Ray `executor` each fold is one Ray task (`train_folds_on_ray`), which passes
    `report_auc=False`: the driver prints the out-of-fold AUC lines. Returns OUT.
    """
    cache, out = Path(cache), Path(out)
    model_cfg, train_cfg = config["model"], config["train"]
    settings = Settings.from_config(train_cfg, resolve_device(device))
    if settings.cuda_graphs and float(model_cfg.get("dropout", 0.0)) > 0:
        raise SarcogradeError("train.cuda_graphs cannot be used with model.dropout > 0 (its "
                              "random draws are not replayed); turn one of them off")
    slices = load_slices(cache, sequence)
    unknown = [pid for pid, label in zip(slices.patient_ids, slices.labels) if label < 0]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        warn(f"{len(unknown)} patient(s) without a grade left out of training: {shown}")
    known = np.flatnonzero(slices.labels >= 0)
    repeats = int(train_cfg["repeats"])
    splits, adaptation = make_splits([slices.patient_ids[i] for i in known], slices.labels[known],
                                     int(train_cfg["folds"]), repeats, seed)
    folds = len(splits) // repeats
    if adaptation:
        warn(adaptation)
    if only_fold is not None and not 0 <= only_fold < len(splits):
        raise SarcogradeError(f"--fold {only_fold} is out of range: this run has folds "
                              f"0..{len(splits) - 1}")
    pretrained = str(model_cfg.get("pretrained", "none"))
    if pretrained.lower() == "imagenet":
        pretrained = str(model_lib.imagenet_weights_file())  # stop now, not after folds.json
    meta = model_lib.input_meta(slices.size, pretrained.lower() != "none")

    # Everything that changes the numbers; not where or how fast they are computed.
    config_hash = hash_config({"model": model_cfg,
                               "train": {k: v for k, v in train_cfg.items() if k not in SPEED_ONLY},
                               "seed": seed, "sequence": slices.sequence,
                               "cache_hash": slices.cache_hash})
    try:
        previous = read_run_config(out, required=False)
    except SarcogradeError as exc:  # cannot tell which configuration trained the folds here
        raise SarcogradeError(f"{exc.problem.split(';')[0]}; use a new --out folder (or delete "
                              "this one to retrain)", path=exc.path) from None
    if previous is not None and previous.get("config_hash") != config_hash:
        raise SarcogradeError("this run folder was trained with another configuration, seed or "
                              "cache; use a new --out folder (or delete this one to retrain)",
                              path=out / "config.json")
    record = {**config, "cache": slices.cache_config, "cache_path": str(cache.resolve()),
              "cache_hash": slices.cache_hash, "sequence": slices.sequence, "seed": seed,
              "config_hash": config_hash}
    write_run_config(out, record)
    write_folds(out, Folds(folds=folds, folds_requested=int(train_cfg["folds"]),
                           repeats=repeats, seed=seed, adaptation=adaptation, splits=splits))

    todo = splits if only_fold is None else [splits[only_fold]]
    with RunRecord(out, config=record, inputs={"cache_index": cache / "index.csv"},
                   seed=seed) as run_record:
        if executor is None:
            # All slices stay on the training device once; a batch is a gather from them.
            images = torch.from_numpy(slices.images).to(settings.device)
            slice_labels = torch.from_numpy(np.maximum(slices.labels, 0)[slices.patient_index])
            slice_labels = slice_labels.to(settings.device)
            pending = [s for s in todo if not (out / s.name / "model.pt").is_file()]
            for split in todo:
                if split not in pending:
                    info(f"{split.name}: finished earlier, not retrained")
            together = concurrent_folds(settings, len(pending), model_cfg, meta)
            if together > 1:
                info(f"training {together} folds at a time, side by side on {settings.device}")
            with deterministic(), progress() as bar:
                bars = Bars.start(bar, len(todo), settings.max_epochs)
                bar.update(bars.folds, completed=len(todo) - len(pending))
                for first in range(0, len(pending), together):
                    group = pending[first:first + together]
                    bar.reset(bars.epochs, total=settings.max_epochs,
                              description=", ".join(s.name for s in group))
                    runs = [FoldRun(split, slices, images, slice_labels, model_cfg, pretrained,
                                    meta, settings, out, _fold_seed(seed, split, folds),
                                    config_hash) for split in group]
                    if len(runs) > 1 or settings.cuda_graphs:
                        fit_stacked(runs, bars)
                    else:
                        fit_fold(runs[0], bars)
                    for run in runs:
                        run.finish()
                        bar.advance(bars.folds)
            if settings.device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(settings.device) / GIB
                run_record.record["gpu_memory_peak_gib"] = round(peak, 2)
                info(f"GPU memory: at most {peak:.1f} GiB allocated "
                     f"(torch.cuda.max_memory_allocated)")
        else:
            train_folds_on_ray(executor, FoldJob(cache, out, config, seed, sequence, device, fold=0),
                               [splits.index(s) for s in todo
                                if not (out / s.name / "model.pt").is_file()])
        aucs = write_cv_predictions(out, splits)
        run_record.record["cv_auc"] = aucs
    for repeat, auc in aucs.items() if report_auc else ():
        info(f"out-of-fold patient AUC, {repeat.replace('_', ' ')}: {auc:.3f}")
    return out


@dataclass(frozen=True)
class FoldJob:
    """One fold of a run as a Ray task: `train_cv(..., only_fold=fold)` in the worker, the
    command a SLURM job array runs, so the fold's data, seed and resume are the local path's."""

    cache: Path
    out: Path
    config: dict
    seed: int
    sequence: str | None
    device: str
    fold: int
    threads: int = 1             # torch's CPU threads: the CPUs the task was given


def train_one_fold(job: FoldJob) -> str:
    """Train (or resume, after a dead worker) one fold; its folder name."""
    torch.set_num_threads(job.threads)
    train_cv(job.cache, job.out, job.config, seed=job.seed, only_fold=job.fold,
             sequence=job.sequence, device=job.device, report_auc=False)
    return f"fold {job.fold}"


def train_folds_on_ray(executor: "executors.RayExecutor", job: FoldJob, folds: list[int]) -> None:
    """The unfinished folds as Ray tasks: 1 GPU each where the cluster has GPUs (and --device
    allows), else an equal share of the cluster's CPUs (as torch threads)."""
    with executor:
        resources = executor.resources()
        gpus = 1 if resources.get("GPU", 0) >= 1 and job.device != "cpu" else 0
        cpus = 1 if gpus else max(1, int(resources.get("CPU", 1) // max(len(folds), 1)))
        jobs = [replace(job, fold=k, threads=cpus) for k in folds]
        executor.map(train_one_fold, jobs, label="train", names=[f"fold {k}" for k in folds],
                     num_cpus=cpus, num_gpus=gpus)


def _fold_seed(seed: int, split: Split, folds: int) -> int:
    return seed * 1000 + split.repeat * folds + split.fold


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cache", type=Path, help="cache folder written by `sarcograde preprocess`")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write (or resume)")
    parser.add_argument("--preset", choices=PRESETS, default="paper",
                        help="parameter preset (default: paper, the published method)")
    parser.add_argument("--config", type=Path, help="YAML file with model/train values on top "
                                                     "of the preset")
    parser.add_argument("--folds", type=int, help="folds per repeat (preset: 5)")
    parser.add_argument("--repeats", type=int, help="repeats of the k-fold split (paper: 3)")
    parser.add_argument("--fold", type=int, metavar="K",
                        help="train only split K (0-based, fold_KK), e.g. one job of an array")
    parser.add_argument("--pretrained", metavar="PATH|imagenet|none",
                        help="torchvision ImageNet DenseNet-161 weights: a file, 'imagenet' "
                             "(torch's checkpoint folder or download) or 'none' (from scratch)")
    parser.add_argument("--sequence", help="sequence to train on, where the cache holds several")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and "
                                                              "augmentation (default 0)")
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 autocast (faster on recent CPUs; GPUs use it by default)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all)")
    parser.add_argument("--concurrent-folds", metavar="auto|N",
                        help="folds trained side by side as one stacked network (default auto: "
                             "as many as the GPU's memory holds; 1 on a CPU)")
    executors.add_arguments(parser)


def _concurrent_folds(value: str | None) -> int | str | None:
    """--concurrent-folds as the config holds it: "auto", a whole number, or None (not given);
    anything else is passed on for `Settings` to refuse in one line."""
    return int(value) if value is not None and value.isdigit() else value


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.preset, args.config, {
        "model": {"pretrained": args.pretrained},
        "train": {"folds": args.folds, "repeats": args.repeats,
                  "amp": "bf16" if args.bf16 else None,
                  "concurrent_folds": _concurrent_folds(args.concurrent_folds)}})
    train_cv(args.cache, args.out, config, seed=args.seed, only_fold=args.fold,
             sequence=args.sequence, device=args.device,
             executor=executors.from_arguments(args))
    return 0
