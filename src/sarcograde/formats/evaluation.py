"""What `evaluate` writes into EVAL (docs/artifacts.md), as the report reads it, and an
estimate `{"value", "ci95"}` of metrics.json in words."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..errors import SarcogradeError
from .common import read_csv_file, read_json_file

RERUN = "evaluate"


def read_metrics(eval_dir: str | Path) -> dict:
    """EVAL/metrics.json (an object with an `auc` estimate at least)."""
    path = Path(eval_dir) / "metrics.json"
    if not path.is_file():
        raise SarcogradeError("no metrics.json: run `sarcograde evaluate` first", path=eval_dir)
    metrics = read_json_file(path, RERUN)
    if not isinstance(metrics, dict) or "auc" not in metrics:
        raise SarcogradeError("not an evaluate metrics.json (no 'auc')", path=path)
    return metrics


def read_output_json(path: str | Path) -> Any:
    """patient_flow.json, survival.json or a run record."""
    return read_json_file(Path(path), RERUN)


def read_output_csv(path: str | Path, required: Iterable[str] = ()) -> pd.DataFrame:
    """confusion.csv, baselines.csv, cohort_table.csv, ..."""
    return read_csv_file(Path(path), required)


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
