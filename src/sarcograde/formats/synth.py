"""What `synth` writes into OUT (docs/artifacts.md) besides the images and masks: manifest.csv,
truth.csv, preview.png, and synth.json, the configuration with every file it writes (what
`--overwrite` may remove)."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import write_json
from .common import read_json_object

MANIFEST = "manifest.csv"
TRUTH = "truth.csv"
PREVIEW = "preview.png"
RECORD = "synth.json"


def read_synth_record(out: str | Path) -> dict | None:
    """OUT/synth.json (an object); None where OUT holds none (synth did not write OUT)."""
    path = Path(out) / RECORD
    return read_json_object(path) if path.is_file() else None


def write_synth_record(out: str | Path, record: dict) -> None:
    write_json(Path(out) / RECORD, record)
