"""Predict the grade of every patient in a cache with the ensemble of a training run.

Every fold model of RUN sees every tumour slice of each patient in CACHE (patients without a
grade too). The patient's probability of high grade is the paper's rule: the mean of the logits
over all fold models and all slices, then softmax (`--aggregate probabilities`: the mean of the
per-slice softmax probabilities instead). Writes `predictions.csv` (one row per patient, with the
spread of the fold models and one column per model), `predictions.run.json` beside it, and the
per-slice logits in `predictions.slices/`, which also lets an interrupted run resume.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import executors
from .artifacts import RunRecord
from .console import info, progress
from .engines import ENGINES, engine_for_precision, engine_record, use_engine
from .ensemble import (AGGREGATES, PRECISIONS, Ensemble, aggregate, check_cache_fits,
                       load_ensemble, models_file, precision_name, resolve_precision,
                       slice_logits)
from .errors import SarcogradeError
from .formats.cache import INDEX, CacheIndex, patient_key, read_cache_config, read_patient
from .formats.predictions import (PREDICTIONS, output_paths, read_slice_logits, slice_logits_key,
                                  slice_logits_path, write_predictions, write_slice_logits)
from .device import resolve_device
from .recalibrate import graded_recalibration, recalibrate_table


def prediction_row(patient_id: str, logits: np.ndarray, names: list[str],
                   mode: str = "logits") -> dict:
    """One row of predictions.csv (columns of docs/artifacts.md)."""
    p_high, per_model = aggregate(logits, mode)
    row = {"patient_id": patient_id, "p_high": p_high, "predicted": int(p_high > 0.5),
           "n_slices": logits.shape[1],
           # Sample SD over the fold models; undefined for a single model.
           "p_high_sd": float(per_model.std(ddof=1)) if len(per_model) > 1 else math.nan,
           "p_high_min": float(per_model.min()), "p_high_max": float(per_model.max())}
    row.update({f"p_{name}": float(p) for name, p in zip(names, per_model)})
    return row


def _patient_batches(index: pd.DataFrame, batch_size: int):
    """Groups of whole patients holding at least `batch_size` slices (the last may hold fewer),
    so that small patients share a batch and memory holds one group at a time."""
    group, n = [], 0
    for row in index.itertuples(index=False):
        group.append(row)
        n += int(row.n_slices)
        if n >= batch_size:
            yield group
            group, n = [], 0
    if group:
        yield group


def logits_key(ensemble: Ensemble, cache_dir: str | Path, row,
               precision: torch.dtype | None) -> str:
    """The key of a patient's saved logits: models, cache entry, precision and device."""
    return slice_logits_key(ensemble.key, patient_key(cache_dir, row), precision_name(precision),
                            ensemble.device.type)


def predict_cache(ensemble: Ensemble, cache_dir: str | Path, index: pd.DataFrame,
                  slices_dir: str | Path, *, batch_size: int = 64,
                  precision: torch.dtype | None = None) -> dict[str, np.ndarray]:
    """Per-slice logits (models, n, 2) of every patient in `index`, by patient id.

    Each patient's logits are saved in `slices_dir/<patient_id>.npz` with a key of the models,
    the patient's cache entry and the precision; a rerun reuses those whose key still matches
    and recomputes the others (a damaged file among them).
    """
    slices_dir = Path(slices_dir)
    size = int(ensemble.input_meta["size"])
    keys = {row.patient_id: logits_key(ensemble, cache_dir, row, precision)
            for row in index.itertuples(index=False)}
    results: dict[str, np.ndarray] = {}
    for row in index.itertuples(index=False):
        saved = read_slice_logits(slice_logits_path(slices_dir, row.patient_id), row.patient_id,
                                  keys[row.patient_id], len(ensemble.models))
        if saved is not None:
            results[row.patient_id] = saved
    todo = index[~index["patient_id"].isin(results)]
    if len(results):
        info(f"predict: {len(results)} patient(s) already done in {slices_dir}, "
             f"{len(todo)} to go")
    with progress() as bar:
        task = bar.add_task("predict (slices)", total=int(todo["n_slices"].sum()))
        for group in _patient_batches(todo, batch_size):
            images = [read_patient(cache_dir, row, ("image",), size)["image"] for row in group]
            logits = slice_logits(ensemble, np.concatenate(images), batch_size, precision)
            start = 0
            for row, image in zip(group, images):
                results[row.patient_id] = logits[:, start:start + len(image)]
                write_slice_logits(slice_logits_path(slices_dir, row.patient_id),
                                   results[row.patient_id], ensemble.names, keys[row.patient_id])
                start += len(image)
            bar.advance(task, int(sum(len(image) for image in images)))
    return results


# ---------------------------------------------------------------------------------------------
# Command line


@dataclass(frozen=True)
class PatientBatchJob:
    """Some patients of a cache as a Ray task: `predict_cache` in the worker, which leaves their
    logits in `slices_dir`, where the driver's own `predict_cache` then finds them."""

    run: Path
    cache: Path
    patients: tuple[str, ...]
    slices_dir: Path
    device: str
    batch_size: int
    precision: str
    threads: int = 1
    engine: str = "torch"


def predict_patient_batch(job: PatientBatchJob) -> int:
    """Predict (or reuse, after a dead worker) one batch of patients; how many."""
    torch.set_num_threads(job.threads)
    device = resolve_device(job.device)
    ensemble = load_ensemble(job.run, device, read_cache_config(job.cache).get("sequence"))
    predict_cache(use_engine(ensemble, job.engine), job.cache,
                  CacheIndex.read(job.cache).rows(patients=list(job.patients), drop_empty=True),
                  job.slices_dir, batch_size=job.batch_size,
                  precision=resolve_precision(job.precision, device))
    return len(job.patients)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, metavar="RUN|PKG",
                        help="training run folder (fold_XX/model.pt, folds.json), or a model "
                             "package from `sarcograde export` (its model of the cache's sequence)")
    parser.add_argument("cache", type=Path, help="preprocessed cache of the patients to grade")
    parser.add_argument("--out", type=Path, default=Path(PREDICTIONS),
                        help=f"output CSV (default: {PREDICTIONS})")
    parser.add_argument("--aggregate", choices=AGGREGATES, default="logits",
                        help="mean of the logits then softmax (the paper's rule, default), or "
                             "mean of the per-slice probabilities")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=64, help="slices per forward pass")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (default: the same numbers on every device), or bf16/fp16; "
                             "auto is bf16 on CUDA and fp32 on the CPU")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for the engine (default: all)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference engine (default auto: ONNX Runtime, else OpenVINO, "
                             "else torch on the CPU; torch on a GPU or below fp32)")
    executors.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise SarcogradeError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    executor = executors.from_arguments(args)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    cache_config = read_cache_config(args.cache)
    index = CacheIndex.read(args.cache).rows(drop_empty=True)
    ensemble = load_ensemble(args.run, device, cache_config.get("sequence"))
    check_cache_fits(ensemble, cache_config, args.cache)
    use_engine(ensemble, engine_for_precision(args.engine, precision))
    record_name, slices_dir = output_paths(args.out)
    config = {"aggregate": args.aggregate, "device": device.type, "batch_size": args.batch_size,
              "precision": precision_name(precision), "models": ensemble.names,
              "preprocess": ensemble.preprocess, **engine_record(ensemble.engine)}
    inputs = {"cache_index": Path(args.cache) / INDEX, "models": models_file(args.run)}
    with RunRecord(args.out.parent, config=config, inputs=inputs, name=record_name):
        # Patients handed out (Ray tasks) leave their slice logits in slices_dir, keyed with
        # the driver's device, where the pass below finds them; it computes the others here.
        executor.map_patient_batches(
            predict_patient_batch, PatientBatchJob(args.run, args.cache, (), slices_dir,
                                                   device.type, args.batch_size,
                                                   args.precision,
                                                   engine=ensemble.engine.name),
            index["patient_id"].tolist(), label="predict", gpu=device.type == "cuda")
        logits = predict_cache(ensemble, args.cache, index, slices_dir,
                               batch_size=args.batch_size, precision=precision)
        rows = [prediction_row(pid, logits[pid], ensemble.names, args.aggregate)
                for pid in index["patient_id"]]
        written = write_predictions(args.out, recalibrate_table(
            pd.DataFrame(rows), graded_recalibration(args.run)))
    n_high = int(written["predicted"].sum())
    info(f"predict: {len(rows)} patient(s), {n_high} predicted high grade, "
         f"{len(ensemble.names)} model(s) -> {args.out}")
    return 0
