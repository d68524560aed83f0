"""The cohort manifest: one CSV row per patient (every column: docs/manifest.md).

`load_manifest` parses every row it can and collects each problem with its row, patient and
column, so that `check` can list them all at once; the other stages call it with `strict=True`
and stop at the first problem.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import SarcogradeError
from .outcome import GRADE

CLINICAL_COLUMNS = ("age", "sex", "t_stage", "n_stage", "m_stage", "os_months", "os_event")
MISSING = {"", "na", "n/a", "nan", "none", "unknown", "?", "-", "--", "nd", "not available"}

# Patient ids become file names (cache/patients/<id>.npz, explain maps): the one rule for both
# the manifest (`check`) and every stage that names a file after a patient.
PATIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+ -]*")
PATIENT_ID_RULE = "letters, digits, '._+- ', starting with a letter or digit"

# A DICOM UID (series_<SEQ> holds a SeriesInstanceUID): numbers joined by dots, 64 characters
# at most; a SeriesDescription pasted there instead is a problem, not a series never found.
DICOM_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
DICOM_UID_MAX = 64

_GRADE_WORDS = {"low": 1, "intermediate": 2, "high": 3}
_ROMAN = {"i": 1, "ii": 2, "iii": 3}
DAYS_PER_MONTH = 365.25 / 12


@dataclass(frozen=True)
class ManifestProblem:
    row: int            # line number in the CSV file (the header is line 1)
    patient_id: str
    column: str
    message: str

    def __str__(self) -> str:
        return f"{self.patient_id or '?'}: row {self.row}, column {self.column}: {self.message}"


@dataclass
class Patient:
    patient_id: str
    row: int
    grade: int | None                                  # FNCLCC 1, 2, 3 or unknown
    images: dict[str, Path] = field(default_factory=dict)   # sequence -> image path
    masks: dict[str, Path] = field(default_factory=dict)    # sequence -> mask path
    rois: dict[str, str] = field(default_factory=dict)      # sequence -> RTSTRUCT ROI name
    series: dict[str, str] = field(default_factory=dict)    # sequence -> SeriesInstanceUID
    clinical: dict[str, object] = field(default_factory=dict)
    site: str | None = None
    target: str = GRADE                 # the outcome `label` is the class of
    target_class: int | None = None     # its 0/1 value, for a target other than the grade

    @property
    def label(self) -> int | None:
        """The outcome's class, None when unknown: for the grade, class 0 = low grade (G1) and
        class 1 = high grade (G2/G3); for another target, its 0/1 value."""
        if self.target != GRADE:
            return self.target_class
        return None if self.grade is None else int(self.grade >= 2)


@dataclass
class Cohort:
    path: Path
    patients: list[Patient]
    sequences: list[str]
    problems: list[ManifestProblem]
    warnings: list[ManifestProblem]

    def __iter__(self):
        return iter(self.patients)

    def __len__(self) -> int:
        return len(self.patients)

    def by_id(self) -> dict[str, Patient]:
        return {p.patient_id: p for p in self.patients}

    def require_sequence(self, sequence: str | None) -> str:
        """The sequence to work on: the one named, or the only one the manifest has."""
        if sequence is None:
            if len(self.sequences) != 1:
                raise SarcogradeError(f"the manifest has sequences {', '.join(self.sequences)}; "
                                      "name one with --sequence", path=self.path)
            return self.sequences[0]
        if sequence not in self.sequences:
            raise SarcogradeError(f"no image_{sequence} column; sequences in the manifest: "
                                  f"{', '.join(self.sequences) or 'none'}", path=self.path)
        return sequence


def is_missing(value) -> bool:
    """True for None, NaN/NaT/pd.NA and the spellings of 'unknown' in MISSING."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return True
    return str(value).strip().lower() in MISSING


def patient_id_problem(patient_id: str) -> str | None:
    """Why `patient_id` cannot name a file, or None when it can."""
    if PATIENT_ID.fullmatch(patient_id):
        return None
    return f"patient_id {patient_id!r} cannot be a file name ({PATIENT_ID_RULE})"


def series_uid_problem(uid: str) -> str | None:
    """Why `uid` cannot be a SeriesInstanceUID, or None when it can."""
    if DICOM_UID.fullmatch(uid) and len(uid) <= DICOM_UID_MAX:
        return None
    return (f"{uid!r} is not a SeriesInstanceUID (numbers joined by dots, at most "
            f"{DICOM_UID_MAX} characters)")


def parse_grade(value) -> int | None:
    """FNCLCC grade: 1-3, G1-G3, 'grade 2', 'grade II', low/intermediate/high; None if missing."""
    if is_missing(value):
        return None
    text = str(value).strip().lower()
    if text in _GRADE_WORDS:
        return _GRADE_WORDS[text]
    m = re.fullmatch(r"(?:g|grade|fnclcc)?\s*(?:([123])(?:\.0+)?|(i{1,3}))", text)
    if m:
        return int(m.group(1)) if m.group(1) else _ROMAN[m.group(2)]
    raise ValueError(f"unparseable grade {value!r} (use 1-3, G1-G3, low/intermediate/high, "
                     "or leave empty for unknown)")


def parse_target_class(value) -> int | None:
    """A 0/1 target's class; None if missing."""
    if is_missing(value):
        return None
    text = str(value).strip()
    if text in ("0", "0.0", "1", "1.0"):
        return int(float(text))
    raise ValueError(f"target value {value!r} is not 0 or 1 (or empty for unknown)")


def _number_with_unit(value, units: dict[str, float], what: str) -> float:
    text = str(value).strip().lower().replace(",", ".")
    m = re.fullmatch(r"([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*([a-z]*)\.?", text)
    if not m or m.group(2) not in units:
        raise ValueError(f"non-numeric {what} {value!r}" +
                         (f" (units: {', '.join(u for u in units if u)})" if len(units) > 1 else ""))
    number = float(m.group(1)) * units[m.group(2)]
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"invalid {what} {value!r}")
    return number


def parse_age(value) -> float:
    return _number_with_unit(value, {"": 1, "y": 1, "yr": 1, "yrs": 1, "years": 1, "year": 1},
                             "age")


def parse_months(value) -> float:
    """Survival time in months; '365 d', '2 y', '14 mo' and bare numbers (months) are accepted."""
    units = {"": 1, "m": 1, "mo": 1, "mos": 1, "month": 1, "months": 1,
             "d": 1 / DAYS_PER_MONTH, "day": 1 / DAYS_PER_MONTH, "days": 1 / DAYS_PER_MONTH,
             "w": 7 / DAYS_PER_MONTH, "wk": 7 / DAYS_PER_MONTH, "weeks": 7 / DAYS_PER_MONTH,
             "y": 12, "yr": 12, "yrs": 12, "year": 12, "years": 12}
    return _number_with_unit(value, units, "survival time")


def parse_sex(value) -> str:
    text = str(value).strip().lower()
    if text in ("m", "male", "man"):
        return "M"
    if text in ("f", "female", "woman", "w"):
        return "F"
    raise ValueError(f"unparseable sex {value!r} (use M/F)")


def _stage(letter: str):
    def parse(value) -> int | None:
        text = str(value).strip().lower()
        if re.fullmatch(rf"{letter}?\s*x", text):  # TX/NX/MX: cannot be assessed, i.e. unknown
            return None
        m = re.fullmatch(rf"(?:{letter})?\s*([0-4])(?:\.0+)?\s*[abc]?", text)
        if not m:
            raise ValueError(f"unparseable {letter.upper()} stage {value!r} "
                             f"(use e.g. {letter.upper()}1, {letter.upper()}2b or 1)")
        return int(m.group(1))
    return parse


def parse_event(value) -> int:
    text = str(value).strip().lower()
    if text in ("1", "1.0", "yes", "y", "true", "dead", "death", "died", "d", "deceased"):
        return 1
    if text in ("0", "0.0", "no", "n", "false", "alive", "censored", "ned", "awd"):
        return 0
    raise ValueError(f"unparseable survival event {value!r} (use 1 = death, 0 = censored)")


PARSERS = {"age": parse_age, "sex": parse_sex, "t_stage": _stage("t"), "n_stage": _stage("n"),
           "m_stage": _stage("m"), "os_months": parse_months, "os_event": parse_event}


def _resolve(base: Path, value) -> Path:
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else (base / path)


def _check_header(path: Path) -> None:
    """The header names patient_id once and no column twice (pandas would rename the second
    `grade` to `grade.1` and silently use the first); a ';' or tab separator gets a hint."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = [c.strip() for c in next(csv.reader(fh), [])]
    if "patient_id" not in header:
        hint = next((f"; the file looks {name}-separated: save it as comma-separated CSV"
                     for sep, name in ((";", "semicolon"), ("\t", "tab"))
                     if any(sep in c for c in header)), "")
        raise SarcogradeError(f"manifest has no patient_id column{hint}", path=path)
    repeated = sorted({c for c in header if c and header.count(c) > 1})  # not Excel's blanks
    if repeated:
        raise SarcogradeError(f"column {', '.join(repeated)} appears more than once in the "
                              "header", path=path)


def read_table(path: str | Path) -> pd.DataFrame:
    """A manifest CSV as text cells (nothing parsed), column names stripped; a missing
    patient_id column, a repeated column or another separator is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise SarcogradeError("manifest not found", path=path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SarcogradeError(f"cannot parse manifest CSV ({str(exc).splitlines()[0]})",
                              path=path) from None
    _check_header(path)
    frame.columns = [c.strip() for c in frame.columns]
    return frame


def load_manifest(path: str | Path, strict: bool = False, *, images: bool = True,
                  target: str = GRADE) -> Cohort:
    """Parse a manifest CSV. With `strict`, any row problem raises a `SarcogradeError`.

    `images=False` (evaluate, which reads masks for the tumour volume only): a manifest without
    image and mask columns is read, and its sequences are those with both columns.
    `target`: the outcome of each patient's `label`, the grade or another 0/1 column.
    """
    path = Path(path)
    frame = read_table(path)
    sequences = [c[len("image_"):] for c in frame.columns if c.startswith("image_")]
    if not images:
        sequences = [seq for seq in sequences if f"mask_{seq}" in frame.columns]
    if not sequences and images:
        raise SarcogradeError("manifest has no image_<SEQ> column", path=path)
    for seq in sequences:
        if f"mask_{seq}" not in frame.columns:
            raise SarcogradeError(f"image_{seq} has no mask_{seq} column", path=path)
    if target != GRADE and target not in frame.columns:
        raise SarcogradeError(f"target {target!r} is not a column of the manifest", path=path)
    for column in frame.columns:
        if column.startswith("series_") and column[len("series_"):] not in sequences:
            raise SarcogradeError(f"{column} has no image_{column[len('series_'):]} column",
                                  path=path)

    base = path.parent
    patients, problems, notes = [], [], []
    seen: dict[str, int] = {}
    for i, row in frame.iterrows():
        line = int(i) + 2
        pid = str(row["patient_id"]).strip()
        if not pid:
            problems.append(ManifestProblem(line, "", "patient_id", "empty patient_id"))
            continue
        if pid in seen:
            problems.append(ManifestProblem(line, pid, "patient_id",
                                            f"duplicate patient_id (also on row {seen[pid]})"))
            continue
        seen[pid] = line
        id_problem = patient_id_problem(pid)
        if id_problem:
            problems.append(ManifestProblem(line, pid, "patient_id", id_problem))
        try:
            grade = parse_grade(row.get("grade"))
            if grade is None:
                notes.append(ManifestProblem(line, pid, "grade", "grade unknown: predicted, "
                                             "but left out of training and metrics"))
        except ValueError as exc:
            grade = None
            problems.append(ManifestProblem(line, pid, "grade", str(exc)))
        patient = Patient(pid, line, grade,
                          site=None if is_missing(row.get("site")) else str(row["site"]).strip(),
                          target=target)
        if target != GRADE:
            try:
                patient.target_class = parse_target_class(row[target])
            except ValueError as exc:
                problems.append(ManifestProblem(line, pid, target, str(exc)))
        for seq in sequences:
            for kind, store in (("image", patient.images), ("mask", patient.masks)):
                value = row[f"{kind}_{seq}"]
                if not is_missing(value):
                    store[seq] = _resolve(base, value)
                elif kind == "image" and images:
                    problems.append(ManifestProblem(line, pid, f"{kind}_{seq}", "no file given"))
            roi = row.get(f"roi_{seq}")
            if not is_missing(roi):
                patient.rois[seq] = str(roi).strip()
            series = row.get(f"series_{seq}")
            if not is_missing(series):
                uid_problem = series_uid_problem(str(series).strip())
                if uid_problem:
                    problems.append(ManifestProblem(line, pid, f"series_{seq}", uid_problem))
                else:
                    patient.series[seq] = str(series).strip()
        # An empty mask cell is filled by another sequence's contour (sarcograde.masks).
        if not patient.masks and images:
            problems += [ManifestProblem(line, pid, f"mask_{seq}", "no file given")
                         for seq in sequences]
        for column, parse in PARSERS.items():
            value = row.get(column)
            if column not in frame.columns or is_missing(value):
                patient.clinical[column] = None
                continue
            try:
                patient.clinical[column] = parse(value)
            except ValueError as exc:
                patient.clinical[column] = None
                problems.append(ManifestProblem(line, pid, column, str(exc)))
        patients.append(patient)

    cohort = Cohort(path, patients, sequences, problems, notes)
    if strict and problems:
        more = f" (and {len(problems) - 1} more; run `sarcograde check`)" if len(problems) > 1 else ""
        raise SarcogradeError(f"{problems[0]}{more}", path=path)
    return cohort
