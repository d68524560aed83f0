"""One fold in training: its network, optimiser, early stopping, checkpoints and fold files.

A fold's folder fills as it trains: `history.csv` after every epoch, `checkpoint.pt` (the resume
state) at most every `train.checkpoint_every_s`, and when it stops `val_predictions.csv`,
`learning_curve.png` and last `model.pt`, the mark of a finished fold.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import model as model_lib
from ..console import info, warn
from ..data import SliceSet, epoch_generator, epoch_seed
from ..errors import SarcogradeError
from ..formats import run as run_format
from ..formats.run import CHECKPOINT, read_checkpoint, write_checkpoint, write_history
from ..splits import Split
from .curves import plot_learning_curve
from .progress import Bars
from .settings import Settings, class_weights
from .step import Evaluation, evaluate, fold_data, train_epoch



def save_checkpoint(path: Path, state: dict) -> None:
    """Write the fold's training state after an epoch, atomically (see `FoldRun`)."""
    write_checkpoint(path, state)


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


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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

    def end_epoch(self, train_loss: float, ev: Evaluation, seconds: float,
                  bars: Bars | None = None) -> None:
        """Record the epoch (history.csv, rewritten at once so that a log or a report of a run in
        progress can follow it; the bars or a line), keep the best weights, checkpoint
        (atomically) when `train.checkpoint_every_s` have passed since the last checkpoint (or
        the start).

        A checkpoint of DenseNet-161 holds ~430 MB (weights, Adam's two moments, best weights),
        which takes longer to write than a fast GPU takes for an epoch. Resuming from an older
        checkpoint redoes the epochs after it, with the same numbers (each epoch has its seed)."""
        epoch = self.next_epoch
        self.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": ev.loss,
                             "val_auc": ev.auc, "lr": self.optimizer.param_groups[0]["lr"],
                             "seconds": seconds})
        write_history(self.fold_dir / run_format.HISTORY, self.history)
        if bars is not None:
            bars.end_epoch(self.fold_dir.name, self.history[-1])
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
        run_format.write_cv_predictions(self.fold_dir / run_format.VAL_PREDICTIONS, pd.DataFrame({
            "patient_id": data.val_patients, "repeat": split.repeat, "fold": split.fold,
            "label": data.val_labels, "p_high": ev.p_high}))
        frame = write_history(self.fold_dir / run_format.HISTORY, self.history)
        plot_learning_curve(frame, self.best_epoch,
                            f"{split.name}: repeat {split.repeat}, fold {split.fold}",
                            self.fold_dir / run_format.LEARNING_CURVE)
        model_lib.save_fold_model(self.fold_dir / run_format.MODEL, self.net, model_cfg=self.model_cfg,
                                  input_meta=self.meta, preprocess_cfg=self.slices.cache_config,
                                  best_epoch=self.best_epoch, repeat=split.repeat,
                                  fold=split.fold)
        self.path.unlink(missing_ok=True)
        info(f"{split.name}: best epoch {self.best_epoch} of {len(self.history)}, validation "
             f"loss {ev.loss:.3f}, patient AUC {ev.auc:.2f} "
             f"({time.perf_counter() - self.started:.0f} s)")


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
        run.end_epoch(train_loss, ev, time.perf_counter() - start, bars)
