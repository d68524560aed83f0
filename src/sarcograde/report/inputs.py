"""Every artifact the report reads, read here through `sarcograde.formats` (the one reader of
each file) and nowhere else in the report.

The report's other modules see only the plain objects below (dicts, data frames, image data
URIs, compressed for the page by images.py).
A required file that is missing or unreadable is a one-line `SarcogradeError` naming it; an
optional one is `None`, which the page shows as "not run".
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..errors import SarcogradeError
from ..formats.acquisition import ACQUISITION_SUMMARY, AcquisitionTable
from ..formats.cache import read_cache_config
from ..formats.evaluation import (CohortTable, read_cohort_table, read_confusion, read_figure,
                                  read_metrics, read_model_metrics, read_patient_flow,
                                  read_survival)
from ..formats.predictions import ATTENTION, montage_path, read_attention
from ..formats.records import FOLDER_RECORD, read_record, record_path
from ..formats.run import (FOLDS, HISTORY, LEARNING_CURVE, MODEL, read_folds, read_history,
                           read_run_config)
from ..formats.study import read_study
from ..formats.synth import RECORD as SYNTH_RECORD
from ..model_kinds import POOLED
from .images import montage_uri, plot_uri

__all__ = ["CohortTable", "ReportInputs", "StudyInputs"]


def png_data_uri(path: Path) -> str:
    """The PNG figure as a base64 data URI, as it is."""
    return "data:image/png;base64," + base64.b64encode(read_figure(path)).decode("ascii")


def plot_data_uri(path: Path) -> str:
    """A plot as the page embeds it (images.plot_uri)."""
    return plot_uri(read_figure(path))


def optional_plot(path: Path) -> str | None:
    return plot_data_uri(path) if path.is_file() else None


def lookup(mapping: Any, *keys: str, default: Any = None) -> Any:
    """mapping[k1][k2]...; `default` where any level is missing."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


# --------------------------------------------------------------------------------------------
# Stage folders


@dataclass
class EvaluationFolder:
    """An `evaluate` output folder: one site of a study, the pooled sites, or a lone evaluation."""

    folder: Path
    metrics: dict
    record: dict | None
    flow: dict | None
    survival: dict | None
    cohort: CohortTable | None
    confusion: pd.DataFrame | None
    figures: dict[str, str]  # file name -> data URI, for the PNGs present


def load_evaluation(folder: Path, *, models: bool = False) -> EvaluationFolder:
    """Read an evaluate folder: one model's (metrics.json `auc`) or, with `models`, an
    evaluation of several (metrics.json `models` and `delong`)."""
    folder = Path(folder)
    metrics = read_model_metrics(folder) if models else read_metrics(folder)
    return EvaluationFolder(
        folder=folder, metrics=metrics, record=read_record(record_path(folder)),
        flow=read_patient_flow(folder), survival=read_survival(folder),
        cohort=read_cohort_table(folder), confusion=read_confusion(folder),
        figures={p.name: plot_data_uri(p) for p in sorted(folder.glob("*.png"))})


@dataclass
class AttentionFolder:
    """An `explain` output folder: attention.csv and one montage per patient."""

    folder: Path
    frame: pd.DataFrame

    def montage(self, patient_id: str) -> str | None:
        """The patient's montage as the page embeds it (images.montage_uri), None if missing;
        read when a gallery shows it, not for every patient."""
        path = montage_path(self.folder, patient_id)
        return montage_uri(read_figure(path)) if path.is_file() else None


def load_attention(folder: Path) -> AttentionFolder:
    path = Path(folder) / ATTENTION
    if not path.is_file():
        raise SarcogradeError(f"no {ATTENTION}: not a `sarcograde explain` folder", path=folder)
    frame = read_attention(path)
    frame["patient_id"] = frame["patient_id"].astype(str)
    return AttentionFolder(Path(folder), frame)


@dataclass
class FoldHistory:
    name: str
    history: pd.DataFrame | None  # None: history.csv missing
    curve: str | None             # learning_curve.png as a data URI


@dataclass
class TrainingRun:
    """A `train` output folder."""

    folder: Path
    config: dict | None
    folds: dict | None
    record: dict | None
    histories: list[FoldHistory]
    n_models: int  # fold models that finished (model.pt written)


def load_training_run(folder: Path) -> TrainingRun:
    folder = Path(folder)
    folds = sorted(p for p in folder.glob("fold_*") if p.is_dir())
    if not folds:
        raise SarcogradeError("no fold_XX folders: not a `sarcograde train` folder", path=folder)
    histories = [FoldHistory(
        fold.name,
        read_history(fold / HISTORY) if (fold / HISTORY).is_file() else None,
        optional_plot(fold / LEARNING_CURVE)) for fold in folds]
    folds_spec = read_folds(folder).as_dict() if (folder / FOLDS).is_file() else None
    return TrainingRun(folder, read_run_config(folder, required=False), folds_spec,
                       read_record(record_path(folder)), histories,
                       sum((f / MODEL).is_file() for f in folds))


def existing_folder(folder: Path | None) -> Path | None:
    if folder is None:
        return None
    if not Path(folder).is_dir():
        raise SarcogradeError("folder not found", path=folder)
    return Path(folder)


def is_synthetic(configs: Iterable[Any]) -> bool:
    """True when a manifest named in the configs was written by `sarcograde synth`."""
    return any((Path(m).parent / SYNTH_RECORD).is_file()
               for config in configs for m in _manifest_paths(config))


def _manifest_paths(value: Any, key: str = "") -> list[str]:
    """Every string under a key that names a manifest, at any depth of nested configs."""
    if isinstance(value, dict):
        return [m for k, v in value.items() for m in _manifest_paths(v, str(k))]
    if isinstance(value, list):
        return [m for v in value for m in _manifest_paths(v, key)]
    return [value] if isinstance(value, str) and "manifest" in key else []


# --------------------------------------------------------------------------------------------
# One evaluation (`sarcograde report EVAL`)


@dataclass
class ReportInputs:
    """The folders the single-evaluation page is built from; all but `eval_dir` are optional."""

    eval_dir: Path
    explain_dir: Path | None = None
    run_dir: Path | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        self.eval_dir = Path(self.eval_dir)
        self.evaluation = load_evaluation(self.eval_dir)
        self.explain_dir = existing_folder(self.explain_dir)
        self.run_dir = existing_folder(self.run_dir)
        self.cache_dir = existing_folder(self.cache_dir)
        self.attention = load_attention(self.explain_dir) if self.explain_dir else None
        self.run = load_training_run(self.run_dir) if self.run_dir else None
        self.cache_config = (read_cache_config(self.cache_dir, required=False) or None
                             if self.cache_dir else None)
        predict_record = self.predict_record_path()
        self.predict_record = read_record(predict_record) if predict_record else None
        self.records = self._records()
        self.synthetic = is_synthetic([lookup(self.evaluation.record, "config"),
                                       self.cache_config, self.run and self.run.config])

    @property
    def metrics(self) -> dict:
        return self.evaluation.metrics

    def predict_record_path(self) -> Path | None:
        """`predict`'s record beside the predictions CSV that metrics.json names."""
        predictions = self.metrics.get("predictions")
        return record_path(predictions) if predictions else None

    def _records(self) -> dict[str, dict]:
        """The run.json of every folder given, by stage."""
        paths = {"preprocess": self.cache_dir and record_path(self.cache_dir),
                 "train": self.run_dir and record_path(self.run_dir),
                 "predict": self.predict_record_path(),
                 "evaluate": record_path(self.eval_dir),
                 "explain": self.explain_dir and record_path(self.explain_dir)}
        records = {stage: read_record(path) for stage, path in paths.items() if path}
        return {stage: r for stage, r in records.items() if r is not None}


# --------------------------------------------------------------------------------------------
# A study (`sarcograde report --study DIR`)


@dataclass
class StudyInputs:
    """A study folder: evaluate/<site>/ (required), explain/<site>/<SEQ>/, train/<SEQ>/,
    predict/<site>/<model>.csv, study.json (optional)."""

    folder: Path
    study: dict | None = None
    sites: dict[str, EvaluationFolder] = field(default_factory=dict)  # pooled last
    attention: dict[str, dict[str, AttentionFolder]] = field(default_factory=dict)
    runs: dict[str, TrainingRun] = field(default_factory=dict)
    predictions: dict[str, list[str]] = field(default_factory=dict)  # site -> model names
    records: dict[str, dict] = field(default_factory=dict)  # relative path -> run.json
    # cohort -> check/<cohort>/acquisition-summary.csv, where check wrote one
    acquisition: dict[str, AcquisitionTable] = field(default_factory=dict)

    @classmethod
    def from_evaluation(cls, folder: Path) -> "StudyInputs":
        """One multi-model evaluate folder, reported as a study of one site."""
        inputs = cls(Path(folder))
        inputs._add_site(folder.name, folder)
        if inputs.sites[folder.name].record:
            inputs.records = {record_path(folder).name: inputs.sites[folder.name].record}
        return inputs

    def _add_site(self, name: str, folder: Path) -> None:
        self.sites[name] = load_evaluation(folder, models=True)

    @classmethod
    def load(cls, folder: Path) -> "StudyInputs":
        folder = Path(folder)
        if not folder.is_dir():
            raise SarcogradeError("study folder not found", path=folder)
        evaluate = folder / "evaluate"
        names = [p.name for p in _subfolders(evaluate)]
        if not names:
            raise SarcogradeError("no evaluate/<site>/ folder: run `sarcograde study` first",
                                  path=evaluate)
        inputs = cls(folder, study=read_study(folder))
        for name in names:
            inputs._add_site(name, evaluate / name)
        # The external sites first, then the pooled evaluation.
        inputs.sites = dict(sorted(inputs.sites.items(), key=lambda s: inputs.is_pooled(s[0])))
        for site_dir in _subfolders(folder / "explain"):
            inputs.attention[site_dir.name] = {
                seq.name: load_attention(seq) for seq in _subfolders(site_dir)}
        # the DL runs (fold_XX models); train/fusion and train/radiomics-<SEQ> have none
        inputs.runs = {run.name: load_training_run(run) for run in _subfolders(folder / "train")
                       if any(run.glob("fold_*"))}
        inputs.predictions = {site.name: sorted(p.stem for p in site.glob("*.csv"))
                              for site in _subfolders(folder / "predict")}
        inputs.acquisition = {cohort.name: AcquisitionTable.read(cohort, summary=True)
                              for cohort in _subfolders(folder / "check")
                              if (cohort / ACQUISITION_SUMMARY).is_file()}
        inputs.records = {str(p.relative_to(folder)): read_record(p)
                          for p in sorted(folder.rglob(f"*{FOLDER_RECORD}"))}
        return inputs

    def is_pooled(self, site: str) -> bool:
        return bool(self.sites[site].metrics.get("pooled")) or site == POOLED


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
