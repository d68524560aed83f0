"""The coded concepts of sarcograde's DICOM objects. Standard codes (SNOMED CT, DICOM, LOINC, UCUM)
where one exists; the result's own concepts (a model's probability of high grade, its spread, the
attention share, the QA flags) have none, so they are codes of sarcograde's private coding scheme
`99SARCOGRADE` (DICOM reserves designators starting with 99 for such local schemes), which every
object declares in its Coding Scheme Identification Sequence. docs/dicom.md lists them."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes

SCHEME = "99SARCOGRADE"
SCHEME_NAME = "sarcograde result concepts"


def private(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value, SCHEME, meaning)


def ucum(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value, "UCUM", meaning)


def measurement_codes() -> dict:
    """grade.json's numbers by key, as the SR names them."""
    return {
        "p_high": private("P_HIGH", "Probability of high grade (FNCLCC G2/G3)"),
        "threshold": private("THRESHOLD", "Threshold of probability of high grade"),
        "sd": private("P_HIGH_SD", "SD of probability of high grade over models"),
        "min": private("P_HIGH_MIN", "Minimum probability of high grade over models"),
        "max": private("P_HIGH_MAX", "Maximum probability of high grade over models"),
        "inside": private("ATTN_INSIDE", "Share of attention inside the tumour"),
        "on_tumour": private("ATTN_ON_TUMOUR", "Share of attention on tumour and ring"),
    }


def no_units():
    return ucum("1", "no units")


GRADE = ("GRADE", "Sarcoma grade by sarcograde")
GRADES = {"high": ("HIGH", "High grade (FNCLCC G2/G3)"), "low": ("LOW", "Low grade (FNCLCC G1)")}
BORDERLINE = ("BORDERLINE", "Probability within margin of threshold")
OFF_TUMOUR = ("ATTN_OFF_TUMOUR", "Attention mostly off the tumour")
QA_FLAG = ("QA_FLAG", "Quality check flag")
FUSED = "fused"  # the tracking identifier of the measurement group of the whole result


def qa_flag_value(code: str):
    """A QA flag (grade.json's `qa_flags[].code`) as a coded value: the code itself, in words."""
    return private(code.upper(), code.replace("_", " ").capitalize())


def yes_no(value: bool):
    return codes.SCT.Yes if value else codes.SCT.No


def coding_scheme_identification() -> Sequence:
    """The Coding Scheme Identification Sequence item that declares the private scheme."""
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = "sarcograde"
    return Sequence([item])
