"""The cohort manifest: grades, paths, sequences, clinical units and where each problem is."""

from __future__ import annotations

import pytest

from sarcograde.cli import main
from sarcograde.cohort import PARSERS, ManifestProblem, load_manifest, parse_grade
from sarcograde.errors import SarcogradeError

DAYS_PER_MONTH = 365.25 / 12


def write(folder, text: str, name: str = "manifest.csv"):
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, grade", [
    ("1", 1), ("2", 2), ("3", 3), ("2.0", 2), ("G1", 1), ("g2", 2), ("G 3", 3),
    ("Grade 2", 2), ("grade II", 2), ("GIII", 3), ("FNCLCC 1", 1),
    ("low", 1), ("Low", 1), ("Intermediate", 2), ("HIGH", 3), (" high ", 3),
    ("", None), ("N/A", None), ("unknown", None), ("nan", None),
])
def test_grade_spellings(text, grade):
    assert parse_grade(text) == grade


@pytest.mark.parametrize("text", ["0", "4", "G4", "grade 5", "IV", "moderate", "2-3"])
def test_unparseable_grades(text):
    with pytest.raises(ValueError, match="unparseable grade"):
        parse_grade(text)


@pytest.mark.parametrize("column, text, value", [
    ("os_months", "14", 14.0), ("os_months", "14 mo", 14.0), ("os_months", "7,5", 7.5),
    ("os_months", "365.25 d", 12.0), ("os_months", "730.5 days", 24.0),
    ("os_months", "2 y", 24.0), ("os_months", "1.5 years", 18.0),
    ("os_months", "6 weeks", 42 / DAYS_PER_MONTH),
    ("age", "64", 64.0), ("age", "64 years", 64.0), ("age", "71y", 71.0),
    ("sex", "female", "F"), ("sex", "M", "M"),
    ("t_stage", "T2b", 2), ("t_stage", "1", 1), ("t_stage", "TX", None),
    ("n_stage", "N0", 0), ("m_stage", "M1", 1), ("m_stage", "Mx", None),
    ("os_event", "1", 1), ("os_event", "D", 1), ("os_event", "dead", 1),
    ("os_event", "0", 0), ("os_event", "NED", 0), ("os_event", "AWD", 0),
])
def test_clinical_values_and_units(column, text, value):
    assert PARSERS[column](text) == (pytest.approx(value) if isinstance(value, float) else value)


@pytest.mark.parametrize("column, text", [
    ("os_months", "long"), ("os_months", "12 hours"), ("os_months", "-3"), ("age", "sixty"),
    ("sex", "x"), ("t_stage", "T7"), ("os_event", "maybe"),
])
def test_unparseable_clinical_values(column, text):
    with pytest.raises(ValueError):
        PARSERS[column](text)


def test_paths_sequences_and_clinical(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    manifest = write(tmp_path / "data",
                     "patient_id,grade,image_T1FSGd,mask_T1FSGd,image_T2FS,mask_T2FS,roi_T2FS,"
                     "age,sex,t_stage,n_stage,m_stage,os_months,os_event,site\n"
                     f"A,G2,a/t1.nii.gz,a/t1_mask.nii.gz,{elsewhere}/t2,a/RS.dcm,GTV,"
                     "60 years,F,T2b,N0,M0,365.25 d,D,Valencia\n"
                     "B,low,b/t1.nrrd,b/t1_mask.nrrd,b/t2.mha,b/t2_mask.mha,,45,M,T1,N0,M0,3 y,"
                     "NED,\n")
    monkeypatch.chdir(elsewhere)                           # relative to the manifest, not the cwd
    cohort = load_manifest(manifest, strict=True)
    assert cohort.sequences == ["T1FSGd", "T2FS"]
    a, b = cohort.patients
    assert a.images["T1FSGd"] == tmp_path / "data" / "a" / "t1.nii.gz"
    assert a.images["T2FS"] == elsewhere / "t2"             # absolute paths as they are
    assert a.masks["T2FS"] == tmp_path / "data" / "a" / "RS.dcm"
    assert a.rois == {"T2FS": "GTV"} and b.rois == {}
    assert (a.grade, a.label, b.grade, b.label) == (2, 1, 1, 0)
    assert a.clinical == {"age": 60.0, "sex": "F", "t_stage": 2, "n_stage": 0, "m_stage": 0,
                          "os_months": pytest.approx(12.0), "os_event": 1}
    assert b.clinical["os_months"] == 36.0 and b.clinical["os_event"] == 0
    assert (a.site, b.site) == ("Valencia", None)
    assert cohort.problems == [] and cohort.warnings == []
    assert cohort.require_sequence("T2FS") == "T2FS"
    with pytest.raises(SarcogradeError, match="name one with --sequence"):
        cohort.require_sequence(None)


def test_problems_name_row_patient_and_column(tmp_path):
    manifest = write(tmp_path, "patient_id,grade,image_T1,mask_T1,age,os_months\n"
                               "A,2,a.nii,am.nii,50,12\n"
                               "B,G5,b.nii,,fifty,12\n"
                               "A,1,c.nii,cm.nii,50,12\n"
                               ",1,d.nii,dm.nii,50,12\n"
                               "E,,e.nii,em.nii,,\n")
    cohort = load_manifest(manifest)
    assert [p.patient_id for p in cohort] == ["A", "B", "E"]
    assert [(p.row, p.patient_id, p.column) for p in cohort.problems] == [
        (3, "B", "grade"), (3, "B", "mask_T1"), (3, "B", "age"),
        (4, "A", "patient_id"), (5, "", "patient_id")]
    assert str(cohort.problems[0]).startswith("B: row 3, column grade: unparseable grade 'G5'")
    assert cohort.problems[3].message == "duplicate patient_id (also on row 2)"
    assert cohort.warnings == [ManifestProblem(6, "E", "grade", "grade unknown: predicted, but "
                                                               "left out of training and metrics")]
    e = cohort.by_id()["E"]
    assert e.label is None and e.clinical["age"] is None and e.clinical["os_months"] is None
    with pytest.raises(SarcogradeError) as info:
        load_manifest(manifest, strict=True)
    assert str(info.value) == (f"{manifest}: B: row 3, column grade: unparseable grade 'G5' (use "
                               "1-3, G1-G3, low/intermediate/high, or leave empty for unknown) "
                               "(and 4 more; run `sarcograde check`)")


@pytest.mark.parametrize("text, problem", [
    ("id,image_T1,mask_T1\nA,a,b\n", "manifest has no patient_id column"),
    ("patient_id,grade\nA,1\n", "manifest has no image_<SEQ> column"),
    ("patient_id,image_T1,mask_T2\nA,a,b\n", "image_T1 has no mask_T1 column"),
    ("patient_id,image_T1,mask_T1,series_T2\nA,a,b,1.2\n", "series_T2 has no image_T2 column"),
    ("", "cannot parse manifest CSV"),
])
def test_unusable_manifests(tmp_path, text, problem):
    manifest = write(tmp_path, text)
    with pytest.raises(SarcogradeError) as info:
        load_manifest(manifest)
    assert str(info.value).startswith(f"{manifest}: {problem}")


def test_series_columns_name_a_dicom_series_per_sequence(tmp_path):
    manifest = write(tmp_path, "patient_id,image_T1,mask_T1,series_T1,image_T2,mask_T2\n"
                               "A,a/,am.nii, 1.2.840.113619.2.5 ,b.nii,bm.nii\n"
                               "B,a/,am.nii,,b.nii,bm.nii\n"
                               "C,a/,am.nii,T1 AX FS,b.nii,bm.nii\n"
                               f"D,a/,am.nii,{'1.' * 32}1,b.nii,bm.nii\n")
    cohort = load_manifest(manifest)
    a, b, c, d = cohort.patients
    assert (a.series, b.series, c.series, d.series) == ({"T1": "1.2.840.113619.2.5"}, {}, {}, {})
    assert [(p.patient_id, p.column) for p in cohort.problems] == [("C", "series_T1"),
                                                                   ("D", "series_T1")]
    assert cohort.problems[0].message == ("'T1 AX FS' is not a SeriesInstanceUID (numbers joined "
                                          "by dots, at most 64 characters)")


def test_missing_manifest(tmp_path):
    with pytest.raises(SarcogradeError, match="manifest not found"):
        load_manifest(tmp_path / "nope.csv")


def test_spreadsheet_quirks(tmp_path):
    """Excel's UTF-8 byte-order mark and spaces after commas do not hide columns or values."""
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes("\ufeffpatient_id, grade, image_T1, mask_T1\nA, G3, a.nii, b.nii\n"
                         .encode("utf-8"))
    cohort = load_manifest(manifest, strict=True)
    assert cohort.patients[0].grade == 3
    assert cohort.patients[0].images["T1"] == tmp_path / "a.nii"


def test_blank_trailing_columns_are_not_duplicates(tmp_path):
    manifest = write(tmp_path, "patient_id,image_T1,mask_T1,,\nA,a,b,,\n")
    assert [p.patient_id for p in load_manifest(manifest, strict=True)] == ["A"]


@pytest.mark.parametrize("command", ["check", "preprocess"])
@pytest.mark.parametrize("text, problem", [
    ("patient_id,grade,image_T1,mask_T1,grade\nA,1,a,b,3\n",
     "column grade appears more than once in the header"),
    ("patient_id;grade;image_T1;mask_T1\nA;1;a;b\n",
     "manifest has no patient_id column; the file looks semicolon-separated: save it as "
     "comma-separated CSV"),
    ("patient_id\tgrade\timage_T1\tmask_T1\nA\t1\ta\tb\n",
     "manifest has no patient_id column; the file looks tab-separated: save it as "
     "comma-separated CSV"),
])
def test_misread_manifest_is_one_line_through_the_cli(tmp_path, capsys, command, text, problem):
    manifest = write(tmp_path, text)
    assert main([command, str(manifest), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"sarcograde {command}: error: {manifest}: {problem}\n"
    assert not (tmp_path / "out").exists()
