"""What `check` writes (docs/artifacts.md): OUT/qa.csv, one row per patient and sequence with
its measurements and what was found wrong, and its run record `qa.run.json` beside it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..artifacts import write_csv
from .records import file_record_name

QA = "qa.csv"
# qa.run.json, not run.json: check's default folder (the manifest's) may hold synth's or
# import's run.json.
QA_RECORD = file_record_name(QA)
QA_COLUMNS = ["patient_id", "sequence", "image", "series_uid", "mask", "shape", "spacing_mm",
              "orientation", "p1", "p50", "p99", "mask_voxels", "tumour_volume_ml",
              "longest_diameter_mm", "mask_pieces", "largest_piece_share", "mask_source",
              "drawn_volume_ml", "usable", "problems", "warnings"]


def write_qa(out: str | Path, rows: list[dict]) -> pd.DataFrame:
    """OUT/qa.csv of one record per checked patient and sequence (QA_COLUMNS)."""
    frame = pd.DataFrame(rows, columns=QA_COLUMNS)
    write_csv(Path(out) / QA, frame)
    return frame
