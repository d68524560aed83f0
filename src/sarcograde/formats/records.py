"""The naming rule of run records (`sarcograde.artifacts.RunRecord`), in one place.

A record is named after the output it describes: `run.json` inside a folder that the stage
writes whole (preprocess's CACHE, train's RUN, evaluate's EVAL, explain's DIR, synth's OUT),
`<stem>.run.json` beside a file that the stage writes into a folder it may share with other
stages (check's `qa.run.json`, predict's `predictions.run.json`, report's `report.run.json`).
"""

from __future__ import annotations

from pathlib import Path

from .common import read_json_object

FOLDER_RECORD = "run.json"


def file_record_name(output: str | Path) -> str:
    """The record's name beside an output file: `<stem>.run.json`."""
    return f"{Path(output).stem}.run.json"


def record_path(output: str | Path) -> Path:
    """Where the record of `output` is: `output/run.json` for a folder, else
    `<stem>.run.json` beside the file."""
    output = Path(output)
    if output.is_dir():
        return output / FOLDER_RECORD
    return output.with_name(file_record_name(output))


def read_record(path: str | Path) -> dict | None:
    """A run record file (an object); None where it is absent (the stage was not run)."""
    return read_json_object(Path(path)) if Path(path).is_file() else None
