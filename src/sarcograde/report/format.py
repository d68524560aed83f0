"""Numbers written the way a results section writes them: "0.75 (0.66-0.83)", "<0.001".

The estimate and CI formats are `sarcograde.formats.evaluation`'s (the demo prints them too,
without importing the report); they are re-exported here for the report's modules."""

from __future__ import annotations

import math
from typing import Any

from ..formats.evaluation import format_ci, format_estimate, format_number

__all__ = ["format_cell", "format_ci", "format_estimate", "format_list", "format_number",
           "format_p", "grade_word", "pretty_name"]


def format_p(p: Any) -> str:
    """A p-value as reported in papers: "<0.001" or three decimals."""
    if p is None or isinstance(p, str):
        return "n/a" if p in (None, "") else p
    p = float(p)
    if not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_cell(value: Any) -> str:
    """A CSV cell: floats with at most three decimals, everything else as written."""
    if isinstance(value, float):
        return format_number(value, 3 if abs(value) < 1 else 1)
    return str(value)


def format_list(values: Any) -> str:
    return ", ".join(str(v) for v in values) if isinstance(values, (list, tuple)) else str(values)


def pretty_name(key: str) -> str:
    """A model or column key as a label: "clinical_volume" -> "Clinical volume"."""
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def grade_word(label: Any, words: tuple[str, str] = ("low", "high")) -> str:
    """A 0/1 class as the grade (or the `words` of another target) it stands for; "unknown"
    where missing."""
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return "unknown"
    return words[int(label)]
