"""Numbers written the way a results section writes them: "0.75 (0.66-0.83)", "<0.001"."""

from __future__ import annotations

import math
from typing import Any


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


def grade_word(label: Any) -> str:
    """A 0/1 class as the grade it stands for; "unknown" where missing."""
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return "unknown"
    return "high" if int(label) == 1 else "low"
