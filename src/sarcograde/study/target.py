"""A study on another 0/1 target than grade (`target: lung_metastasis`).

Every stage takes its label from the manifest's grade (G1 = class 0, G2/G3 = class 1), so the
study writes `DIR/manifests/<cohort>.csv`: the manifest with grade G1 where the target is 0, G3
where it is 1, empty where it is unknown, the original grade kept as `grade_original`, and every
file path made absolute. The stages run on that manifest unchanged, except evaluate, which
reads the study's own manifests with `--target` (the label from the column, the real grade kept
for Table 1).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..artifacts import write_csv
from ..cohort import is_missing, read_table

FILE_PREFIXES = ("image_", "mask_")


def _absolute_paths(frame: pd.DataFrame, base: Path) -> pd.DataFrame:
    """Image and mask paths resolved against the manifest's folder, so the copy works anywhere."""
    frame = frame.copy()
    for column in frame.columns:
        if column.startswith(FILE_PREFIXES):
            frame[column] = [v if is_missing(v) else str((base / str(v).strip()).resolve())
                             for v in frame[column]]
    return frame


def target_manifest(manifest: Path, target: str, out: Path) -> None:
    frame = _absolute_paths(read_table(manifest), manifest.parent)
    if "grade" in frame.columns:
        frame["grade_original"] = frame["grade"]
    codes = {"0": "G1", "0.0": "G1", "1": "G3", "1.0": "G3"}
    frame["grade"] = ["" if is_missing(v) else codes[str(v).strip()] for v in frame[target]]
    write_csv(out, frame)
