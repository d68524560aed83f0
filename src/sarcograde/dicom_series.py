"""The image series of a DICOM folder: listed, and one chosen by its SeriesInstanceUID or by rules
on its SeriesDescription.

An exam exported whole from PACS holds several series of one patient (T1 before and after
contrast, T2, localisers). Which of them a sequence means is never guessed: a folder with several
image series needs the series named, or rules that match exactly one; anything else is a one-line
`SeriesChoiceError` listing the candidates (description, UID, slices). A folder with one image
series needs nothing. Non-image objects (an RTSTRUCT beside the slices) are no series here: GDCM
leaves out files without pixel data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from .errors import SarcogradeError

NAME_ONE = "name one by its SeriesInstanceUID"
# The SeriesDescription rules a model package keeps for the sequences the study names (export's
# defaults; `export --series-rule SEQ=REGEX` replaces them): T1 fat-saturated after gadolinium,
# T2 fat-saturated (or STIR).
DEFAULT_SERIES_RULES = {
    "T1FSGd": [r"t1.*(fs|fat|spir|spair|dixon).*(gd|gad|contrast|post|\+c)",
               r"t1.*(gd|gad|contrast|post|\+c).*(fs|fat|spir|spair|dixon)"],
    "T2FS": [r"t2.*(fs|fat|spir|spair|stir|dixon)", r"stir"],
}


def default_series_rules(sequence: str) -> list[str]:
    """The rules for `sequence` (none for a sequence name it does not know: the exam's series is
    then named with --series)."""
    return list(DEFAULT_SERIES_RULES.get(sequence, []))


@dataclass(frozen=True)
class DicomSeries:
    """One image series of a folder: its UID, SeriesDescription and slice files (GDCM's order)."""

    uid: str
    description: str
    files: tuple[str, ...]

    @property
    def slices(self) -> int:
        return len(self.files)

    def __str__(self) -> str:
        described = repr(self.description) if self.description else "(no description)"
        return f"{described} {self.uid} ({self.slices} slices)"


def describe(candidates: list[DicomSeries]) -> str:
    """The candidates for an error line: "'T1 AX' 1.2.3 (35 slices), 'T2 AX' 1.2.4 (30 slices)"."""
    return ", ".join(str(series) for series in candidates)


class SeriesChoiceError(SarcogradeError):
    """No series, or more than one, fits what was asked. `reason` says which, `candidates` are the
    series to choose from, so a caller can say how to name one in its own words."""

    def __init__(self, reason: str, candidates: list[DicomSeries], folder: Path):
        super().__init__(f"{reason}; {NAME_ONE}: {describe(candidates)}", path=folder)
        self.reason = reason
        self.candidates = candidates


def _uids(folder: Path) -> tuple[str, ...]:
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise SarcogradeError("no DICOM image series in folder", path=folder)
    return uids


def _description(path: str) -> str:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesDescription"])
    except (InvalidDicomError, OSError, ValueError):  # GDCM read it: only the description is lost
        return ""
    return str(ds.get("SeriesDescription", "") or "").strip()


def _series(folder: Path, uid: str) -> DicomSeries:
    # Each call scans the folder again: one per series, none repeated.
    files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    return DicomSeries(uid, _description(files[0]) if files else "", files)


def list_series(folder: str | Path) -> list[DicomSeries]:
    """Every image series of a DICOM folder, by description then UID; none is an error."""
    folder = Path(folder)
    return sorted((_series(folder, uid) for uid in _uids(folder)),
                  key=lambda series: (series.description, series.uid))


def find_series(folder: str | Path, uid: str | None = None) -> DicomSeries:
    """The series `uid` of the folder, or with no uid the folder's only image series."""
    folder = Path(folder)
    uids = _uids(folder)
    if uid in uids or (uid is None and len(uids) == 1):
        return _series(folder, uid or uids[0])
    reason = (f"{len(uids)} DICOM image series in the folder" if uid is None
              else f"series {uid} is not in the folder")
    raise SeriesChoiceError(reason, list_series(folder), folder)


def _pattern(rule: str) -> re.Pattern:
    try:
        return re.compile(rule, re.IGNORECASE)
    except re.error as exc:
        raise SarcogradeError(f"SeriesDescription rule {rule!r} is not a regular expression "
                              f"({exc})") from None


def select_series(folder: str | Path, rules: list[str],
                  override_uid: str | None = None) -> DicomSeries:
    """A sequence's series in an exam folder: the series `override_uid` where given, else the one
    image series whose SeriesDescription matches any of `rules` (regular expressions searched
    anywhere in it, case-insensitive). No match, or several, is a `SeriesChoiceError`: no match
    lists every series of the folder, several list those that match."""
    folder = Path(folder)
    if override_uid is not None:
        return find_series(folder, override_uid)
    patterns = [_pattern(rule) for rule in rules]
    candidates = list_series(folder)
    matches = [s for s in candidates if any(p.search(s.description) for p in patterns)]
    shown = ", ".join(repr(rule) for rule in rules) or "(none)"
    if not matches:
        raise SeriesChoiceError(f"no image series has a SeriesDescription matching the rules "
                                f"{shown}", candidates, folder)
    if len(matches) > 1:
        raise SeriesChoiceError(f"{len(matches)} image series have a SeriesDescription matching "
                                f"the rules {shown}", matches, folder)
    return matches[0]
