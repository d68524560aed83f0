"""The acquisition's files and columns (docs/artifacts.md).

- index.csv's acquisition columns (`INDEX_COLUMNS`), written by `preprocess` for each patient;
- `check`'s OUT/acquisition.csv, the protocol of each patient and sequence (`PROTOCOL_COLUMNS`),
  and OUT/acquisition-summary.csv, the same summarised per site and sequence
  (`SUMMARY_COLUMNS`); `AcquisitionTable` reads either back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..artifacts import write_csv
from .common import read_csv_file

ACQUISITION = "acquisition.csv"
ACQUISITION_SUMMARY = "acquisition-summary.csv"

# index.csv: the values `grade` compares with the training range, and where the thickness came
# from ("SliceThickness", or "slice spacing" where the header holds no thickness).
COMPARED = ["pixel_spacing_mm", "slice_spacing_mm", "slice_thickness_mm", "field_strength_t",
            "tumour_z_mean", "tumour_z_sd"]
THICKNESS_FROM = "slice_thickness_from"
INDEX_COLUMNS = [*COMPARED, THICKNESS_FROM]

PROTOCOL_COLUMNS = ["patient_id", "sequence", "site", "format", "manufacturer", "model",
                    "field_strength_t", "sequence_name", "repetition_time_ms", "echo_time_ms",
                    "flip_angle_deg", "slice_thickness_mm", "slice_spacing_mm",
                    "pixel_spacing_row_mm", "pixel_spacing_column_mm", "matrix_rows",
                    "matrix_columns", "n_slices"]
# Summarised as "value (count)" lists / as "median (min–max)".
CATEGORICAL = ["format", "manufacturer", "model", "field_strength_t", "sequence_name"]
NUMERIC = ["repetition_time_ms", "echo_time_ms", "flip_angle_deg", "slice_thickness_mm",
           "slice_spacing_mm", "pixel_spacing_row_mm", "pixel_spacing_column_mm",
           "matrix_rows", "matrix_columns"]
SUMMARY_COLUMNS = ["site", "sequence", "n", *CATEGORICAL, *NUMERIC]


@dataclass
class AcquisitionTable:
    """OUT/acquisition.csv read back (one row per patient and sequence, PROTOCOL_COLUMNS), or
    with `summary` OUT/acquisition-summary.csv as text (one row per site and sequence)."""

    path: Path
    frame: pd.DataFrame

    @classmethod
    def read(cls, folder: str | Path, summary: bool = False) -> "AcquisitionTable":
        if summary:
            name, columns, types = ACQUISITION_SUMMARY, SUMMARY_COLUMNS, {"dtype": str}
        else:  # the numbers as numbers, empty where unknown; the text as written
            name, columns = ACQUISITION, PROTOCOL_COLUMNS
            text = ["patient_id", "sequence", "site", "format", "manufacturer", "model",
                    "sequence_name"]
            types = {"dtype": dict.fromkeys(text, str),
                     "na_values": {c: [""] for c in columns if c not in text}}
        path = Path(folder) / name
        return cls(path, read_csv_file(path, columns, what=name, keep_default_na=False, **types))


def write_acquisition(out: str | Path, rows: list[dict], summary: pd.DataFrame) -> Path:
    """OUT/acquisition.csv (one row per patient and sequence) and OUT/acquisition-summary.csv."""
    write_csv(Path(out) / ACQUISITION, pd.DataFrame(rows, columns=PROTOCOL_COLUMNS))
    write_csv(Path(out) / ACQUISITION_SUMMARY, summary[SUMMARY_COLUMNS])
    return Path(out) / ACQUISITION
