"""What `evaluate` writes into EVAL (docs/artifacts.md), as the report and the demo read it:
metrics.json (one model's, or several models' with their DeLong comparisons), patient_flow.json,
survival.json, Table 1 and the other CSV outputs and figures; and an estimate `{"value", "ci95"}`
of metrics.json in words. Each file's name is a constant here, used by its writer and its reader;
the figures are saved by evaluate (`artifacts.save_figure`) and read with `read_figure`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..artifacts import write_csv, write_json, write_text
from ..errors import SarcogradeError
from ..stats import METRICS as SCORES
from .common import read_csv_file, read_json_file, read_json_object

RERUN = "evaluate"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

METRICS = "metrics.json"
PATIENT_FLOW = "patient_flow.json"
SURVIVAL = "survival.json"
CONFUSION = "confusion.csv"
BASELINES = "baselines.csv"
TABLE2_CSV, TABLE2_MD = "table2.csv", "table2.md"
DELONG = "delong.csv"
BASELINE_PREDICTIONS = "baseline_predictions.csv"
COHORT_TABLE_CSV, COHORT_TABLE_MD = "cohort_table.csv", "cohort_table.md"
TUMOUR_VOLUMES = "tumour_volumes_{cohort}.csv"  # cohort: train | test
DECISION_CURVE = "decision_curve.csv"
SELECTIVE = "selective_prediction.csv"
SUBGROUPS = "subgroups.csv"
# the figures
ROC = "roc.png"
CALIBRATION = "calibration.png"
CALIBRATION_MODELS = "calibration_models.png"
KM = "km_{key}.png"  # key: a stratification of survival.json's `models`
KM_PANEL = "km_panel.png"
DECISION_FIGURE = "decision_curve.png"
SELECTIVE_FIGURE = "selective_prediction.png"
SUBGROUPS_FIGURE = "subgroups.png"
RECALIBRATION_FIGURE = "recalibration.png"

CONFUSION_COLUMNS = ("model", "rule", "threshold", "tn", "fp", "fn", "tp")
DELONG_COLUMNS = ("a", "b", "auc_a", "auc_b", "difference", "z", "p", "p_adjusted", "note")
DECISION_CURVE_COLUMNS = ("model", "threshold", "net_benefit", "net_benefit_ci_low",
                          "net_benefit_ci_high", "treat_all", "treat_none")
SELECTIVE_COLUMNS = ("model", "n_kept", "coverage", "max_spread", "auc", "accuracy")
# the subgroups' metrics: stats.METRICS, without calibration (not meaningful in ten patients)
SUBGROUP_COLUMNS = ("variable", "level", "n", "n_low", "n_high", "model",
                    *[f"{metric}{suffix}" for metric in SCORES
                      for suffix in ("", "_ci_low", "_ci_high")], "note")
VOLUME_COLUMNS = ("patient_id", "sequence", "mask", "key", "voxels", "voxel_ml", "volume_ml")


def read_metrics(eval_dir: str | Path, key: str = "auc") -> dict:
    """EVAL/metrics.json, an object holding `key`: `auc` for one model's evaluation, `models`
    for an evaluation that compared several (see `read_model_metrics`)."""
    path = Path(eval_dir) / METRICS
    if not path.is_file():
        raise SarcogradeError("no metrics.json: run `sarcograde evaluate` first", path=eval_dir)
    metrics = read_json_file(path, RERUN)
    if not isinstance(metrics, dict) or key not in metrics:
        raise SarcogradeError(f"not an evaluate metrics.json (no '{key}')", path=path)
    return metrics


def read_model_metrics(eval_dir: str | Path) -> dict:
    """The metrics.json of an evaluation of several models: `models` a non-empty mapping of
    model -> metrics, `delong` (optional) a list of pairwise comparisons {a, b, p, ...}."""
    metrics = read_metrics(eval_dir, "models")
    path = Path(eval_dir) / METRICS
    models, delong = metrics["models"], metrics.get("delong", [])
    if not isinstance(models, dict) or not models:
        raise SarcogradeError("'models' is empty or not a mapping", path=path)
    bad = [str(m) for m, block in models.items() if not isinstance(block, dict)]
    if bad:
        raise SarcogradeError(f"model(s) {', '.join(bad)}: not a mapping of metrics", path=path)
    if not isinstance(delong, list) or not all(
            isinstance(e, dict) and "a" in e and "b" in e for e in delong):
        raise SarcogradeError("'delong' is not a list of {a, b, p, p_adjusted}", path=path)
    return metrics


def compares_models(eval_dir: str | Path) -> bool:
    """True for an EVAL that compared several prediction files (`evaluate --predictions A B`):
    more than one entry of `models` names its `predictions`, or `models` comes without the
    one-model `auc`. A one-model evaluation lists its baselines under `models` too."""
    path = Path(eval_dir) / METRICS
    metrics = read_json_file(path, RERUN) if path.is_file() else None
    models = metrics.get("models") if isinstance(metrics, dict) else None
    if not isinstance(models, dict) or len(models) < 2:
        return False
    files = sum(isinstance(block, dict) and "predictions" in block for block in models.values())
    return files > 1 or "auc" not in metrics


def read_output_json(path: str | Path) -> dict | None:
    """patient_flow.json or survival.json (an object); None where the file is absent."""
    return read_json_object(Path(path), RERUN) if Path(path).is_file() else None


def read_output_csv(path: str | Path, required: Iterable[str] = ()) -> pd.DataFrame:
    """confusion.csv, baselines.csv, cohort_table.csv, ..."""
    return read_csv_file(Path(path), required)


def write_metrics(eval_dir: str | Path, metrics: dict) -> None:
    write_json(Path(eval_dir) / METRICS, metrics)


def read_patient_flow(eval_dir: str | Path) -> dict | None:
    return read_output_json(Path(eval_dir) / PATIENT_FLOW)


def write_patient_flow(eval_dir: str | Path, flow: dict) -> None:
    write_json(Path(eval_dir) / PATIENT_FLOW, flow)


def read_survival(eval_dir: str | Path) -> dict | None:
    return read_output_json(Path(eval_dir) / SURVIVAL)


def write_survival(eval_dir: str | Path, survival: dict) -> None:
    write_json(Path(eval_dir) / SURVIVAL, survival)


def read_confusion(eval_dir: str | Path) -> pd.DataFrame | None:
    """confusion.csv; None where the file is absent."""
    path = Path(eval_dir) / CONFUSION
    return read_output_csv(path, CONFUSION_COLUMNS) if path.is_file() else None


def write_confusion(eval_dir: str | Path, rows: list[dict]) -> None:
    """One row {model, rule, threshold, tn, fp, fn, tp} per model and threshold rule."""
    write_csv(Path(eval_dir) / CONFUSION, pd.DataFrame(rows, columns=list(CONFUSION_COLUMNS)))


def read_baselines(eval_dir: str | Path) -> pd.DataFrame:
    return read_output_csv(Path(eval_dir) / BASELINES, ("model", "label", "n", "threshold"))


def write_baselines(eval_dir: str | Path, frame: pd.DataFrame) -> None:
    write_csv(Path(eval_dir) / BASELINES, frame)


def read_table2(eval_dir: str | Path) -> tuple[pd.DataFrame, str]:
    """Table 2 as table2.csv's frame and table2.md's text."""
    path = Path(eval_dir) / TABLE2_MD
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SarcogradeError(f"cannot read Table 2 ({exc})", path=path) from None
    return read_output_csv(Path(eval_dir) / TABLE2_CSV, ("model", "n")), text


def write_table2(eval_dir: str | Path, table: pd.DataFrame, markdown: str) -> None:
    write_csv(Path(eval_dir) / TABLE2_CSV, table)
    write_text(Path(eval_dir) / TABLE2_MD, markdown)


def read_delong(eval_dir: str | Path) -> pd.DataFrame:
    return read_output_csv(Path(eval_dir) / DELONG, DELONG_COLUMNS)


def write_delong(eval_dir: str | Path, pairs: list[dict]) -> None:
    """metrics.json's `delong` pairs, one row each, without their CI."""
    write_csv(Path(eval_dir) / DELONG, pd.DataFrame(
        [{k: v for k, v in pair.items() if k != "ci95"} for pair in pairs],
        columns=list(DELONG_COLUMNS)))


def read_baseline_predictions(eval_dir: str | Path) -> pd.DataFrame:
    return read_csv_file(Path(eval_dir) / BASELINE_PREDICTIONS, ("patient_id", "label"),
                         BASELINE_PREDICTIONS, dtype={"patient_id": str})


def write_baseline_predictions(eval_dir: str | Path, patient_ids: list[str], labels: Any,
                               probabilities: dict[str, Any]) -> None:
    """patient_id, label, then p_<key> per model key."""
    write_csv(Path(eval_dir) / BASELINE_PREDICTIONS, pd.DataFrame(
        {"patient_id": patient_ids, "label": labels,
         **{f"p_{key}": p for key, p in probabilities.items()}}))


def write_decision_curve(eval_dir: str | Path, frame: pd.DataFrame) -> None:
    write_csv(Path(eval_dir) / DECISION_CURVE, frame[list(DECISION_CURVE_COLUMNS)])


def write_selective(eval_dir: str | Path, frame: pd.DataFrame) -> None:
    write_csv(Path(eval_dir) / SELECTIVE, frame[list(SELECTIVE_COLUMNS)])


def write_subgroups(eval_dir: str | Path, frame: pd.DataFrame) -> None:
    """One row per subgroup and model (a too-small subgroup: one row with its note)."""
    write_csv(Path(eval_dir) / SUBGROUPS, frame[list(SUBGROUP_COLUMNS)])


def write_cohort_table(eval_dir: str | Path, frame: pd.DataFrame, markdown: str) -> None:
    """Table 1 as cohort_table.csv and cohort_table.md (with its notes); see read_cohort_table."""
    write_csv(Path(eval_dir) / COHORT_TABLE_CSV, frame)
    write_text(Path(eval_dir) / COHORT_TABLE_MD, markdown)


def tumour_volumes_path(eval_dir: str | Path, cohort: str) -> Path:
    """The tumour-volume cache of the `train` or `test` cohort."""
    return Path(eval_dir) / TUMOUR_VOLUMES.format(cohort=cohort)


def read_tumour_volumes(path: str | Path) -> dict:
    """Cached rows (VOLUME_COLUMNS) by (patient, sequence, key); an unreadable or foreign file
    is ignored (it is a cache: the volumes are measured again)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        old = pd.read_csv(path, dtype={"patient_id": str, "sequence": str, "key": str},
                          float_precision="round_trip")  # exact floats: reruns give equal numbers
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}
    if tuple(old.columns) != VOLUME_COLUMNS:
        return {}
    return {(r.patient_id, r.sequence, r.key): r for r in old.itertuples()}


def write_tumour_volumes(path: str | Path, rows: list[dict]) -> None:
    write_csv(path, pd.DataFrame(rows, columns=list(VOLUME_COLUMNS)))


def read_figure(path: str | Path) -> bytes:
    """A PNG figure (evaluate's plots, explain's montages); a file that is not a PNG is an
    error."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SarcogradeError(f"cannot read figure ({exc.strerror})", path=path) from None
    if not data.startswith(PNG_SIGNATURE):
        raise SarcogradeError("not a PNG image", path=path)
    return data


@dataclass
class CohortTable:
    """evaluate's Table 1: header, body rows and the notes below the table."""

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


def read_cohort_table(eval_dir: str | Path) -> CohortTable | None:
    """Table 1: cohort_table.md (it has the test notes), else cohort_table.csv; None if
    neither."""
    md_path, csv_path = Path(eval_dir) / COHORT_TABLE_MD, Path(eval_dir) / COHORT_TABLE_CSV
    if md_path.is_file():
        try:
            return parse_markdown_table(md_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise SarcogradeError(f"cannot read Table 1 ({exc})", path=md_path) from None
    if csv_path.is_file():
        frame = read_output_csv(csv_path).fillna("")
        return CohortTable([str(c) for c in frame.columns],
                           [list(row) for row in frame.itertuples(index=False)], [])
    return None


def format_number(x: Any, digits: int = 2) -> str:
    """A number with `digits` decimals; "n/a" for a missing or non-finite value."""
    if x is None or isinstance(x, str):
        return "n/a" if x in (None, "") else x
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}"


def format_ci(ci: Any, digits: int = 2) -> str:
    """A 95% CI as "(0.66-0.83)", or "(-0.50 to 0.20)" with a negative bound (legible sign)."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or any(
            c is None or not math.isfinite(float(c)) for c in ci):
        return ""
    lo, hi = (format_number(c, digits) for c in ci)
    sep = " to " if min(float(c) for c in ci) < 0 else "-"
    return f"({lo}{sep}{hi})"


def format_estimate(block: Any, digits: int = 2) -> str:
    """A metrics.json estimate {"value", "ci95"} as "0.75 (0.66-0.83)"."""
    if not isinstance(block, dict):
        return format_number(block, digits)
    value = format_number(block.get("value"), digits)
    ci = format_ci(block.get("ci95"), digits)
    return f"{value} {ci}" if ci and value != "n/a" else value
