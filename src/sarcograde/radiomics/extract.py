"""`sarcograde radiomics extract`: features.csv of one cohort and sequence, resumable.

Per patient: the image and mask of the manifest, the volume preprocessing of `sarcograde
preprocess` (`preprocess.normalise_volume`), then MIRP's features inside the mask. Each
patient's features are kept in `DIR/patients/<patient_id>.json` with a key (hash of the input
files, the ROI, the settings and the MIRP version); a rerun recomputes only the patients whose
key changed, so an interrupted run resumes and a changed setting never reuses stale values.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd
from rich.markup import escape

from ..executors import LocalExecutor
from ..artifacts import RunRecord, hash_config
from ..cohort import load_manifest
from ..console import info, warn
from ..errors import SarcogradeError
from ..formats.radiomics import (FEATURES, PatientFeatures, patient_features_path,
                                 read_extraction_config, read_patient_features,
                                 write_extraction_config, write_features, write_patient_features)
from ..masks import MaskSource, mask_source
from ..preprocess.cache import cache_key
from ..preprocess.pipeline import drop_stray_pieces, load_patient, normalise_volume
from ..sequence_image import SequenceImage, sequence_image
from .features import compute_features
from .settings import Settings

# Bump when a change of the method changes the features, so that old caches recompute.
METHOD_VERSION = 2  # 2: Moran's I and Geary's C over every voxel pair


@dataclass(frozen=True)
class Task:
    """Everything a worker process needs for one patient (picklable)."""

    patient_id: str
    image: SequenceImage
    mask: MaskSource
    out: Path
    settings: Settings


@dataclass(frozen=True)
class Outcome:
    patient_id: str
    status: str                 # "computed", "reused" or "failed"
    error: str = ""             # "patient: file: problem" when failed
    seconds: float = 0.0


def feature_key(task: Task) -> str:
    # The slice cache's key covers the image, the (drawn or carried) mask and the preprocessing.
    return hash_config({"method": METHOD_VERSION, "mirp": metadata.version("mirp"),
                        "inputs": cache_key(task.image, task.mask, task.settings.preprocess),
                        "settings": task.settings.extraction()})


def extract_patient(task: Task) -> PatientFeatures:
    image, mask = load_patient(task.patient_id, task.image, task.mask)
    mask, _ = drop_stray_pieces(mask)  # preprocess warns about the pieces
    volume = normalise_volume(image, mask, task.settings.preprocess)
    if not volume.mask.any():
        raise SarcogradeError("mask holds no voxel after resampling to "
                              f"{task.settings.preprocess.spacing_mm:g} mm",
                              patient=task.patient_id, path=task.mask.mask)
    return compute_features(volume.image, volume.mask, task.settings.preprocess.spacing_mm,
                            task.settings.features)


def process_patient(task: Task) -> Outcome:
    """Compute (or reuse) one patient's features; a failure becomes an Outcome, never a raise."""
    start = time.perf_counter()
    try:
        key = feature_key(task)
        path = patient_features_path(task.out, task.patient_id)
        if read_patient_features(path, key) is not None:
            return Outcome(task.patient_id, "reused", seconds=time.perf_counter() - start)
        write_patient_features(path, task.patient_id, key, extract_patient(task))
    except SarcogradeError as exc:
        where = exc.path if exc.path is not None else task.image.path
        return Outcome(task.patient_id, "failed", f"{task.patient_id}: {where}: {exc.problem}",
                       seconds=time.perf_counter() - start)
    except Exception as exc:  # a bug or a library error on one patient must not stop the cohort
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        return Outcome(task.patient_id, "failed",
                       f"{task.patient_id}: {task.image.path}: {type(exc).__name__}: {reason}",
                       seconds=time.perf_counter() - start)
    return Outcome(task.patient_id, "computed", seconds=time.perf_counter() - start)


def _failed_task(task: Task, message: str) -> Outcome:
    """The outcome of a patient whose worker process died."""
    return Outcome(task.patient_id, "failed", f"{task.patient_id}: {task.image.path}: {message}")


def feature_table(out: Path, patient_ids: list[str]) -> tuple[pd.DataFrame, dict[str, dict]]:
    """features.csv's frame (patient_id, then every feature name in MIRP's order) and, per
    patient with an empty feature class, `{"empty": [...], "reason": text}`."""
    rows, empty = {}, {}
    for pid in patient_ids:
        result = read_patient_features(patient_features_path(out, pid))
        rows[pid] = result.values
        if result.empty:
            empty[pid] = {"empty": result.empty, "reason": result.reason}
    columns = list(dict.fromkeys(name for values in rows.values() for name in values))
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns, dtype=float)
    frame.index.name = "patient_id"
    return frame.reset_index(), empty


def _settings_changed(out: Path, config: dict) -> bool:
    """True where an earlier extraction into `out` had another config (a damaged config.json
    counts as another)."""
    try:
        stored = read_extraction_config(out)
    except SarcogradeError:
        return True
    return stored is not None and stored != json.loads(json.dumps(config))


def extract(manifest: Path, sequence: str | None, out: Path, settings: Settings,
            jobs: int = 1) -> int:
    """The whole stage; returns the exit status (1 when a patient failed)."""
    if jobs < 1:
        raise SarcogradeError(f"--jobs must be at least 1, not {jobs}")
    cohort = load_manifest(manifest, strict=True)
    sequence = cohort.require_sequence(sequence)
    config = {"sequence": sequence, "settings": settings.as_dict(),
              "manifest": str(Path(manifest).resolve())}
    tasks = [Task(p.patient_id, sequence_image(p, sequence), mask_source(p, sequence), out,
                  settings) for p in cohort]
    # A features.csv from other settings must not outlive them if this run is interrupted.
    if _settings_changed(out, config):
        (out / FEATURES).unlink(missing_ok=True)
    with RunRecord(out, config=config, inputs={"manifest": manifest}) as record:
        info(f"radiomics extract: {len(tasks)} patients, sequence {sequence}, {jobs} job(s) "
             f"-> {out}")
        outcomes = LocalExecutor(jobs).map(
            process_patient, tasks, label="radiomics", names=[t.patient_id for t in tasks],
            failed=lambda outcome: outcome.status == "failed", on_error=_failed_task)
        done = [o.patient_id for o in outcomes if o.status != "failed"]
        frame, empty = feature_table(out, done)
        write_features(out, frame)
        write_extraction_config(out, config)
        counts = {s: sum(o.status == s for o in outcomes) for s in ("computed", "reused", "failed")}
        record.record.update(patients=counts, failed=[o.error for o in outcomes if o.error],
                             empty_feature_classes=empty, n_features=frame.shape[1] - 1)
    for pid, what in empty.items():
        warn(escape(f"{pid}: empty feature classes {', '.join(what['empty'])} "
                    f"({what['reason']})"))
    for outcome in outcomes:
        if outcome.status == "failed":
            warn(escape(f"failed: {outcome.error}"))
    info(f"radiomics extract: {counts['computed']} computed, {counts['reused']} reused, "
         f"{counts['failed']} failed; {len(done)} patients x {frame.shape[1] - 1} features in "
         f"{out / FEATURES}")
    return 1 if counts["failed"] else 0
