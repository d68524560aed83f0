"""Every file the report reads, read here and nowhere else.

The report's other modules see only the plain objects below (dicts, data frames, PNG data URIs),
so that moving to shared artifact readers changes this module only. A required file that is
missing or unreadable is a one-line `SarcogradeError` naming it; an optional one is `None`,
which the page shows as "not run".
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..artifacts import read_json as _json_load
from ..errors import SarcogradeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The columns of explain's attention.csv that the gallery and its table read.
ATTENTION_COLUMNS = ("patient_id", "n_slices", "p_high", "predicted", "label", "inside", "ring",
                     "elsewhere", "off_tumour")
POOLED = "pooled"


# --------------------------------------------------------------------------------------------
# Files


def read_json(path: Path) -> Any:
    try:
        return _json_load(path)
    except (OSError, ValueError) as exc:
        raise SarcogradeError(f"cannot read JSON: {exc}", path=path) from None


def optional_json(path: Path | None) -> Any:
    return read_json(path) if path is not None and Path(path).is_file() else None


def read_csv(path: Path, required: Iterable[str] = ()) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise SarcogradeError(f"cannot read CSV: {exc}", path=path) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SarcogradeError(f"no column(s) {', '.join(missing)}", path=path)
    return frame


def png_data_uri(path: Path) -> str:
    """The PNG file as a base64 data URI; a file that is not a PNG is a clear error."""
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise SarcogradeError("not a PNG image", path=path)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def optional_png(path: Path) -> str | None:
    return png_data_uri(path) if path.is_file() else None


def lookup(mapping: Any, *keys: str, default: Any = None) -> Any:
    """mapping[k1][k2]...; `default` where any level is missing."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


# --------------------------------------------------------------------------------------------
# Table 1


@dataclass
class CohortTable:
    header: list[str]
    rows: list[list[Any]]
    notes: list[str]


def parse_markdown_table(text: str) -> CohortTable:
    """Header, body rows and the notes below a pipe table (the separator row dropped)."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines
             if line.startswith("|")]
    cells = [row for row in cells if not all(c and set(c) <= set("-: ") for c in row)]
    notes = [line for line in lines if not line.startswith(("|", "#"))]
    return CohortTable((cells[0] if cells else []), cells[1:], notes)


def load_cohort_table(folder: Path) -> CohortTable | None:
    """evaluate's Table 1: the Markdown version (it has the test notes), else the CSV."""
    md_path, csv_path = folder / "cohort_table.md", folder / "cohort_table.csv"
    if md_path.is_file():
        return parse_markdown_table(md_path.read_text(encoding="utf-8"))
    if csv_path.is_file():
        frame = read_csv(csv_path).fillna("")
        return CohortTable([str(c) for c in frame.columns],
                           [list(row) for row in frame.itertuples(index=False)], [])
    return None


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


def is_multi_model(folder: Path) -> bool:
    """True for an evaluate folder that compared several models (metrics.json `models`)."""
    path = Path(folder) / "metrics.json"
    models = lookup(read_json(path), "models") if path.is_file() else None
    return isinstance(models, dict) and len(models) > 1


def load_evaluation(folder: Path, *, required_key: str) -> EvaluationFolder:
    """Read an evaluate folder; metrics.json must exist and hold `required_key`."""
    folder = Path(folder)
    path = folder / "metrics.json"
    if not path.is_file():
        raise SarcogradeError("no metrics.json: run `sarcograde evaluate` first", path=folder)
    metrics = read_json(path)
    if not isinstance(metrics, dict) or required_key not in metrics:
        raise SarcogradeError(f"not an evaluate metrics.json (no '{required_key}')", path=path)
    confusion = folder / "confusion.csv"
    return EvaluationFolder(
        folder=folder, metrics=metrics, record=optional_json(folder / "run.json"),
        flow=optional_json(folder / "patient_flow.json"),
        survival=optional_json(folder / "survival.json"), cohort=load_cohort_table(folder),
        confusion=read_csv(confusion) if confusion.is_file() else None,
        figures={p.name: png_data_uri(p) for p in sorted(folder.glob("*.png"))})


@dataclass
class AttentionFolder:
    """An `explain` output folder: attention.csv and one montage per patient."""

    folder: Path
    frame: pd.DataFrame
    montages: dict[str, str | None]  # patient id -> data URI (None: montage missing)


def load_attention(folder: Path) -> AttentionFolder:
    path = Path(folder) / "attention.csv"
    if not path.is_file():
        raise SarcogradeError("no attention.csv: not a `sarcograde explain` folder", path=folder)
    frame = read_csv(path, ATTENTION_COLUMNS)
    frame["patient_id"] = frame["patient_id"].astype(str)
    return AttentionFolder(Path(folder), frame, {
        pid: optional_png(Path(folder) / f"{pid}.png") for pid in frame["patient_id"]})


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
        read_csv(fold / "history.csv", ("epoch", "val_loss"))
        if (fold / "history.csv").is_file() else None,
        optional_png(fold / "learning_curve.png")) for fold in folds]
    return TrainingRun(folder, optional_json(folder / "config.json"),
                       optional_json(folder / "folds.json"), optional_json(folder / "run.json"),
                       histories, sum((f / "model.pt").is_file() for f in folds))


def existing_folder(folder: Path | None) -> Path | None:
    if folder is None:
        return None
    if not Path(folder).is_dir():
        raise SarcogradeError("folder not found", path=folder)
    return Path(folder)


def is_synthetic(configs: Iterable[Any]) -> bool:
    """True when a manifest named in the configs was written by `sarcograde synth`."""
    return any((Path(m).parent / "synth.json").is_file()
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
        self.evaluation = load_evaluation(self.eval_dir, required_key="auc")
        self.explain_dir = existing_folder(self.explain_dir)
        self.run_dir = existing_folder(self.run_dir)
        self.cache_dir = existing_folder(self.cache_dir)
        self.attention = load_attention(self.explain_dir) if self.explain_dir else None
        self.run = load_training_run(self.run_dir) if self.run_dir else None
        self.cache_config = (optional_json(self.cache_dir / "config.json") if self.cache_dir
                             else None)
        self.predict_record = optional_json(self.predict_record_path())
        self.records = self._records()
        self.synthetic = is_synthetic([lookup(self.evaluation.record, "config"),
                                       self.cache_config, self.run and self.run.config])

    @property
    def metrics(self) -> dict:
        return self.evaluation.metrics

    def predict_record_path(self) -> Path | None:
        """`predict`'s `<stem>.run.json` beside the predictions CSV that metrics.json names
        (the convention of `predict.output_paths`, not imported here: it would import torch)."""
        predictions = self.metrics.get("predictions")
        return (Path(predictions).with_name(f"{Path(predictions).stem}.run.json")
                if predictions else None)

    def _records(self) -> dict[str, dict]:
        """The run.json of every folder given, by stage."""
        paths = {"preprocess": self.cache_dir and self.cache_dir / "run.json",
                 "train": self.run_dir and self.run_dir / "run.json",
                 "predict": self.predict_record_path(),
                 "evaluate": self.eval_dir / "run.json",
                 "explain": self.explain_dir and self.explain_dir / "run.json"}
        records = {stage: optional_json(path) for stage, path in paths.items() if path}
        return {stage: r for stage, r in records.items() if isinstance(r, dict)}


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

    @classmethod
    def from_evaluation(cls, folder: Path) -> "StudyInputs":
        """One multi-model evaluate folder, reported as a study of one site."""
        inputs = cls(Path(folder))
        inputs._add_site(folder.name, folder)
        if inputs.sites[folder.name].record:
            inputs.records = {"run.json": inputs.sites[folder.name].record}
        return inputs

    def _add_site(self, name: str, folder: Path) -> None:
        site = load_evaluation(folder, required_key="models")
        path = site.folder / "metrics.json"
        models, delong = site.metrics["models"], site.metrics.get("delong", [])
        if not isinstance(models, dict) or not models:
            raise SarcogradeError("'models' is empty or not a mapping", path=path)
        bad = [str(m) for m, block in models.items() if not isinstance(block, dict)]
        if bad:
            raise SarcogradeError(f"model(s) {', '.join(bad)}: not a mapping of metrics",
                                  path=path)
        if not isinstance(delong, list) or not all(
                isinstance(e, dict) and "a" in e and "b" in e for e in delong):
            raise SarcogradeError("'delong' is not a list of {a, b, p, p_adjusted}", path=path)
        self.sites[name] = site

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
        inputs = cls(folder, study=optional_json(folder / "study.json"))
        for name in names:
            inputs._add_site(name, evaluate / name)
        # The external sites first, then the pooled evaluation.
        inputs.sites = dict(sorted(inputs.sites.items(), key=lambda s: inputs.is_pooled(s[0])))
        for site_dir in _subfolders(folder / "explain"):
            inputs.attention[site_dir.name] = {
                seq.name: load_attention(seq) for seq in _subfolders(site_dir)}
        inputs.runs = {run.name: load_training_run(run) for run in _subfolders(folder / "train")}
        inputs.predictions = {site.name: sorted(p.stem for p in site.glob("*.csv"))
                              for site in _subfolders(folder / "predict")}
        inputs.records = {str(p.relative_to(folder)): r for p in sorted(folder.rglob("*run.json"))
                          if isinstance(r := read_json(p), dict)}
        return inputs

    def is_pooled(self, site: str) -> bool:
        return bool(self.sites[site].metrics.get("pooled")) or site == POOLED


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
