"""`sarcograde grade --exam`: a real DICOM exam (TCIA STS_002's T1 series and a copy of it, as
PACS exports a whole exam, with its RTSTRUCT) graded with a package whose SeriesDescription rules
match both series: refused with both listed and nothing graded, then graded once `--series`
names one, the contour found as the RTSTRUCT that references it.

The package is a tiny T1 run (2 folds, 1 epoch, 32 px, no N4) trained on a synthetic cache."""

from __future__ import annotations

import shutil

import pytest
import yaml

from sarcograde.cli import main
from sarcograde.formats.cache import write_cache_config
from sarcograde.formats.grade import grade_path, read_grade
from sarcograde.preprocess.pipeline import Params
from fakes import graded_cache
from test_grade import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("exam-package")
    cache = graded_cache(root / "cache", {f"P{i}": g for i, g in enumerate([1, 2, 3, 1, 3, 2])},
                         size=32)
    # the settings a real `preprocess --no-n4 --size 32` records
    write_cache_config(cache, {"sequence": "T1", **Params(size=32, n4=False).as_dict()})
    settings = root / "tiny.yaml"
    settings.write_text(yaml.safe_dump({"model": TINY, "train": {"folds": 2, "max_epochs": 1,
                                                                 "batch_size": 8}}))
    assert main(["train", str(cache), "--out", str(root / "run"), "--preset", "quick",
                 "--config", str(settings), "--device", "cpu", "--seed", "2"]) == 0
    assert main(["export", "--run", f"T1={root / 'run'}", "--series-rule", "T1=t1",
                 "--out", str(root / "pkg")]) == 0
    return root / "pkg"


def test_an_exam_with_two_matching_series_is_refused_then_graded_once_one_is_named(
        package, tcia_root, tcia_two_series, tmp_path, capsys):
    folder, original, copy = tcia_two_series
    shutil.copy(tcia_root / "dicom" / "STS_002" / "MR_T1" / "mask" / "RS.dcm", folder / "RS.dcm")
    out = tmp_path / "graded"
    argv = ["grade", "--model", str(package), "--exam", str(folder), "--out", str(out),
            "--id", "case-7", "--device", "cpu"]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert original in err and copy in err and "--series T1=" in err
    assert not (out / "case-7").exists()

    assert main([*argv, "--series", f"T1={original}"]) == 0
    result = read_grade(grade_path(out, "case-7"))
    assert 0 <= result["p_high"] <= 1 and result["sequences"]["T1"]["n_slices"] > 0
    assert [f["code"] for f in result["qa_flags"]
            if f["code"] not in ("borderline", "attention_off_tumour")] == []
    page = (out / "case-7" / "case-report.html").read_text()
    assert "STS_002" not in page and "STS_002" not in grade_path(out, "case-7").read_text()


def test_export_refuses_a_series_rule_that_is_no_pattern(package, tmp_path, capsys):
    run = package.parent / "run"
    assert main(["export", "--run", f"T1={run}", "--series-rule", "T1=t1(", "--out",
                 str(tmp_path / "pkg")]) == 1
    assert "not a regular expression" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not installed (Debian package dicom3tools; .ci/run installs "
                           "it)")
def test_dicom_out_of_a_real_exam_has_only_the_errors_it_inherits(package, tcia_root,
                                                                  tcia_two_series, tmp_path):
    """The real exam's own dciodvfy errors (its Study ID is longer than DICOM allows) come back
    in the objects written from it, through the copied study attributes, and nothing else."""
    import subprocess

    from sarcograde.formats.dicom_out import dicom_folder

    folder, original, _ = tcia_two_series
    shutil.copy(tcia_root / "dicom" / "STS_002" / "MR_T1" / "mask" / "RS.dcm", folder / "RS.dcm")
    out = tmp_path / "graded"
    assert main(["grade", "--model", str(package), "--exam", str(folder), "--out", str(out),
                 "--id", "case-7", "--device", "cpu", "--series", f"T1={original}",
                 "--dicom-out"]) == 0
    paths = sorted(dicom_folder(out, "case-7").iterdir())
    assert len(paths) == 4  # SR, SEG, attention map, montage
    for path in paths:
        report = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True)
        errors = [line for line in (report.stdout + report.stderr).splitlines()
                  if line.startswith("Error")]
        assert errors and all("StudyID" in line or "invalid data values" in line
                              for line in errors), (path.name, errors)
