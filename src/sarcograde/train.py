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
from rich.progress import Progress, TaskID
from sklearn.metrics import roc_auc_score

from . import executors
from . import model as model_lib
from .artifacts import RunRecord, hash_config, save_figure
from .config import PRESETS, load_config
from .console import info, progress, warn
from .data import AugmentParams, SliceSet, augment_batch, epoch_generator, epoch_seed, load_slices
from .ensemble import PRECISIONS, autocast, patients_p_high, resolve_precision
from .errors import SarcogradeError
from .formats import run as run_format
from .formats.run import (Folds, read_checkpoint, read_cv_predictions, read_run_config,
                          write_checkpoint, write_folds, write_history, write_run_config)
from .model import resolve_device
from .splits import Split, make_splits

CHECKPOINT = "checkpoint.pt"


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

    @classmethod
    def from_config(cls, train_cfg: dict[str, Any], device: torch.device) -> "Settings":
        amp = str(train_cfg.get("amp", "auto")).lower()
        cuda = device.type == "cuda"
        amp = "fp32" if amp in ("none", "false") else amp
        if amp not in PRECISIONS or (amp == "fp16" and not cuda):
            raise SarcogradeError(f"train.amp {amp!r} is not auto, none, bf16 or fp16 (GPU only)")
        amp_dtype = resolve_precision(amp, device)
        channels_last = train_cfg.get("channels_last", "auto")
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
                   channels_last=cuda if channels_last == "auto" else bool(channels_last))

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

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


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
             owner: torch.Tensor, patient_labels: np.ndarray, weights: torch.Tensor, meta: dict,
             settings: Settings) -> Evaluation:
    """Validation loss over slices and patient-level AUC, as `predict` aggregates slices.

    The loss uses the training fold's class weights, so that early stopping watches the
    objective being minimised, whatever the validation fold's grade balance.
    """
    model.eval()
    logits = []
    for start in range(0, len(images), 2 * settings.batch_size):
        x = settings.to_input(images[start:start + 2 * settings.batch_size], meta)
        with settings.autocast():
            logits.append(model(x).float())
    logits = torch.cat(logits)
    loss = F.cross_entropy(logits, labels, weight=weights).item()
    p_high = patients_p_high(logits.cpu().numpy(), owner.cpu().numpy(), len(patient_labels))
    auc = (float(roc_auc_score(patient_labels, p_high))
           if len(set(patient_labels.tolist())) == 2 else math.nan)
    return Evaluation(loss=loss, auc=auc, p_high=p_high)


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


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler, data: FoldData,
                weights: torch.Tensor, meta: dict, settings: Settings, generator: torch.Generator,
                on_batch=None) -> float:
    """One pass over the training slices in a seeded order; the mean class-weighted loss."""
    model.train()
    order = data.train[torch.randperm(len(data.train), generator=generator).to(data.train.device)]
    total = torch.zeros((), device=settings.device)
    seen = 0
    for batch in order.split(settings.batch_size):
        if len(batch) < 2:
            continue  # batch norm cannot train on a single slice
        x = data.images[batch]
        if settings.augment is not None:
            x = augment_batch(x, settings.augment, generator)
        x = settings.to_input(x, meta)
        with settings.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), data.slice_labels[batch], weight=weights)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.detach() * len(batch)
        seen += len(batch)
        if on_batch is not None:
            on_batch()
    return float(total) / max(seen, 1)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write the fold's training state after an epoch, atomically (see `fit_fold`)."""
    write_checkpoint(path, state)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class Bars:
    """The progress bars of a run: folds, epochs of the current fold, batches of the epoch."""

    progress: Progress
    folds: TaskID
    epochs: TaskID
    batches: TaskID

    @classmethod
    def start(cls, progress: Progress, n_folds: int, max_epochs: int) -> "Bars":
        return cls(progress, progress.add_task("folds", total=n_folds),
                   progress.add_task("epochs", total=max_epochs),
                   progress.add_task("batches", total=None))


def fit_fold(model: torch.nn.Module, data: FoldData, settings: Settings, meta: dict,
             weights: torch.Tensor, fold_dir: Path, seed: int, config_hash: str,
             bars: Bars | None = None) -> tuple[list[dict], int]:
    """Train one fold with early stopping, checkpointing every epoch; resume where one exists.

    Leaves the best epoch's weights in `model`; returns the history rows and the best epoch.
    Each epoch draws its shuffling and augmentation from its own seed, so an epoch run after a
    resume is the epoch an uninterrupted run would have run.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    scaler = torch.amp.GradScaler(settings.device.type,
                                  enabled=settings.amp_dtype == torch.float16)
    path = fold_dir / CHECKPOINT
    history: list[dict] = []
    best_state, best_loss, best_epoch, bad_epochs = None, math.inf, 0, 0
    state = _read_checkpoint(path)
    if state is not None:
        if state.get("config_hash") == config_hash:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            history, best_state = state["history"], state["best_state"]
            best_loss, best_epoch, bad_epochs = (state["best_loss"], state["best_epoch"],
                                                 state["bad_epochs"])
            info(f"{fold_dir.name}: resuming after epoch {len(history)}")
        else:
            warn(f"{fold_dir.name}: checkpoint of another configuration ignored")
    n_batches = math.ceil(len(data.train) / settings.batch_size)
    for epoch in range(len(history) + 1, settings.max_epochs + 1):
        if bad_epochs >= settings.patience:
            break
        start = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch))  # dropout, where configured
        on_batch = None
        if bars is not None:
            bars.progress.reset(bars.batches, total=n_batches, description=f"epoch {epoch}")
            on_batch = lambda: bars.progress.advance(bars.batches)  # noqa: E731
        train_loss = train_epoch(model, optimizer, scaler, data, weights, meta, settings,
                                 epoch_generator(seed, epoch), on_batch)
        ev = evaluate(model, data.images[data.val], data.slice_labels[data.val], data.val_owner,
                      data.val_labels, weights, meta, settings)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": ev.loss,
                        "val_auc": ev.auc, "lr": optimizer.param_groups[0]["lr"],
                        "seconds": time.perf_counter() - start})
        if ev.loss < best_loss:
            best_state, best_loss, best_epoch, bad_epochs = _cpu_state(model), ev.loss, epoch, 0
        else:
            bad_epochs += 1
        save_checkpoint(path, {"config_hash": config_hash, "model": _cpu_state(model),
                               "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                               "history": history, "best_state": best_state,
                               "best_loss": best_loss, "best_epoch": best_epoch,
                               "bad_epochs": bad_epochs})
        if bars is not None:
            bars.progress.update(bars.epochs, completed=epoch,
                                 description=f"{fold_dir.name} loss {train_loss:.3f} "
                                             f"val {ev.loss:.3f} AUC {ev.auc:.2f}")
    if best_state is None:
        raise SarcogradeError("training diverged: the validation loss was never finite",
                              path=fold_dir)
    model.load_state_dict(best_state)
    return history, best_epoch


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
    """Deterministic kernels where torch has them (a warning where it has not), then restore."""
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS needs it
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]


def train_fold(split: Split, slices: SliceSet, images: torch.Tensor, slice_labels: torch.Tensor,
               model_cfg: dict, pretrained: str, meta: dict, settings: Settings, out: Path,
               seed: int, config_hash: str, bars: Bars | None = None) -> None:
    """Train one split and write its folder; model.pt comes last, as the mark of a finished fold."""
    fold_dir = out / split.name
    data = fold_data(slices, split, images, slice_labels)
    train_labels = slices.labels[slices.patient_index[data.train.cpu().numpy()]]
    weights = torch.tensor(class_weights(train_labels) if settings.class_weighting != "none"
                           else np.ones(2), dtype=torch.float32, device=settings.device)
    torch.manual_seed(seed)  # the fresh head (and everything, without pretrained weights)
    net = model_lib.load_pretrained(model_lib.build_model(model_cfg), pretrained)
    net = net.to(settings.device)
    if settings.channels_last:
        net = net.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    history, best_epoch = fit_fold(net, data, settings, meta, weights, fold_dir, seed,
                                   config_hash, bars)
    ev = evaluate(net, images[data.val], slice_labels[data.val], data.val_owner, data.val_labels,
                  weights, meta, settings)
    run_format.write_cv_predictions(fold_dir / "val_predictions.csv", pd.DataFrame({
        "patient_id": data.val_patients, "repeat": split.repeat, "fold": split.fold,
        "label": data.val_labels, "p_high": ev.p_high}))
    frame = write_history(fold_dir / "history.csv", history)
    plot_learning_curve(frame, best_epoch, f"{split.name}: repeat {split.repeat}, fold {split.fold}",
                        fold_dir / "learning_curve.png")
    model_lib.save_fold_model(fold_dir / "model.pt", net, model_cfg=model_cfg, input_meta=meta,
                              preprocess_cfg=slices.cache_config, best_epoch=best_epoch,
                              repeat=split.repeat, fold=split.fold)
    (fold_dir / CHECKPOINT).unlink(missing_ok=True)
    info(f"{split.name}: best epoch {best_epoch} of {len(history)}, validation loss "
         f"{ev.loss:.3f}, patient AUC {ev.auc:.2f} ({time.perf_counter() - start:.0f} s)")


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
             device: str = "auto", executor: "executors.RayExecutor | None" = None) -> Path:
    """Cross-validated training of `config['model']` on CACHE into OUT (the `train` stage).

    `config` is a merged config (`sarcograde.config.load_config`); `train.folds` and
    `train.repeats` set the splits, `only_fold` trains one of them (0-based, as fold_XX).
    With a Ray `executor` each fold is one Ray task (`train_folds_on_ray`). Returns OUT.
    """
    cache, out = Path(cache), Path(out)
    model_cfg, train_cfg = config["model"], config["train"]
    settings = Settings.from_config(train_cfg, resolve_device(device))
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
    config_hash = hash_config({"model": model_cfg, "train": train_cfg, "seed": seed,
                               "sequence": slices.sequence, "cache_hash": slices.cache_hash})
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
            with deterministic(), progress() as bar:
                bars = Bars.start(bar, len(todo), settings.max_epochs)
                for split in todo:
                    if (out / split.name / "model.pt").is_file():
                        info(f"{split.name}: finished earlier, not retrained")
                    else:
                        bar.reset(bars.epochs, total=settings.max_epochs, description=split.name)
                        train_fold(split, slices, images, slice_labels, model_cfg, pretrained,
                                   meta, settings, out, _fold_seed(seed, split, folds),
                                   config_hash, bars)
                    bar.advance(bars.folds)
        else:
            train_folds_on_ray(executor, FoldJob(cache, out, config, seed, sequence, device, fold=0),
                               [splits.index(s) for s in todo
                                if not (out / s.name / "model.pt").is_file()])
        aucs = write_cv_predictions(out, splits)
        run_record.record["cv_auc"] = aucs
    for repeat, auc in aucs.items():
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
             sequence=job.sequence, device=job.device)
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
    executors.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.preset, args.config, {
        "model": {"pretrained": args.pretrained},
        "train": {"folds": args.folds, "repeats": args.repeats,
                  "amp": "bf16" if args.bf16 else None}})
    train_cv(args.cache, args.out, config, seed=args.seed, only_fold=args.fold,
             sequence=args.sequence, device=args.device,
             executor=executors.from_arguments(args))
    return 0
