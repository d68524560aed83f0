"""What every reader of `formats` shares: JSON and CSV files read with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..errors import SarcogradeError


def read_json_file(path: Path, rerun: str | None = None) -> Any:
    """A JSON file; a damaged one is a one-line error saying which stage to rerun."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SarcogradeError("file not found", path=path) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        advice = f"; rerun `sarcograde {rerun}`" if rerun else ""
        raise SarcogradeError(f"corrupt JSON ({first_line(exc)}){advice}", path=path) from None


def read_json_object(path: Path, rerun: str | None = None) -> dict:
    """A JSON file that must hold an object (a mapping)."""
    value = read_json_file(path, rerun)
    if not isinstance(value, dict):
        advice = f"; rerun `sarcograde {rerun}`" if rerun else ""
        raise SarcogradeError(f"corrupt JSON (expected an object, found "
                              f"{type(value).__name__}){advice}", path=path)
    return value


def read_csv_file(path: Path, required: Iterable[str] = (), what: str = "CSV file",
                  **read_options) -> pd.DataFrame:
    """A CSV file with at least the `required` columns."""
    path = Path(path)
    if not path.is_file():
        raise SarcogradeError(f"{what} not found", path=path)
    try:
        frame = pd.read_csv(path, **read_options)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # ParserError is a ValueError
        raise SarcogradeError(f"cannot parse CSV ({first_line(exc)})", path=path) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SarcogradeError(f"no column(s) {', '.join(missing)}", path=path)
    return frame


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
