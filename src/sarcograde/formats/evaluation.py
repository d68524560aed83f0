"""What `evaluate` writes into EVAL (docs/artifacts.md), as the report reads it."""

from __future__ import annotations

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
