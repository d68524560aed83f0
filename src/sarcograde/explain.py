"""Attention maps (Grad-CAM) of a run's ensemble on every tumour slice, with attention scores.

For each chosen patient of CACHE (default: all), the Grad-CAM map of the patient's predicted
class (the ensemble's prediction, mean logits then softmax as in `predict`) on the last feature
map of every fold model, averaged over the models. Writes into DIR:
`<patient_id>.png` (a montage of up to --montage-slices evenly spaced slices with the map, the
tumour contour, the ring and each slice's p_high), `attention.csv` (per patient: share of
attention inside the tumour, in a ring of --ring-mm around it and elsewhere, and the `off_tumour`
flag when inside + ring < --min-attention: the paper's failure case of attention on air),
`attention_slices.csv` (the same per slice), `maps/<patient_id>.npz` (the maps, which let an
interrupted run resume) and `run.json`.

Each patient is `explain_patient` (maps, shares, montage); with `--executor ray` batches of
patients are Ray tasks that call it, and the driver writes the two tables from their rows.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from . import LABELS, executors
from .outcome import GRADE, outcome
from .artifacts import RunRecord, hash_config, save_figure
from .attention import (METHODS, cam_explainers, ensemble_cam, forward_cam, patient_shares,
                        slice_shares, tumour_regions)
from .console import info, progress, warn
from .engines import ENGINES, engine_record, use_engine
from .ensemble import (PRECISIONS, Ensemble, aggregate, check_cache_fits, forward_pass,
                       load_ensemble, models_file, slice_logits, slice_p_high)
from .errors import SarcogradeError
from .formats.cache import INDEX, CacheIndex, patient_key, read_cache_config, read_patient
from .formats.predictions import (ATTENTION, ATTENTION_SLICES, maps_path, montage_path,
                                  output_paths, read_maps, read_slice_logits, slice_logits_key,
                                  slice_logits_path, write_attention, write_attention_slices,
                                  write_maps)
from .device import resolve_device
from .options import add_renamed_option


METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
# Methods whose maps come from the forward pass (`attention.ForwardGradCam`); the others take
# a backward pass per model (`attention.ensemble_cam`).
FORWARD_METHODS = ("gradcam",)


def montage_slices(n: int, max_slices: int) -> np.ndarray:
    """Indices of at most `max_slices` evenly spaced slices out of n, first and last included."""
    if n <= max_slices:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_slices).round().astype(int))


def display_maps(cam: np.ndarray) -> np.ndarray:
    """Maps scaled to a maximum of 1 per slice, in float16: what is stored, shown and scored
    (the shares do not depend on a slice's scale)."""
    peak = cam.reshape(len(cam), -1).max(axis=1)
    scale = np.divide(1.0, peak, out=np.zeros_like(peak), where=peak > 0)
    return (cam * scale[:, None, None]).astype(np.float16)


def plot_montage(patient_id: str, arrays: dict[str, np.ndarray], cam: np.ndarray,
                 p_high_per_slice: np.ndarray, summary: dict, *, ring_mm: float, method: str,
                 n_models: int, max_slices: int = 12, target: str = GRADE):
    """A figure of the chosen slices: grey image, map in colour, tumour contour (white), ring
    border (dashed), slice position and p_high; the patient's prediction and scores on top."""
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    image, mask = arrays["image"].astype(np.float32), arrays["mask"]
    pixel_mm, z_mm = arrays["pixel_mm"], arrays.get("z_mm", np.arange(len(image), dtype=float))
    chosen = montage_slices(len(image), max_slices)
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 1.0, 2.3 * rows + 0.9),
                             squeeze=False, layout="constrained")
    low, high = np.percentile(image, [1, 99])
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), chosen):
        ax.imshow(image[i], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        # Opacity grows with attention, so that the anatomy stays visible where the map is low.
        attention = cam[i].astype(np.float32)
        overlay = colormaps["jet"](attention)
        overlay[..., 3] = 0.6 * attention
        ax.imshow(overlay, interpolation="bilinear")
        inside, ring = tumour_regions(mask[i], pixel_mm[i], ring_mm)
        if inside.any():
            ax.contour(inside, levels=[0.5], colors="white", linewidths=1.0)
            ax.contour(inside | ring, levels=[0.5], colors="white", linewidths=0.7,
                       linestyles="dashed")
        ax.set_title(f"z {z_mm[i]:.0f} mm · p_high {p_high_per_slice[i]:.2f}", fontsize=8)
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), ax=axes, shrink=0.6,
                 label="attention (slice maximum = 1)")

    words = outcome(target)
    if words.is_grade:
        predicted = f"{LABELS[summary['predicted']]} grade"
        truth = ("true grade unknown" if summary["grade"] is None
                 else f"true grade G{summary['grade']} ({LABELS[summary['label']]})")
    else:  # the cache's grade is the target's class written as G1/G3: name the class
        predicted = f"{words.title} {words.short[summary['predicted']]}"
        truth = (f"true {words.title} unknown" if summary["grade"] is None
                 else f"true {words.class_name(summary['label'])}")
    colour = ("black" if summary["grade"] is None
              else "darkgreen" if summary["label"] == summary["predicted"] else "firebrick")
    shown = (f"{len(chosen)} of {len(image)} slices, evenly spaced" if len(chosen) < len(image)
             else f"all {len(image)} slices")
    flag = "  ·  OFF TUMOUR" if summary["off_tumour"] else ""
    fig.suptitle(
        f"{patient_id}: predicted {predicted} (p_high {summary['p_high']:.2f}), {truth}\n"
        f"attention inside {summary['inside']:.0%}, {ring_mm:g} mm ring {summary['ring']:.0%}, "
        f"elsewhere {summary['elsewhere']:.0%}{flag}\n"
        f"{METHOD_NAMES[method]} of the predicted class, mean of {n_models} model(s); {shown}",
        fontsize=9, color=colour)
    return fig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, metavar="RUN|PKG",
                        help="training run folder (fold_XX/model.pt, folds.json), or a model "
                             "package from `sarcograde export` (its model of the cache's sequence)")
    parser.add_argument("cache", type=Path, help="preprocessed cache of the patients")
    parser.add_argument("--out", type=Path, default=Path("explain"),
                        help="output folder (default: explain)")
    add_renamed_option(parser, "explain", "--patient-ids", metavar="ID[,ID]",
                       help="comma-separated patient ids (default: all)")
    parser.add_argument("--method", choices=tuple(METHODS), default="gradcam")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per Grad-CAM pass")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for the engine (default: all)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference engine (default auto: ONNX Runtime, else OpenVINO, "
                             "else torch on the CPU; torch on a GPU)")
    parser.add_argument("--ring-mm", type=float, default=10.0,
                        help="width of the ring around the tumour, in mm (default 10)")
    parser.add_argument("--min-attention", type=float, default=0.5,
                        help="flag off_tumour when inside + ring is below this (default 0.5)")
    parser.add_argument("--montage-slices", type=int, default=12,
                        help="at most this many slices per montage (default 12)")
    parser.add_argument("--target", default=GRADE, metavar="COLUMN",
                        help="what the cache's label stands for, in the montages' titles: grade "
                             "(default) or the 0/1 column a study took as its target")
    add_renamed_option(parser, "explain", "--slice-logits", type=Path, metavar="CSV",
                       help="predict's output for this run and cache (predictions.csv, or its "
                            "<stem>.slices/ folder): the per-slice logits saved there are "
                            "reused instead of recomputed")
    executors.add_arguments(parser)


def _check_arguments(args: argparse.Namespace) -> list[str] | None:
    if args.batch_size < 1 or args.montage_slices < 1:
        raise SarcogradeError("--batch-size and --montage-slices must be at least 1")
    if args.ring_mm < 0:
        raise SarcogradeError(f"--ring-mm must not be negative, not {args.ring_mm}")
    if not 0 <= args.min_attention <= 1:
        raise SarcogradeError(
            f"--min-attention is a share between 0 and 1, not {args.min_attention}")
    if args.patient_ids is None:
        return None
    return [p.strip() for p in args.patient_ids.split(",") if p.strip()]


def slice_logits_folder(given: Path | None) -> Path | None:
    """--slice-logits as the folder of predict's per-slice logits: the folder itself, or the
    `<stem>.slices/` beside the predictions CSV given."""
    if given is None or given.is_dir():
        return given
    return output_paths(given)[1]


def predicted_logits(ensemble: Ensemble, cache_dir: Path, row, slices_dir: Path | None
                     ) -> np.ndarray | None:
    """`predict`'s saved slice logits of this patient (in `slices_dir`), where they were computed
    by these models from this cache entry (at any precision, on any device), else None."""
    if slices_dir is None:
        return None
    keys = {slice_logits_key(ensemble.key, patient_key(cache_dir, row), precision, device)
            for precision in PRECISIONS[1:] for device in ("cpu", "cuda")}
    return read_slice_logits(slice_logits_path(slices_dir, row.patient_id),
                             row.patient_id, keys, len(ensemble.models))


@dataclass(frozen=True)
class ExplainJob:
    """The settings of one explain run, picklable; as a Ray task, also the patients it does."""

    run: Path
    cache: Path
    out: Path
    method: str
    device: str  # the driver's device type, so that the maps' keys are the driver's
    batch_size: int
    ring_mm: float
    min_attention: float
    montage_slices: int
    slice_logits: Path | None = None  # predict's <stem>.slices/ folder
    patients: tuple[str, ...] = ()
    threads: int = 1
    engine: str = "torch"
    target: str = GRADE  # what the label means, in the montages' words


def explain_patient(job: ExplainJob, ensemble: Ensemble, explainers: list, row
                    ) -> tuple[dict, list[dict]]:
    """One patient: its maps (reused from `maps/<patient_id>.npz` while the key matches, else
    computed and saved there), shares and montage; its rows of attention.csv and
    attention_slices.csv."""
    size = int(ensemble.input_meta["size"])
    arrays = read_patient(job.cache, row, ("image", "mask", "z_mm", "pixel_mm"), size)
    saved_maps = maps_path(job.out, row.patient_id)
    key = hash_config({"models": ensemble.key, "patient": patient_key(job.cache, row),
                       "method": job.method, "device": job.device})
    saved = read_maps(saved_maps, row.patient_id, key)
    if saved is None:
        logits = predicted_logits(ensemble, job.cache, row, job.slice_logits)
        if job.method in FORWARD_METHODS:
            own_logits, signed = forward_pass(ensemble, arrays["image"], job.batch_size)
            logits = own_logits if logits is None else logits
            cam = forward_cam(signed, int(aggregate(logits)[0] > 0.5), size)
        else:
            if logits is None:
                logits = slice_logits(ensemble, arrays["image"], job.batch_size)
            cam = ensemble_cam(explainers, arrays["image"], int(aggregate(logits)[0] > 0.5),
                               ensemble.input_meta, ensemble.device, job.batch_size)
        saved = {"cam": display_maps(cam), "logits": logits}
        write_maps(saved_maps, saved["cam"], logits, key)
    logits, cam = saved["logits"], saved["cam"]
    p_high = aggregate(logits)[0]
    per_slice = slice_p_high(logits)
    shares = slice_shares(cam, arrays["mask"], arrays["pixel_mm"], job.ring_mm)
    inside, ring, elsewhere = patient_shares(shares)
    grade = None if pd.isna(row.grade) else int(row.grade)
    label = None if pd.isna(row.label) else int(row.label)
    summary = {"patient_id": row.patient_id, "n_slices": len(cam), "p_high": p_high,
               "predicted": int(p_high > 0.5), "label": label, "inside": inside,
               "ring": ring, "elsewhere": elsewhere,
               "off_tumour": bool(inside + ring < job.min_attention)}
    z_mm = arrays.get("z_mm", np.arange(len(cam), dtype=float))
    slice_rows = [{"patient_id": row.patient_id, "slice": i, "z_mm": z_mm[i],
                   "p_high": per_slice[i], "inside": s[0], "ring": s[1], "elsewhere": s[2]}
                  for i, s in enumerate(shares)]
    fig = plot_montage(row.patient_id, arrays, cam, per_slice, {**summary, "grade": grade},
                       ring_mm=job.ring_mm, method=job.method, n_models=len(ensemble.models),
                       max_slices=job.montage_slices, target=job.target)
    save_figure(fig, montage_path(job.out, row.patient_id))
    return summary, slice_rows


def explain_patients(job: ExplainJob, ensemble: Ensemble, index: pd.DataFrame,
                     advance: Callable[[], object] = lambda: None
                     ) -> list[tuple[dict, list[dict]]]:
    """`explain_patient` of every patient in `index`, in its order."""
    explainers = ([] if job.method in FORWARD_METHODS
                  else cam_explainers(ensemble.models, job.method))
    results = []
    for row in index.itertuples(index=False):
        results.append(explain_patient(job, ensemble, explainers, row))
        advance()
    return results


def explain_patient_batch(job: ExplainJob) -> list[tuple[dict, list[dict]]]:
    """`job.patients` as a Ray task; a retry (after a dead worker) reuses the maps of the
    patients already done."""
    torch.set_num_threads(job.threads)
    device = resolve_device(job.device)
    ensemble = load_ensemble(job.run, device, read_cache_config(job.cache).get("sequence"))
    return explain_patients(job, use_engine(ensemble, job.engine),
                            CacheIndex.read(job.cache).rows(patients=list(job.patients),
                                                            drop_empty=True))


def run(args: argparse.Namespace) -> int:
    patients = _check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    executor = executors.from_arguments(args)
    device = resolve_device(args.device)
    cache_config = read_cache_config(args.cache)
    index = CacheIndex.read(args.cache).rows(patients=patients, drop_empty=True)
    ensemble = load_ensemble(args.run, device, cache_config.get("sequence"))
    check_cache_fits(ensemble, cache_config, args.cache)
    use_engine(ensemble, args.engine)
    out = Path(args.out)
    job = ExplainJob(Path(args.run), Path(args.cache), out, args.method, device.type,
                     args.batch_size, args.ring_mm, args.min_attention, args.montage_slices,
                     slice_logits_folder(args.slice_logits), engine=ensemble.engine.name,
                     target=args.target)
    config = {"method": args.method, "target": "margin of the predicted class",
              "outcome": args.target,
              "ring_mm": args.ring_mm, "min_attention": args.min_attention,
              "slice_weighting": "equal", "montage_slices": args.montage_slices,
              "device": device.type, "batch_size": args.batch_size, "models": ensemble.names,
              "preprocess": ensemble.preprocess,
              "attention_pass": "forward" if args.method in FORWARD_METHODS else "backward",
              **engine_record(ensemble.engine)}
    inputs = {"cache_index": Path(args.cache) / INDEX, "models": models_file(args.run)}
    with RunRecord(out, config=config, inputs=inputs):
        # Patients handed out (Ray tasks) come back as rows; the others are explained here.
        batches = executor.map_patient_batches(
            explain_patient_batch, job, index["patient_id"].tolist(), label="explain",
            gpu=device.type == "cuda")
        done = {summary["patient_id"]: (summary, rows)
                for batch in batches for summary, rows in batch}
        here = index[~index["patient_id"].isin(done)]
        if len(here):
            with progress() as bar:
                task = bar.add_task("explain (patients)", total=len(here))
                done.update((summary["patient_id"], (summary, rows)) for summary, rows in
                            explain_patients(job, ensemble, here, lambda: bar.advance(task)))
        results = [done[patient] for patient in index["patient_id"]]
        table = write_attention(out / ATTENTION, [summary for summary, _ in results])
        write_attention_slices(out / ATTENTION_SLICES, [r for _, rows in results for r in rows])
    flagged = table.loc[table["off_tumour"], "patient_id"].tolist()
    if flagged:
        warn(f"explain: attention mostly off the tumour and its {args.ring_mm:g} mm ring for "
             f"{len(flagged)} patient(s): {', '.join(flagged)}")
    info(f"explain: {len(table)} patient(s) -> {out / ATTENTION} and montages in {out}")
    return 0
