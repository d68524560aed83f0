"""Preprocess one MR sequence of a cohort into a slice cache: N4 bias-field correction, 1 mm
isotropic resampling in a canonical orientation, z-score over the body, and square crops of every
axial slice with tumour. A rerun redoes only patients whose files or parameters changed; a
patient that fails is reported and the others go on (exit status 1 at the end)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape

from .. import executors
from ..acquisition import index_values, read_header
from ..artifacts import RunRecord
from ..cohort import Patient, load_manifest
from ..config import PRESETS, load_config
from ..console import console, info, warn
from ..errors import SarcogradeError
from ..formats.cache import (INDEX, npz_relpath, patient_summary, preview_path,
                             read_cache_config, read_patient_file, stored_key,
                             write_cache_config, write_index)
from ..masks import MaskSource, mask_source
from ..sequence_image import SequenceImage, sequence_image
from .cache import cache_key, write_patient
from .pipeline import Params, drop_stray_pieces, load_patient, preprocess_volume
from .preview import save_preview


@dataclass(frozen=True)
class Task:
    """Everything a worker process needs for one patient (picklable)."""

    patient_id: str
    image: SequenceImage
    mask: MaskSource
    cache: Path
    params: Params
    preview: bool


@dataclass(frozen=True)
class Outcome:
    patient_id: str
    status: str                  # "computed", "reused" or "failed"
    error: str = ""              # "patient: file: problem" when failed
    npz: str = ""
    key: str = ""
    n_slices: int = 0
    tumour_volume_ml: float = float("nan")
    seconds: float = 0.0
    notes: tuple[str, ...] = ()  # "patient: file: what was repaired", shown as warnings
    acquisition: dict = field(default_factory=dict)  # index.csv's acquisition columns


def _number_or_text(value: str) -> float | str:
    """--n4-grid-mm as a config holds it: a number where the text is one, else the text (auto,
    or a mistake that the settings check refuses in one line)."""
    try:
        return float(value)
    except ValueError:
        return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, help="cohort manifest CSV")
    parser.add_argument("--sequence", help="sequence to preprocess (image_<SEQ> column); "
                        "may be left out when the manifest has only one")
    parser.add_argument("--out", type=Path, required=True, metavar="CACHE",
                        help="cache folder (created; reused and completed on a rerun)")
    parser.add_argument("--preset", choices=PRESETS, help="parameter preset (default: paper)")
    parser.add_argument("--config", type=Path, help="YAML file overriding the preset")
    parser.add_argument("--model", type=Path, metavar="PKG",
                        help="a model package (`sarcograde export`): preprocess exactly as its "
                             "model of this sequence was trained (no preset, config or flag)")
    parser.add_argument("--no-n4", dest="n4", action="store_false", default=None,
                        help="skip N4 bias-field correction (e.g. for already corrected images)")
    parser.add_argument("--n4-grid-mm", metavar="MM", type=_number_or_text,
                        help="N4 is estimated on a grid of about MM mm per axis (0: full "
                             "resolution; auto: as coarse as 3 voxels per B-spline span allow; "
                             "paper preset: auto)")
    parser.add_argument("--margin-mm", type=float, metavar="M",
                        help="tissue kept around the tumour's bounding box, in mm")
    parser.add_argument("--size", type=int, metavar="PX", help="output slices are PX x PX")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="patients processed in parallel (default 1)")
    parser.add_argument("--preview", action="store_true",
                        help="also write CACHE/preview/<patient>.png montages")
    executors.add_arguments(parser)


def process_patient(task: Task) -> Outcome:
    """Compute (or reuse) one patient's NPZ; every failure becomes an Outcome, never a raise."""
    start = time.perf_counter()
    npz = ""
    try:
        npz = npz_relpath(task.patient_id)
        path = task.cache / npz
        key = cache_key(task.image, task.mask, task.params)
        status, notes = "reused", []
        if stored_key(path) != key:
            image, mask = load_patient(task.patient_id, task.image, task.mask)
            mask, notes = drop_stray_pieces(mask)
            write_patient(path, preprocess_volume(image, mask, task.params), key)
            status = "computed"
        preview = preview_path(task.cache, task.patient_id)
        if task.preview and (status == "computed" or not preview.exists()):
            save_preview(path, preview, task.patient_id)
        n_slices, volume = patient_summary(path)
        # from the header and the cached slices, so that a reused patient gets them too
        slices = read_patient_file(path, ("image", "mask"), task.patient_id)
        acquisition = index_values(read_header(task.image), slices["image"], slices["mask"])
    except SarcogradeError as exc:
        where = exc.path if exc.path is not None else task.image.path
        return Outcome(task.patient_id, "failed", f"{task.patient_id}: {where}: {exc.problem}",
                       npz=npz, seconds=time.perf_counter() - start)
    except Exception as exc:  # a bug or a library error on one patient must not stop the cohort
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        return Outcome(task.patient_id, "failed",
                       f"{task.patient_id}: {task.image.path}: {type(exc).__name__}: {reason}",
                       npz=npz, seconds=time.perf_counter() - start)
    return Outcome(task.patient_id, status, npz=npz, key=key, n_slices=n_slices,
                   tumour_volume_ml=volume, seconds=time.perf_counter() - start,
                   acquisition=acquisition,
                   notes=tuple(f"{task.patient_id}: {task.mask.mask}: {n}" for n in notes))


def _failed_task(task: Task, message: str) -> Outcome:
    """The outcome of a patient whose task raised or whose worker process died."""
    return Outcome(task.patient_id, "failed", f"{task.patient_id}: {task.image.path}: {message}")


def index_row(patient: Patient, sequence: str, outcome: Outcome) -> dict:
    """The patient's row of index.csv (docs/artifacts.md), from what `process_patient` made."""
    return {"patient_id": patient.patient_id, "sequence": sequence, "site": patient.site or "",
            "grade": "" if patient.grade is None else patient.grade,
            "label": "" if patient.label is None else patient.label,
            "n_slices": outcome.n_slices, "tumour_volume_ml": round(outcome.tumour_volume_ml, 3),
            **outcome.acquisition, "npz": outcome.npz, "key": outcome.key}


def package_params(package, sequence: str) -> Params:
    """The preprocessing a model package's model of `sequence` was trained with."""
    settings = package.model(sequence).preprocess
    return Params.from_config({k: v for k, v in settings.items() if k != "sequence"})


def _preset_params(args: argparse.Namespace) -> tuple[Params, dict]:
    """The preset's parameters with the config file's and the flags' changes, and where they
    came from, for run.json."""
    flags = {"n4": args.n4, "n4_grid_mm": args.n4_grid_mm, "margin_mm": args.margin_mm,
             "size": args.size}
    config = load_config(args.preset or "paper", args.config, {"preprocess": flags})
    return Params.from_config(config["preprocess"]), {"preset": config["preset"]}


def _package(args: argparse.Namespace):
    """The `--model` package (verified), or None; a preset, config or setting flag beside it is
    refused, since the package's settings are used as they are."""
    if args.model is None:
        return None
    options = {"--preset": args.preset, "--config": args.config, "--no-n4": args.n4,
               "--n4-grid-mm": args.n4_grid_mm, "--margin-mm": args.margin_mm,
               "--size": args.size}
    given = [option for option, value in options.items() if value is not None]
    if given:
        raise SarcogradeError(f"{given[0]} with --model: the package's settings are used as "
                              "they are; leave it out")
    from ..formats.package import read_package

    return read_package(args.model)


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise SarcogradeError(f"--jobs must be at least 1, not {args.jobs}")
    executor = executors.from_arguments(args, workers=args.jobs)
    # settings are checked before the manifest is read: a typo costs no work
    package = _package(args)
    if package is None:
        params, source = _preset_params(args)
    cohort = load_manifest(args.manifest, strict=True)
    sequence = cohort.require_sequence(args.sequence)
    if package is not None:
        params, source = package_params(package, sequence), {"model": package.id}
    cache: Path = args.out
    cache_config = {"sequence": sequence, **params.as_dict(),
                    "manifest": str(Path(args.manifest).resolve())}

    # An index.csv from other parameters must not outlive them if this run is interrupted.
    try:
        stale = read_cache_config(cache, required=False) not in ({}, cache_config)
    except SarcogradeError:  # a damaged config.json is rewritten at the end
        stale = True
    if stale:
        (cache / INDEX).unlink(missing_ok=True)

    tasks = [Task(p.patient_id, sequence_image(p, sequence), mask_source(p, sequence), cache,
                  params, args.preview) for p in cohort]
    with RunRecord(cache, config={**source, **cache_config},
                   inputs={"manifest": args.manifest}) as record:
        info(f"preprocess: {len(tasks)} patients, sequence {sequence}, {executor.where} -> "
             f"{cache}")
        with executor:
            outcomes = executor.map(process_patient, tasks, label="preprocess",
                                    names=[t.patient_id for t in tasks], num_cpus=1,
                                    failed=lambda outcome: outcome.status == "failed",
                                    on_error=_failed_task)
        by_id = {o.patient_id: o for o in outcomes}
        rows = [index_row(p, sequence, by_id[p.patient_id]) for p in cohort
                if by_id[p.patient_id].status != "failed"]
        write_index(cache, rows)
        write_cache_config(cache, cache_config)
        counts = {s: sum(o.status == s for o in outcomes) for s in ("computed", "reused", "failed")}
        record.record["patients"] = counts
        record.record["failed"] = [o.error for o in outcomes if o.status == "failed"]
        record.record["seconds"] = {o.patient_id: round(o.seconds, 2) for o in outcomes
                                    if o.status == "computed"}

    for outcome in outcomes:
        for note in outcome.notes:
            warn(escape(note))
        if outcome.status == "failed":
            console.print(f"[red]failed:[/red] {escape(outcome.error)}", soft_wrap=True)
    info(f"preprocess: {counts['computed']} computed, {counts['reused']} reused, "
         f"{counts['failed']} failed; {len(rows)} patients in {cache / INDEX}")
    if counts["failed"]:
        warn(f"{counts['failed']} patient(s) failed; fix them and rerun the same command "
             "(finished patients are reused)")
        return 1
    return 0
