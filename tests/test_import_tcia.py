"""`sarcograde import tcia-sts`: the shared TCIA subset and its clinical spreadsheet, as published."""

from __future__ import annotations

import os
import re
from collections import Counter

import openpyxl
import pandas as pd
import pytest

from sarcograde.cli import main
from sarcograde.cohort import load_manifest
from sarcograde.errors import SarcogradeError
from sarcograde.importers.tcia_sts import import_tcia_sts, read_clinical

pytestmark = pytest.mark.realdata

SUBSET = ["STS_002", "STS_003", "STS_004", "STS_008", "STS_012", "STS_015", "STS_024",
          "STS_025", "STS_032", "STS_035", "STS_042", "STS_047"]


@pytest.fixture(scope="module")
def clinical(tcia_root):
    return tcia_root / "INFOclinical_STS.xlsx"


@pytest.fixture(scope="module")
def imported(tcia_root, clinical, tmp_path_factory):
    out = tmp_path_factory.mktemp("import") / "manifest.csv"
    return out, import_tcia_sts(tcia_root, clinical, out)


def test_grades_match_the_spreadsheet(imported, clinical):
    out, report = imported
    assert report.manifest["patient_id"].tolist() == SUBSET
    assert report.layouts == {"nifti": 12, "dicom": 0}
    # The spreadsheet read independently with openpyxl, and the counts in the data README.
    sheet = openpyxl.load_workbook(clinical, read_only=True)["Clinical Information"]
    grades = {row[0]: row[6] for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert Counter(grades[pid] for pid in SUBSET) == {"Low": 2, "Intermediate": 4, "High": 5,
                                                       "N/A": 1}
    words = {"Low": 1, "Intermediate": 2, "High": 3, "N/A": ""}
    assert report.manifest["grade"].tolist() == [words[grades[pid]] for pid in SUBSET]
    cohort = load_manifest(out, strict=True)
    assert Counter(p.grade for p in cohort) == {1: 2, 2: 4, 3: 5, None: 1}
    assert cohort.sequences == ["T1"] and cohort.by_id()["STS_047"].grade is None  # N/A
    assert {p.site for p in cohort} == {"TCIA-STS"}


def test_overall_survival_by_hand(imported):
    out, _ = imported
    patients = load_manifest(out, strict=True).by_id()
    month = 365.25 / 12  # = 30.4375 days
    # STS_002: Status NED, 501 days from diagnosis to last follow-up -> censored.
    assert patients["STS_002"].clinical["os_months"] == pytest.approx(501 / month, abs=5e-4)
    assert patients["STS_002"].clinical["os_event"] == 0
    # STS_032: Status D, 262 days -> death at 262 / 30.4375 = 8.608 months.
    assert patients["STS_032"].clinical["os_months"] == pytest.approx(262 / month, abs=5e-4)
    assert patients["STS_032"].clinical["os_event"] == 1
    # STS_004: 22-year-old woman, right thigh, malignant fibrous histiocytoma.
    assert patients["STS_004"].clinical["age"] == 22 and patients["STS_004"].clinical["sex"] == "F"
    row = imported[1].manifest.set_index("patient_id").loc["STS_004"]
    assert (row["primary_site"], row["histology"]) == ("right thigh", "malignant fibrous histiocytoma")


def test_lung_metastasis_from_the_outcome_vector_sheet(imported, clinical):
    out, _ = imported
    # The "Outcome vector" sheet read independently with pandas.
    sheet = pd.read_excel(clinical, sheet_name="Outcome vector", engine="openpyxl")
    truth = dict(zip(sheet["Patient ID"], sheet["LungMets"]))
    assert len(truth) == 51 and sum(truth.values()) == 19   # the collection: 19 events among 51
    manifest = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("patient_id")
    assert manifest["lung_metastasis"].tolist() == [str(truth[pid]) for pid in SUBSET]
    events = sum(truth[pid] for pid in SUBSET)
    # Only STS_032 of the 12 shared patients had lung metastases.
    assert events == manifest["lung_metastasis"].astype(int).sum() == 1
    assert manifest.loc["STS_032", "lung_metastasis"] == "1"


def test_lung_metastasis_sheet_absent_or_bad(clinical, tmp_path):
    book = openpyxl.load_workbook(clinical)
    del book["Outcome vector"]
    book.save(tmp_path / "no_outcome.xlsx")
    table, _ = read_clinical(tmp_path / "no_outcome.xlsx")
    assert table["lung_metastasis"].isna().all() and len(table) == 51
    book = openpyxl.load_workbook(clinical)
    book["Outcome vector"]["B3"] = "yes"   # STS_002
    book.save(tmp_path / "bad.xlsx")
    with pytest.raises(SarcogradeError, match=r"STS_002.*LungMets 'yes' is not 0 or 1"):
        read_clinical(tmp_path / "bad.xlsx")


def test_notes_rows_are_skipped(clinical):
    table, skipped = read_clinical(clinical)
    assert len(table) == 51 and table.index[-1] == "STS_051"
    assert skipped == 8  # "NOTES", six column explanations and "N/A: Not Available"
    assert pd.isna(table.loc["STS_040", "grade"])  # Grade "N/A"
    assert table.loc["STS_001", "grade"] == 3


@pytest.fixture(scope="module")
def small_root(tcia_root, tmp_path_factory):
    """Both layouts of STS_002 and STS_008 (links), an STS_999 not in the clinical table and an
    empty STS_998 folder."""
    root = tmp_path_factory.mktemp("collection")
    for layout in ("nifti", "dicom"):
        (root / layout).mkdir()
        for pid in ("STS_002", "STS_008"):
            os.symlink(tcia_root / layout / pid, root / layout / pid)
    os.symlink(tcia_root / "nifti" / "STS_002", root / "nifti" / "STS_999")
    (root / "nifti" / "STS_998").mkdir()
    return root


def test_unknown_patients_reported_and_paths_relative(small_root, clinical, capsys):
    out = small_root / "manifest.csv"
    assert main(["import", "tcia-sts", str(small_root), "--clinical", str(clinical),
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "STS_999: images but no row in the clinical table" in err
    assert "49 patients of the clinical table have no images" in err
    assert "STS_998: patient folder without an MR T1 image and mask" in err
    cohort = load_manifest(out, strict=True)
    assert [p.patient_id for p in cohort] == ["STS_002", "STS_008", "STS_999"]
    assert cohort.by_id()["STS_999"].grade is None
    assert "nifti/STS_002/MR_T1_image.nii.gz" in out.read_text(encoding="utf-8")  # relative to the manifest
    assert cohort.by_id()["STS_002"].images["T1"].is_file()


def test_dicom_layout_and_check_accepts_both_variants(small_root, clinical, tmp_path):
    variants = {}
    for prefer in ("nifti", "dicom"):
        out = tmp_path / prefer / "manifest.csv"
        report = import_tcia_sts(small_root / "dicom" if prefer == "dicom" else small_root,
                                 clinical, out, prefer=prefer)
        variants[prefer] = out
        assert report.layouts == ({"nifti": 3, "dicom": 0} if prefer == "nifti"
                                  else {"nifti": 0, "dicom": 2})
    dicom = load_manifest(variants["dicom"], strict=True).by_id()
    assert dicom["STS_002"].masks["T1"].name == "RS.dcm"
    assert dicom["STS_002"].rois["T1"] == "GTV_Mass_MR_T1"
    assert dicom["STS_002"].images["T1"].is_dir()
    for prefer, manifest in variants.items():
        assert main(["check", str(manifest), "--out", str(tmp_path / f"qa-{prefer}")]) == 0, prefer


def test_root_may_be_the_folder_of_patient_folders(tcia_root, tmp_path):
    out = tmp_path / "manifest.csv"
    # No --clinical: INFOclinical_STS.xlsx is found one folder up.
    assert main(["import", "tcia-sts", str(tcia_root / "dicom"), "--out", str(out)]) == 0
    cohort = load_manifest(out, strict=True)
    assert [p.patient_id for p in cohort] == ["STS_002", "STS_008"]
    assert [p.grade for p in cohort] == [3, 1]


def test_bad_spreadsheet_is_a_clear_error_and_writes_nothing(tcia_root, clinical, tmp_path, capsys):
    out = tmp_path / "manifest.csv"
    broken = tmp_path / "broken.xlsx"
    broken.write_text("not a spreadsheet")
    renamed = tmp_path / "renamed.xlsx"
    book = openpyxl.Workbook()
    book.active.title = "Sheet1"
    book.save(renamed)
    cases = {tmp_path / "missing.xlsx": "clinical spreadsheet not found",
             broken: "cannot read spreadsheet",
             renamed: "no sheet 'Clinical Information' (sheets: Sheet1)"}
    for path, message in cases.items():
        with pytest.raises(SarcogradeError, match=re.escape(message)):
            read_clinical(path)
        assert main(["import", "tcia-sts", str(tcia_root), "--clinical", str(path),
                     "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"sarcograde import: error: {path}: {message}")
        assert len(err.splitlines()) == 1 and not out.exists()
