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
import contextlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import softmax

from . import executors
from . import model as model_lib
from .artifacts import RunRecord, hash_config, hash_path, read_json, write_csv, write_npz
from .console import info, progress, warn
from .errors import SarcogradeError
from .model import resolve_device

AGGREGATES = ("logits", "probabilities")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Keys of the cache's config.json that name the cohort, not the processing: a test cohort's cache
# differs from the training cache in these and still fits the models.
COHORT_KEYS = frozenset({"manifest"})


# ---------------------------------------------------------------------------------------------
# The ensemble of a training run


@dataclass
class Ensemble:
    """The fold models of a training run, loaded for inference."""

    run_dir: Path
    names: list[str]                  # "fold_00", ... in folds.json order
    models: list[torch.nn.Module]
    metas: list[dict]
    device: torch.device
    key: str                          # hash of the model files: changes when any model changes
    preprocess: dict = field(default_factory=dict)

    @property
    def input_meta(self) -> dict:
        return self.metas[0]["input"]


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32.

    `auto` is bf16 on a CUDA device that supports it (fp16 otherwise) and fp32 on the CPU, where
    reduced precision is slower on most processors; bf16 and fp16 can always be asked for.
    """
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def load_ensemble(run_dir: str | Path, device: torch.device | str = "cpu") -> Ensemble:
    """Load every fold model listed in RUN/folds.json, checking that they share their input."""
    run_dir = Path(run_dir)
    folds_path = run_dir / "folds.json"
    if not folds_path.is_file():
        raise SarcogradeError("not a training run: folds.json missing (run `sarcograde train`)",
                              path=run_dir)
    try:
        splits = read_json(folds_path)["splits"]
        names = [split["name"] for split in splits]
    except (ValueError, KeyError, TypeError) as exc:
        raise SarcogradeError(f"unreadable folds.json ({exc})", path=folds_path) from None
    if not names:
        raise SarcogradeError("folds.json lists no fold", path=folds_path)
    device = torch.device(device)
    models, metas, hashes = [], [], []
    for name in names:
        path = run_dir / name / "model.pt"
        if not path.is_file():
            raise SarcogradeError("model missing: training not finished "
                                  "(rerun `sarcograde train` on this run to resume)", path=path)
        module, meta = model_lib.load_fold_model(path, device=device)
        models.append(module)
        metas.append(meta)
        hashes.append(hash_path(path))
    first = metas[0]
    for name, meta in zip(names[1:], metas[1:]):
        for part in ("input", "preprocess"):
            if meta.get(part) != first.get(part):
                raise SarcogradeError(
                    f"fold models disagree on their {part} ({names[0]}: {first.get(part)}, "
                    f"{name}: {meta.get(part)}); a run's models must share it", path=run_dir)
    return Ensemble(run_dir=run_dir, names=names, models=models, metas=metas, device=device,
                    key=hash_config(hashes), preprocess=dict(first.get("preprocess") or {}))


# ---------------------------------------------------------------------------------------------
# The cache written by `preprocess`


def read_cache_config(cache_dir: str | Path) -> dict:
    path = Path(cache_dir) / "config.json"
    if not path.is_file():
        raise SarcogradeError("not a preprocessed cache: config.json missing "
                              "(run `sarcograde preprocess`)", path=cache_dir)
    return read_json(path)


def check_cache_fits(ensemble: Ensemble, cache_config: dict, cache_dir: str | Path) -> None:
    """Stop when the cache was not preprocessed the way the models were trained."""
    keys = (set(ensemble.preprocess) | set(cache_config)) - COHORT_KEYS
    differ = [f"{k} {ensemble.preprocess.get(k)!r} (models) vs {cache_config.get(k)!r} (cache)"
              for k in sorted(keys) if ensemble.preprocess.get(k) != cache_config.get(k)]
    if differ:
        raise SarcogradeError("wrong cache for this run, preprocess it with the run's parameters: "
                              + "; ".join(differ), path=Path(cache_dir) / "config.json")


def read_index(cache_dir: str | Path, patients: list[str] | None = None) -> pd.DataFrame:
    """CACHE/index.csv (patient_id as text, label as nullable integer), optionally a subset."""
    path = Path(cache_dir) / "index.csv"
    if not path.is_file():
        raise SarcogradeError("not a preprocessed cache: index.csv missing", path=cache_dir)
    index = pd.read_csv(path, dtype={"patient_id": str, "npz": str, "key": str})
    missing = {"patient_id", "npz", "n_slices"} - set(index.columns)
    if missing:
        raise SarcogradeError(f"index.csv lacks column(s) {', '.join(sorted(missing))}",
                              path=path)
    duplicated = index["patient_id"][index["patient_id"].duplicated()].tolist()
    if duplicated:
        raise SarcogradeError(f"patient(s) listed twice: {', '.join(duplicated)}", path=path)
    for column in ("grade", "label"):
        if column not in index:
            index[column] = pd.NA
        index[column] = pd.to_numeric(index[column], errors="coerce").astype("Int64")
    if "key" not in index:
        index["key"] = ""
    index["key"] = index["key"].fillna("")
    if patients is not None:
        unknown = sorted(set(patients) - set(index["patient_id"]))
        if unknown:
            raise SarcogradeError(f"patient(s) not in the cache: {', '.join(unknown)}", path=path)
        index = index[index["patient_id"].isin(patients)]
    empty = index["n_slices"] == 0
    if empty.any():  # as in training: nothing to predict from, so left out (and listed)
        warn(f"{path}: no tumour slices, left out: {', '.join(index.loc[empty, 'patient_id'])}")
        index = index[~empty]
    if index.empty:
        raise SarcogradeError("no patient to work on", path=path)
    return index.reset_index(drop=True)


def load_patient(cache_dir: str | Path, row, size: int | None = None) -> dict[str, np.ndarray]:
    """One patient's NPZ from the cache, checked: image (n,S,S), mask, z_mm, pixel_mm, ..."""
    path = Path(cache_dir) / row.npz
    if not path.is_file():
        raise SarcogradeError("cache file missing (rerun `sarcograde preprocess`)",
                              patient=row.patient_id, path=path)
    try:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:  # truncated or not an NPZ
        raise SarcogradeError(f"unreadable cache file ({exc})", patient=row.patient_id,
                              path=path) from None
    image = arrays.get("image")
    if image is None or image.ndim != 3 or image.shape[0] == 0:
        shape = None if image is None else image.shape
        raise SarcogradeError(f"expected a non-empty image of shape (n, S, S), found {shape}",
                              patient=row.patient_id, path=path)
    if not np.isfinite(image).all():
        raise SarcogradeError("image holds NaN or infinite values", patient=row.patient_id,
                              path=path)
    if size is not None and image.shape[1:] != (size, size):
        raise SarcogradeError(f"slices are {image.shape[1]}x{image.shape[2]}, the models take "
                              f"{size}x{size}: wrong cache for this run",
                              patient=row.patient_id, path=path)
    return arrays


def patient_key(cache_dir: str | Path, row) -> str:
    """What a patient's cache entry holds: the index's key, else the NPZ file's hash."""
    return row.key or hash_path(Path(cache_dir) / row.npz)


# ---------------------------------------------------------------------------------------------
# Inference and aggregation


def slice_logits(ensemble: Ensemble, images: np.ndarray, batch_size: int = 64,
                 precision: torch.dtype | None = None) -> np.ndarray:
    """Logits of every fold model for every slice: float32 array (models, n, 2)."""
    out = np.empty((len(ensemble.models), len(images), 2), dtype=np.float32)
    autocast = (torch.autocast(ensemble.device.type, dtype=precision) if precision is not None
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        for start in range(0, len(images), batch_size):
            # Half-precision slices travel to the device, the affine input map runs there.
            batch = torch.from_numpy(images[start:start + batch_size]).to(ensemble.device)
            batch = model_lib.prepare_input(batch, ensemble.input_meta)
            for m, net in enumerate(ensemble.models):
                out[m, start:start + len(batch)] = net(batch).float().cpu().numpy()
    return out


def aggregate(logits: np.ndarray, mode: str = "logits") -> tuple[float, np.ndarray]:
    """The patient's p_high and each model's p_high from per-slice logits (models, n, 2).

    `logits` (the paper's rule): softmax of the mean logits, over models and slices for the
    ensemble, over slices for each model. `probabilities`: the mean of per-slice softmax p_high.
    """
    if mode == "logits":
        p_high = softmax(logits.mean(axis=(0, 1), dtype=np.float64))[1]
        per_model = softmax(logits.mean(axis=1, dtype=np.float64), axis=-1)[:, 1]
    elif mode == "probabilities":
        probs = softmax(logits.astype(np.float64), axis=-1)[..., 1]
        p_high, per_model = probs.mean(), probs.mean(axis=1)
    else:
        raise ValueError(f"unknown aggregate {mode!r}; choose one of {AGGREGATES}")
    return float(p_high), per_model


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


def predict_cache(ensemble: Ensemble, cache_dir: str | Path, index: pd.DataFrame,
                  slices_dir: str | Path, *, batch_size: int = 64,
                  precision: torch.dtype | None = None) -> dict[str, np.ndarray]:
    """Per-slice logits (models, n, 2) of every patient in `index`, by patient id.

    Each patient's logits are saved in `slices_dir/<patient_id>.npz` with a key of the models,
    the patient's cache entry and the precision; a rerun reuses those whose key still matches.
    """
    slices_dir = Path(slices_dir)
    size = int(ensemble.input_meta["size"])
    keys = {row.patient_id: hash_config({"models": ensemble.key,
                                         "patient": patient_key(cache_dir, row),
                                         "precision": precision_name(precision),
                                         "device": ensemble.device.type})
            for row in index.itertuples(index=False)}
    results: dict[str, np.ndarray] = {}
    for row in index.itertuples(index=False):
        done = slices_dir / f"{row.patient_id}.npz"
        if done.is_file():
            with np.load(done) as npz:
                if str(npz["key"]) == keys[row.patient_id]:
                    results[row.patient_id] = npz["logits"]
    todo = index[~index["patient_id"].isin(results)]
    if len(results):
        info(f"predict: {len(results)} patient(s) already done in {slices_dir}, "
             f"{len(todo)} to go")
    with progress() as bar:
        task = bar.add_task("predict (slices)", total=int(todo["n_slices"].sum()))
        for group in _patient_batches(todo, batch_size):
            arrays = [load_patient(cache_dir, row, size) for row in group]
            images = np.concatenate([a["image"] for a in arrays])
            logits = slice_logits(ensemble, images, batch_size, precision)
            start = 0
            for row, a in zip(group, arrays):
                n = len(a["image"])
                results[row.patient_id] = logits[:, start:start + n]
                write_npz(slices_dir / f"{row.patient_id}.npz",
                          logits=results[row.patient_id], models=np.array(ensemble.names),
                          key=np.array(keys[row.patient_id]))
                start += n
            bar.advance(task, len(images))
    return results


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


def predict_patient_batch(job: PatientBatchJob) -> int:
    """Predict (or reuse, after a dead worker) one batch of patients; how many."""
    torch.set_num_threads(job.threads)
    device = resolve_device(job.device)
    predict_cache(load_ensemble(job.run, device), job.cache,
                  read_index(job.cache, list(job.patients)), job.slices_dir,
                  batch_size=job.batch_size, precision=resolve_precision(job.precision, device))
    return len(job.patients)


def predict_on_ray(executor: "executors.RayExecutor", job: PatientBatchJob,
                   patients: list[str]) -> None:
    """The patients in batches, one Ray task each: 1 GPU where the device is CUDA, else 1 CPU;
    two batches per slot of the cluster, so that a slow batch does not leave slots idle."""
    with executor:
        resources = executor.resources()
        gpus = 1 if job.device == "cuda" else 0
        slots = max(1, int(resources.get("GPU", 0) if gpus else resources.get("CPU", 1)))
        batches = [tuple(b) for b in np.array_split(np.array(patients, dtype=object),
                                                     min(len(patients), 2 * slots)) if len(b)]
        executor.map(predict_patient_batch, [replace(job, patients=b) for b in batches],
                     label="predict", names=[f"patients {b[0]}..{b[-1]}" for b in batches],
                     num_cpus=1, num_gpus=gpus)


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="training run folder (fold_XX/model.pt, folds.json)")
    parser.add_argument("cache", type=Path, help="preprocessed cache of the patients to grade")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"),
                        help="output CSV (default: predictions.csv)")
    parser.add_argument("--aggregate", choices=AGGREGATES, default="logits",
                        help="mean of the logits then softmax (the paper's rule, default), or "
                             "mean of the per-slice probabilities")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=64, help="slices per forward pass")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all)")
    executors.add_arguments(parser)


def output_paths(out: Path) -> tuple[str, Path]:
    """The run record's name and the per-slice folder that go with an output CSV:
    `<stem>.run.json` (its folder may hold another stage's run.json) and `<stem>.slices/`."""
    return f"{out.stem}.run.json", out.with_name(f"{out.stem}.slices")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise SarcogradeError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    executor = executors.from_arguments(args)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    cache_config = read_cache_config(args.cache)
    index = read_index(args.cache)
    ensemble = load_ensemble(args.run, device)
    check_cache_fits(ensemble, cache_config, args.cache)
    record_name, slices_dir = output_paths(args.out)
    config = {"aggregate": args.aggregate, "device": device.type, "batch_size": args.batch_size,
              "precision": precision_name(precision), "models": ensemble.names,
              "preprocess": ensemble.preprocess}
    inputs = {"cache_index": Path(args.cache) / "index.csv", "folds": Path(args.run) / "folds.json"}
    with RunRecord(args.out.parent, config=config, inputs=inputs, name=record_name):
        if executor is not None:
            # the driver's device: the slice logits' keys then match and are reused below
            predict_on_ray(executor, PatientBatchJob(
                args.run, args.cache, (), slices_dir, device.type, args.batch_size,
                args.precision), index["patient_id"].tolist())
        logits = predict_cache(ensemble, args.cache, index, slices_dir,
                               batch_size=args.batch_size, precision=precision)
        rows = [prediction_row(pid, logits[pid], ensemble.names, args.aggregate)
                for pid in index["patient_id"]]
        write_csv(args.out, pd.DataFrame(rows))
    n_high = sum(r["predicted"] for r in rows)
    info(f"predict: {len(rows)} patient(s), {n_high} predicted high grade, "
         f"{len(ensemble.names)} model(s) -> {args.out}")
    return 0
