"""Files the study derives from the stages' artifacts rather than through a stage.

- A manifest whose `grade` encodes another 0/1 target (`target: lung_metastasis`): every stage
  takes its label from the manifest's grade (G1 = class 0, G2/G3 = class 1), so a study on
  another target writes `DIR/manifests/<cohort>.csv` with grade G1 where the target is 0, G3
  where it is 1, empty where it is unknown, the original grade kept as `grade_original`, and
  every file path made absolute. The stages run on that manifest unchanged.
- The baselines' per-patient test predictions, split out of evaluate's
  `baseline_predictions.csv` into `clinical.csv`, `volume.csv`, `clinical+volume.csv`.
- The pooled site: every test site's predictions and manifests concatenated.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..artifacts import write_csv
from ..cohort import is_missing
from ..errors import SarcogradeError

FILE_PREFIXES = ("image_", "mask_")
# evaluate's baseline keys -> the study's model names
BASELINE_COLUMNS = {"clinical": "p_clinical", "volume": "p_volume",
                    "clinical+volume": "p_clinical_volume"}


def _read_manifest(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    frame.columns = [c.strip() for c in frame.columns]
    return frame


def _absolute_paths(frame: pd.DataFrame, base: Path) -> pd.DataFrame:
    """Image and mask paths resolved against the manifest's folder, so the copy works anywhere."""
    frame = frame.copy()
    for column in frame.columns:
        if column.startswith(FILE_PREFIXES):
            frame[column] = [v if is_missing(v) else str((base / str(v).strip()).resolve())
                             for v in frame[column]]
    return frame


def target_manifest(manifest: Path, target: str, out: Path) -> None:
    frame = _absolute_paths(_read_manifest(manifest), manifest.parent)
    if "grade" in frame.columns:
        frame["grade_original"] = frame["grade"]
    codes = {"0": "G1", "0.0": "G1", "1": "G3", "1.0": "G3"}
    frame["grade"] = ["" if is_missing(v) else codes[str(v).strip()] for v in frame[target]]
    write_csv(out, frame)


def baseline_predictions(evaluate_dir: Path, out_dir: Path, models: list[str]) -> None:
    """`<model>.csv` (patient_id, p_high, predicted) for each baseline evaluate could fit."""
    source = evaluate_dir / "baseline_predictions.csv"
    if not source.is_file():
        raise SarcogradeError("evaluate wrote no baseline_predictions.csv", path=evaluate_dir)
    frame = pd.read_csv(source, dtype={"patient_id": str})
    for model in models:
        column = BASELINE_COLUMNS[model]
        if column not in frame.columns:
            raise SarcogradeError(f"baseline {model} could not be fitted (see metrics.json's "
                                  "baselines); leave it out of the study's models", path=source)
        p = frame[column].astype(float)
        write_csv(out_dir / f"{model}.csv", pd.DataFrame(
            {"patient_id": frame["patient_id"], "p_high": p, "predicted": (p > 0.5).astype(int)}))


def pooled(sites: dict[str, Path], models: list[str], predictions: dict[str, Path],
           manifest_out: Path, predictions_out: Path) -> None:
    """Concatenate the sites' manifests (with a `site` column) and each model's predictions
    (site given by `predictions[site] / <model>.csv`); a patient id in two sites is an error."""
    frames = []
    for site, manifest in sites.items():
        frame = _absolute_paths(_read_manifest(manifest), manifest.parent)
        frame["site"] = site
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True).fillna("")
    twice = table["patient_id"][table["patient_id"].duplicated()]
    if len(twice):
        raise SarcogradeError("the same patient_id in two test sites; pooling needs unique ids",
                              patient=twice.iloc[0])
    write_csv(manifest_out, table)
    for model in models:
        rows = []
        for site in sites:
            frame = pd.read_csv(predictions[site] / f"{model}.csv", dtype={"patient_id": str})
            rows.append(frame.assign(site=site))
        write_csv(predictions_out / f"{model}.csv", pd.concat(rows, ignore_index=True))
