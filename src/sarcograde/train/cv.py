"""Cross-validated training of a run (`train_cv`): the splits, the run's configuration and its
resume check, then the unfinished folds as an executor's tasks (`train_folds`), and last the
out-of-fold predictions of the finished folds.

A fold trains with `train.threads_per_fold` CPU threads wherever it runs, so its numbers do not
depend on the executor or the machine's cores: on CPUs the folds run side by side as separate
tasks (worker processes locally, Ray tasks), as many at a time as the cores hold; on a GPU the
local executor trains them here, one at a time or stacked (`train.concurrent_folds`).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
import torch.utils.deterministic
from sklearn.metrics import roc_auc_score

from .. import executors
from .. import model as model_lib
from ..artifacts import RunRecord, hash_config
from ..console import info, progress, warn
from ..data import SliceSet, load_slices
from ..device import resolve_device
from ..errors import SarcogradeError
from ..formats import cache as cache_format
from ..formats import run as run_format
from ..formats.run import (Folds, read_cv_predictions, read_run_config, write_folds,
                           write_run_config)
from ..splits import Split, make_splits
from .cpu_estimate import say_epoch_time
from .fold import FoldRun, fit_fold
from .memory import GIB, concurrent_folds
from .progress import Bars
from .settings import SPEED_ONLY, Settings
from .stacked import fit_stacked


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


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's CPU threads in this block, then as they were: a CPU's sums are split over its
    threads, and another split rounds differently, so a fold's threads are part of its numbers."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def write_cv_predictions(out: Path, splits: list[Split]) -> dict[str, float]:
    """Gather the finished folds' out-of-fold predictions into cv_predictions.csv.

    Returns the patient-level AUC of each complete repeat ("repeat_0": ...).
    """
    frames = [read_cv_predictions(out / s.name / run_format.VAL_PREDICTIONS, run_format.VAL_PREDICTIONS)
              for s in splits if (out / s.name / run_format.MODEL).is_file()]
    if not frames:
        return {}
    cv = pd.concat(frames, ignore_index=True)
    run_format.write_cv_predictions(out / run_format.CV_PREDICTIONS, cv)
    n_folds = {r: sum(1 for s in splits if s.repeat == r) for r in {s.repeat for s in splits}}
    aucs = {}
    for repeat, rows in cv.groupby("repeat"):
        if rows["fold"].nunique() == n_folds[repeat] and rows["label"].nunique() == 2:
            aucs[f"repeat_{repeat}"] = float(roc_auc_score(rows["label"], rows["p_high"]))
    return aucs


@dataclass(frozen=True)
class FoldJob:
    """Some folds of a run as one task (`train_folds`), here, in a worker process or on Ray:
    what it needs to derive the run's slices, splits and seeds as `train_cv` does, so that a
    fold trains to the same numbers however it is run."""

    cache: Path
    out: Path
    config: dict
    seed: int
    sequence: str | None
    device: str
    folds: tuple[int, ...] = ()   # indices into the run's splits


@dataclass(frozen=True)
class _Run:
    """What a run's configuration, seed and cache make of its folds (`_prepare`)."""

    splits: list[Split]
    folds: int               # per repeat
    settings: Settings
    meta: dict
    pretrained: str          # a weights file, or none
    config_hash: str         # of everything that changes the numbers
    adaptation: str | None   # fewer folds than asked, and why


def _prepare(job: FoldJob) -> tuple[_Run, SliceSet]:
    config = job.config
    model_cfg, train_cfg = config["model"], config["train"]
    settings = Settings.from_config(train_cfg, resolve_device(job.device))
    if settings.cuda_graphs and float(model_cfg.get("dropout", 0.0)) > 0:
        raise SarcogradeError("train.cuda_graphs cannot be used with model.dropout > 0 (its "
                              "random draws are not replayed); turn one of them off")
    slices = load_slices(job.cache, job.sequence)
    unknown = [pid for pid, label in zip(slices.patient_ids, slices.labels) if label < 0]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        warn(f"{len(unknown)} patient(s) without a grade left out of training: {shown}")
    known = np.flatnonzero(slices.labels >= 0)
    repeats = int(train_cfg["repeats"])
    splits, adaptation = make_splits([slices.patient_ids[i] for i in known], slices.labels[known],
                                     int(train_cfg["folds"]), repeats, job.seed)
    if adaptation:
        warn(adaptation)
    pretrained = str(model_cfg.get("pretrained", "none"))
    if pretrained.lower() == "imagenet":
        pretrained = str(model_lib.imagenet_weights_file())  # stop now, not after folds.json
    meta = model_lib.input_meta(slices.size, pretrained.lower() != "none")
    config_hash = hash_config(_hashed(config, job.seed, slices.sequence, slices.cache_hash))
    return _Run(splits, len(splits) // repeats, settings, meta, pretrained, config_hash,
                adaptation), slices


def _hashed(config: dict, seed: int, sequence: str, cache_hash: str) -> dict:
    """Everything that changes the numbers; not where or how fast they are computed."""
    return {"model": config["model"],
            "train": {k: v for k, v in config["train"].items() if k not in SPEED_ONLY},
            "seed": seed, "sequence": sequence, "cache_hash": cache_hash}


def _difference(before: dict, now: dict) -> str:
    """The first part of two `_hashed` configurations that differs, as `train.x 2 there, 1
    here`, or the cache."""
    now = json.loads(json.dumps(now))  # as config.json holds it
    for section in ("model", "train"):
        old, new = before.get(section) or {}, now[section]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return f"{section}.{key} {json.dumps(old.get(key))} there, " \
                       f"{json.dumps(new.get(key))} here"
    for key in ("seed", "sequence"):
        if before.get(key) != now[key]:
            return f"{key} {json.dumps(before.get(key))} there, {json.dumps(now[key])} here"
    return "another cache"


def _check_resume(out: Path, config: dict, seed: int, slices: SliceSet, config_hash: str) -> None:
    """Refuse, in one line naming what differs, a run folder trained with other numbers."""
    try:
        previous = read_run_config(out, required=False)
    except SarcogradeError as exc:  # cannot tell which configuration trained the folds here
        raise SarcogradeError(f"{exc.problem.split(';')[0]}; use a new --out folder (or delete "
                              "this one to retrain)", path=exc.path) from None
    if previous is not None and previous.get("config_hash") != config_hash:
        before = _hashed(previous, previous.get("seed"), previous.get("sequence"),
                         previous.get("cache_hash")) if "train" in previous else {}
        differs = _difference(before, _hashed(config, seed, slices.sequence, slices.cache_hash))
        raise SarcogradeError(f"this run folder was trained with another configuration, seed or "
                              f"cache ({differs}); use a new --out folder (or delete this one to "
                              "retrain)", path=out / run_format.CONFIG)


def train_cv(cache: str | Path, out: str | Path, config: dict[str, Any], *, seed: int = 0,
             only_fold: int | None = None, sequence: str | None = None,
             device: str = "auto",
             executor: "executors.LocalExecutor | executors.RayExecutor | None" = None) -> Path:
    """Cross-validated training of `config['model']` on CACHE into OUT (the `train` stage).

    `config` is a merged config (`sarcograde.config.load_config`); `train.folds` and
    `train.repeats` set the splits, `only_fold` trains one of them (0-based, as fold_XX). The
    unfinished folds are `executor`'s tasks (default: a `LocalExecutor`). Returns OUT.
    """
    cache, out = Path(cache), Path(out)
    executor = executor or executors.LocalExecutor()
    job = FoldJob(cache, out, config, seed, sequence, device)
    run, slices = _prepare(job)
    splits = run.splits
    if only_fold is not None and not 0 <= only_fold < len(splits):
        raise SarcogradeError(f"--fold {only_fold} is out of range: this run has folds "
                              f"0..{len(splits) - 1}")
    _check_resume(out, config, seed, slices, run.config_hash)
    record = {**config, "cache": slices.cache_config, "cache_path": str(cache.resolve()),
              "cache_hash": slices.cache_hash, "sequence": slices.sequence, "seed": seed,
              "config_hash": run.config_hash}
    write_run_config(out, record)
    write_folds(out, Folds(folds=run.folds, folds_requested=int(config["train"]["folds"]),
                           repeats=len(splits) // run.folds, seed=seed,
                           adaptation=run.adaptation, splits=splits))

    todo = splits if only_fold is None else [splits[only_fold]]
    pending = [splits.index(s) for s in todo if not (out / s.name / run_format.MODEL).is_file()]
    for split in todo:
        if splits.index(split) not in pending:
            info(f"{split.name}: finished earlier, not retrained")
    training_slices = _training_slices(slices, splits[pending[0]]) if pending else 0
    inputs = {"cache_index": cache / cache_format.INDEX}
    del slices  # the tasks load their own: a worker process or a Ray worker has none of ours
    with RunRecord(out, config=record, inputs=inputs, seed=seed) as run_record:
        peaks = _train_pending(executor, job, run, pending, training_slices)
        if peaks:
            run_record.record["gpu_memory_peak_gib"] = round(max(peaks), 2)
            info(f"GPU memory: at most {max(peaks):.1f} GiB allocated "
                 f"(torch.cuda.max_memory_allocated)")
        aucs = write_cv_predictions(out, splits)
        run_record.record["cv_auc"] = aucs
    for repeat, auc in aucs.items():
        info(f"out-of-fold patient AUC, {repeat.replace('_', ' ')}: {auc:.3f}")
    return out


def _training_slices(slices: SliceSet, split: Split) -> int:
    return int(np.isin(np.asarray(slices.patient_ids)[slices.patient_index], split.train).sum())


def _train_pending(executor: "executors.LocalExecutor | executors.RayExecutor", job: FoldJob,
                   run: _Run, pending: list[int], training_slices: int) -> list[float]:
    """Train the splits `pending` (indices) as `executor`'s tasks; the GPU memory peaks (GiB)
    of the tasks that trained on a GPU.

    A task of `train.threads_per_fold` CPUs, or of 1 GPU where the executor has GPUs (and
    --device allows). One fold per task, unless the executor runs one such task at a time (then
    one task trains them all, here on a local GPU, stacked where `train.concurrent_folds` asks)
    or the folds may be stacked (then as many tasks as run at once, each a stack)."""
    if not pending:
        return []
    settings = run.settings
    threads = settings.threads_per_fold
    with executor:
        gpus = int(executor.resources().get("GPU", 0) >= 1 and job.device != "cpu")
        slots = executor.slots(num_cpus=threads, num_gpus=gpus)
        if not gpus:
            with torch_threads(threads):  # the line is about an epoch of one fold, as it trains
                say_epoch_time(job.config, settings, run.meta, training_slices)
        tasks = 1 if slots == 1 else min(slots, len(pending)) if _stacks(settings) else len(pending)
        jobs = [replace(job, folds=tuple(int(k) for k in part))
                for part in np.array_split(pending, tasks)]
        peaks = executor.map(train_folds, jobs, label="train",
                             names=[", ".join(run.splits[k].name for k in j.folds) for j in jobs],
                             num_cpus=threads, num_gpus=gpus)
    return [peak for peak in peaks if peak is not None]


def _stacks(settings: Settings) -> bool:
    """Whether `train.concurrent_folds` may train folds of a task side by side here."""
    return settings.concurrent_folds != 1 and (settings.concurrent_folds is not None
                                               or settings.device.type == "cuda")


def train_folds(job: FoldJob) -> float | None:
    """Train (or resume, after a dead worker or an interruption) the folds of `job`, in this
    process, with `train.threads_per_fold` CPU threads; the GPU memory peak in GiB (None on a
    CPU)."""
    run, slices = _prepare(job)
    settings = run.settings
    splits = [run.splits[k] for k in job.folds]
    with torch_threads(settings.threads_per_fold):
        # All slices stay on the training device once; a batch is a gather from them.
        images = torch.from_numpy(slices.images).to(settings.device)
        slice_labels = torch.from_numpy(np.maximum(slices.labels, 0)[slices.patient_index])
        slice_labels = slice_labels.to(settings.device)
        model_cfg = job.config["model"]
        together = concurrent_folds(settings, len(splits), model_cfg, run.meta)
        if together > 1:
            info(f"training {together} folds at a time, side by side on {settings.device}")
        with deterministic(), progress() as bar:
            bars = Bars.start(bar, len(splits), settings.max_epochs)
            for first in range(0, len(splits), together):
                group = splits[first:first + together]
                bar.reset(bars.epochs, total=settings.max_epochs,
                          description=", ".join(s.name for s in group))
                runs = [FoldRun(split, slices, images, slice_labels, model_cfg, run.pretrained,
                                run.meta, settings, job.out, _fold_seed(job.seed, split, run.folds),
                                run.config_hash) for split in group]
                if len(runs) > 1 or settings.cuda_graphs:
                    fit_stacked(runs, bars)
                else:
                    fit_fold(runs[0], bars)
                for fold_run in runs:
                    fold_run.finish()
                    bar.advance(bars.folds)
    if settings.device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(settings.device) / GIB


def _fold_seed(seed: int, split: Split, folds: int) -> int:
    return seed * 1000 + split.repeat * folds + split.fold
