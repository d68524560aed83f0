"""What `sarcograde grade` writes (docs/artifacts.md): per patient `DIR/<id>/grade.json` (the
result, its spread, the QA flags, the package it came from) and `DIR/<id>/case-report.html`;
for a batch, `DIR/grades.csv` with one row per patient.

`write_grade`/`read_grade` and `write_grades`/`read_grades` are their one writer and reader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from ..artifacts import write_csv, write_json
from ..errors import SarcogradeError
from .common import read_csv_file, read_json_object
from .dicom_out import DICOM
from .records import record_path

RERUN = "grade"
GRADE = "grade.json"
CASE_REPORT = "case-report.html"
GRADES = "grades.csv"
CACHE = "cache"  # DIR/<id>/cache/<SEQ>/: the patient preprocessed with the package's settings
ATTENTION = "attention"  # DIR/<id>/attention/<SEQ>/: explain's maps and montage of the patient
SLICE_LOGITS = "slices"  # CACHE/<SEQ>/slices/<id>.npz: its per-slice logits, as predict saves them
GRADES_COLUMNS = ["patient_id", "p_high", "grade", "threshold", "borderline", "p_high_sd",
                  "p_high_min", "p_high_max", "qa_flags", "model_id", "error"]
FAILED = "not graded"  # grades.csv's grade of a patient whose inputs could not be graded
REQUIRED = ("patient_id", "model", "p_high", "grade", "threshold", "borderline", "sequences",
            "qa_flags")


def patient_folder(out: str | Path, patient_id: str) -> Path:
    """`DIR/<id>`: one patient's outputs."""
    return Path(out) / patient_id


def grade_path(out: str | Path, patient_id: str) -> Path:
    return patient_folder(out, patient_id) / GRADE


def case_report_path(out: str | Path, patient_id: str) -> Path:
    return patient_folder(out, patient_id) / CASE_REPORT


def remove_patient_outputs(out: str | Path, patient_id: str) -> None:
    """Remove what grade writes for a patient (never another file of its folder), and the
    folder where nothing else is left in it."""
    folder = patient_folder(out, patient_id)
    report = case_report_path(out, patient_id)
    for path in (grade_path(out, patient_id), report, record_path(report)):
        path.unlink(missing_ok=True)
    for name in (CACHE, ATTENTION, DICOM):
        shutil.rmtree(folder / name, ignore_errors=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def write_grade(out: str | Path, result: dict) -> Path:
    path = grade_path(out, result["patient_id"])
    write_json(path, result)
    return path


def read_grade(path: str | Path) -> dict:
    """grade.json, with the keys every reader relies on."""
    path = Path(path)
    result = read_json_object(path, RERUN)
    missing = [key for key in REQUIRED if key not in result]
    if missing:
        raise SarcogradeError(f"grade.json lacks {', '.join(missing)}; rerun `sarcograde "
                              f"{RERUN}`", path=path)
    return result


def grades_row(result: dict) -> dict:
    """grades.csv's row of one patient's grade.json."""
    spread = result.get("spread") or {}
    return {"patient_id": result["patient_id"], "p_high": result["p_high"],
            "grade": result["grade"], "threshold": result["threshold"],
            "borderline": int(result["borderline"]), "p_high_sd": spread.get("sd"),
            "p_high_min": spread.get("min"), "p_high_max": spread.get("max"),
            "qa_flags": ";".join(flag["code"] for flag in result["qa_flags"]),
            "model_id": result["model"]["id"], "error": ""}


def failure_row(patient_id: str, model_id: str, problem: str) -> dict:
    """grades.csv's row of a patient that could not be graded, with the problem."""
    return {"patient_id": patient_id, "grade": FAILED, "model_id": model_id, "error": problem}


def write_grades(out: str | Path, rows: list[dict]) -> Path:
    """grades.csv from `grades_row` and `failure_row` rows, in the batch's order."""
    path = Path(out) / GRADES
    write_csv(path, pd.DataFrame(rows, columns=GRADES_COLUMNS))
    return path


def read_grades(path: str | Path) -> pd.DataFrame:
    return read_csv_file(Path(path), GRADES_COLUMNS, "grades.csv", dtype={"patient_id": str})
