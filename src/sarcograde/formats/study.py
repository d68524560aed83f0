"""What `sarcograde study` writes beside its stage folders (docs/artifacts.md): study.json, the
study's configuration (`config`) and its steps (`steps`)."""

from __future__ import annotations

from pathlib import Path

from .common import read_json_object

STUDY = "study.json"


def read_study(folder: str | Path) -> dict | None:
    """DIR/study.json (an object); None where the study was assembled by hand without one."""
    path = Path(folder) / STUDY
    return read_json_object(path, "study") if path.is_file() else None
