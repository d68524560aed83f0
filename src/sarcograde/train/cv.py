"""Cross-validated training of a run (`train_cv`): the splits, the run's configuration and its
resume check, then every unfinished fold, here (one at a time or side by side) or as Ray tasks,
and last the out-of-fold predictions of the finished folds."""

from __future__ import annotations

import contextlib
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
from ..config_schema import spellings_before_renames
from ..console import info, progress, warn
from ..data import load_slices
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
from .step import fold_data


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


def train_cv(cache: str | Path, out: str | Path, config: dict[str, Any], *, seed: int = 0,
             only_fold: int | None = None, sequence: str | None = None,
             device: str = "auto", executor: "executors.RayExecutor | None" = None,
             report_auc: bool = True) -> Path:
    """Cross-validated training of `config['model']` on CACHE into OUT (the `train` stage).

    `config` is a merged config (`sarcograde.config.load_config`); `train.folds` and
    `train.repeats` set the splits, `only_fold` trains one of them (0-based, as fold_XX).
    With a Ray `executor` each fold is one Ray task (`train_folds_on_ray`), which passes
    `report_auc=False`: the driver prints the out-of-fold AUC lines (the paper preset's epoch
    time on a CPU is said by a local run only). Returns OUT.
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
    numbers = {"model": model_cfg,
               "train": {k: v for k, v in train_cfg.items() if k not in SPEED_ONLY},
               "seed": seed, "sequence": slices.sequence, "cache_hash": slices.cache_hash}
    config_hash = hash_config(numbers)
    try:
        previous = read_run_config(out, required=False)
    except SarcogradeError as exc:  # cannot tell which configuration trained the folds here
        raise SarcogradeError(f"{exc.problem.split(';')[0]}; use a new --out folder (or delete "
                              "this one to retrain)", path=exc.path) from None
    if previous is not None and previous.get("config_hash") in {
            hash_config({**numbers, "train": spelt})
            for spelt in spellings_before_renames("train", numbers["train"])}:
        config_hash = previous["config_hash"]  # the same settings under their old names
    if previous is not None and previous.get("config_hash") != config_hash:
        raise SarcogradeError("this run folder was trained with another configuration, seed or "
                              "cache; use a new --out folder (or delete this one to retrain)",
                              path=out / run_format.CONFIG)
    record = {**config, "cache": slices.cache_config, "cache_path": str(cache.resolve()),
              "cache_hash": slices.cache_hash, "sequence": slices.sequence, "seed": seed,
              "config_hash": config_hash}
    write_run_config(out, record)
    write_folds(out, Folds(folds=folds, folds_requested=int(train_cfg["folds"]),
                           repeats=repeats, seed=seed, adaptation=adaptation, splits=splits))

    todo = splits if only_fold is None else [splits[only_fold]]
    with RunRecord(out, config=record, inputs={"cache_index": cache / cache_format.INDEX},
                   seed=seed) as run_record:
        if executor is None:
            # All slices stay on the training device once; a batch is a gather from them.
            images = torch.from_numpy(slices.images).to(settings.device)
            slice_labels = torch.from_numpy(np.maximum(slices.labels, 0)[slices.patient_index])
            slice_labels = slice_labels.to(settings.device)
            pending = [s for s in todo if not (out / s.name / run_format.MODEL).is_file()]
            for split in todo:
                if split not in pending:
                    info(f"{split.name}: finished earlier, not retrained")
            together = concurrent_folds(settings, len(pending), model_cfg, meta)
            if together > 1:
                info(f"training {together} folds at a time, side by side on {settings.device}")
            if pending and report_auc:  # not in a Ray fold task: the driver speaks for the run
                say_epoch_time(config, settings, meta, len(
                    fold_data(slices, pending[0], images, slice_labels).train))
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
                                if not (out / s.name / run_format.MODEL).is_file()])
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
