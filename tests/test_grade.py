"""`sarcograde grade`: a new patient graded from its files with a model package gives the
p_high of `predict` on the same images (1e-6), the fused p_high of `fusion apply`, the
borderline rule at threshold ± 0.02, a batch's grades.csv equal to its grade.json files, a
case report with grade.json's numbers and no identifier unless --identify, and a tampered
package refused in one line.

The package is exported from two tiny quick-preset runs (T1FSGd, T2FS: 2 folds, 1 epoch, 32 px,
no N4) and their fusion, trained on a synthetic cohort of 8; the graded patients are another
synthetic site's."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from sarcograde.cli import main
from sarcograde.formats.grade import (CASE_REPORT, GRADES, grade_path, read_grade,
                                      read_grades)
from sarcograde.formats.package import MODEL_JSON
from sarcograde.formats.predictions import read_predictions
from sarcograde.grade import BORDERLINE, grade_of, is_borderline
from sarcograde.study.runner import command_line
from test_report_browser import assert_renders, browser  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEQUENCES = ("T1FSGd", "T2FS")
TINY = {"architecture": "densenet", "init_features": 8, "growth_rate": 8, "block_config": [2, 2],
        "pretrained": "none"}
SETTINGS = {"preprocess": {"size": 32, "n4": False},
            "model": TINY, "train": {"folds": 2, "max_epochs": 1, "batch_size": 8}}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two sites (train: 8 patients, new: 2), the runs, their fusion and the package."""
    root = tmp_path_factory.mktemp("grade")
    for site, n, seed in (("train", 8, 0), ("new", 2, 5)):
        assert main(["synth", str(root / site), "--patients", str(n), "--site", site,
                     "--seed", str(seed), "--sequences", ",".join(SEQUENCES)]) == 0
    settings = root / "tiny.yaml"
    settings.write_text(yaml.safe_dump(SETTINGS))
    for seq in SEQUENCES:
        cache = root / f"cache-{seq}"
        assert main(["preprocess", str(root / "train" / "manifest.csv"), "--sequence", seq,
                     "--out", str(cache), "--preset", "quick", "--config", str(settings)]) == 0
        assert main(["train", str(cache), "--out", str(root / f"run-{seq}"), "--preset",
                     "quick", "--config", str(settings), "--device", "cpu", "--seed", "1"]) == 0
    runs = [f"{seq}={root / f'run-{seq}'}" for seq in SEQUENCES]
    assert main(["fusion", "fit", *[a for r in runs for a in ("--run", r)],
                 "--out", str(root / "fusion")]) == 0
    assert main(["export", *[a for r in runs for a in ("--run", r)], "--fusion",
                 str(root / "fusion"), "--out", str(root / "pkg")]) == 0
    return root


def new_patient(built) -> pd.Series:
    return pd.read_csv(built / "new" / "manifest.csv", dtype=str).iloc[0]


def grade_one(built, out, *extra) -> dict:
    row = new_patient(built)
    base = built / "new"
    args = ["grade", "--model", str(built / "pkg"), "--out", str(out), "--id", "case-1",
            "--device", "cpu"]
    for seq in SEQUENCES:
        args += ["--image", f"{seq}={base / row[f'image_{seq}']}"]
    args += ["--mask", f"T1FSGd={base / row['mask_T1FSGd']}", *extra]
    with command_line(args):  # sys.argv as typed, which run.json records
        assert main(args) == 0
    return read_grade(grade_path(out, "case-1"))


def test_grade_equals_predict_and_fusion_apply_on_the_same_images(built, tmp_path):
    result = grade_one(built, tmp_path / "graded")
    # predict on a cache made by `preprocess` with the same settings, on the same images with
    # the same contour (drawn on T1FSGd, carried to T2FS)
    row = new_patient(built)
    manifest = tmp_path / "one.csv"
    pd.DataFrame([{"patient_id": "case-1", "grade": "",
                   **{f"image_{s}": str(built / "new" / row[f"image_{s}"]) for s in SEQUENCES},
                   "mask_T1FSGd": str(built / "new" / row["mask_T1FSGd"]),
                   "mask_T2FS": ""}]).to_csv(manifest, index=False)
    settings = built / "tiny.yaml"
    predicted = {}
    for seq in SEQUENCES:
        cache = tmp_path / f"cache-{seq}"
        assert main(["preprocess", str(manifest), "--sequence", seq, "--out", str(cache),
                     "--preset", "quick", "--config", str(settings)]) == 0
        out = tmp_path / f"{seq}.csv"
        assert main(["predict", str(built / f"run-{seq}"), str(cache), "--out", str(out),
                     "--device", "cpu", "--precision", "fp32"]) == 0
        predicted[seq] = out
        p = float(read_predictions(out)["p_high"].iloc[0])
        assert abs(result["sequences"][seq]["p_high"] - p) <= 1e-6
    fused = tmp_path / "fused.csv"
    assert main(["fusion", "apply", str(built / "fusion" / MODEL_JSON),
                 *[a for s in SEQUENCES for a in ("--sequence", f"{s}={predicted[s]}")],
                 "--out", str(fused)]) == 0
    assert abs(result["p_high"] - float(pd.read_csv(fused)["p_high"].iloc[0])) <= 1e-6
    assert result["grade"] == grade_of(result["p_high"], result["threshold"])
    package = json.loads((built / "pkg" / MODEL_JSON).read_text())
    assert result["threshold"] == package["threshold"]["value"]
    assert result["model"]["id"] == package["id"]
    assert result["spread"]["n_models"] == 2
    assert result["spread"]["min"] <= result["spread"]["max"]
    codes = [f["code"] for f in result["qa_flags"]]
    # a patient of another site may fall outside the training range of an acquisition value
    assert [c for c in codes if c not in ("borderline", "attention_off_tumour",
                                          "acquisition_outside_training_range")] == [
        "contour_carried"]
    assert ("borderline" in codes) == result["borderline"]
    assert codes.count("attention_off_tumour") == sum(
        result["attention"][seq]["off_tumour"] for seq in SEQUENCES)
    for seq in SEQUENCES:  # explain's attention, on the montage beside grade.json
        shares = result["attention"][seq]
        assert abs(shares["inside"] + shares["ring"] + shares["elsewhere"] - 1) < 1e-6
        assert (tmp_path / "graded" / "case-1" / shares["montage"]).is_file()


def test_borderline_is_within_0_02_of_the_threshold():
    assert BORDERLINE == 0.02
    assert is_borderline(0.52, 0.5) and is_borderline(0.48, 0.5) and is_borderline(0.5, 0.5)
    assert not is_borderline(0.5201, 0.5) and not is_borderline(0.4799, 0.5)
    assert grade_of(0.5, 0.5) == "low" and grade_of(0.5001, 0.5) == "high"


def test_a_batch_writes_grades_csv_equal_to_each_grade_json(built, tmp_path):
    out = tmp_path / "batch"
    assert main(["grade", "--model", str(built / "pkg"), "--out", str(out), "--manifest",
                 str(built / "new" / "manifest.csv"), "--device", "cpu"]) == 0
    grades = read_grades(out / GRADES)
    ids = pd.read_csv(built / "new" / "manifest.csv", dtype=str)["patient_id"].tolist()
    assert grades["patient_id"].tolist() == ids
    for row in grades.itertuples(index=False):
        result = read_grade(grade_path(out, row.patient_id))
        assert row.p_high == pytest.approx(result["p_high"], abs=1e-12)
        assert row.grade == result["grade"] and bool(row.borderline) == result["borderline"]
        assert row.p_high_sd == pytest.approx(result["spread"]["sd"], abs=1e-12)
        assert (out / row.patient_id / CASE_REPORT).is_file()


def test_the_case_report_holds_grade_json_numbers_and_no_identifier_unless_asked(built,
                                                                                tmp_path):
    row = new_patient(built)
    identifier = row["patient_id"]  # the synthetic files are named after the patient
    assert identifier in row["image_T1FSGd"]
    result = grade_one(built, tmp_path / "anonymous")
    page = (tmp_path / "anonymous" / "case-1" / CASE_REPORT).read_text()
    assert "case-1" in page and identifier not in page and str(built) not in page
    for value in (result["p_high"], result["threshold"], result["spread"]["sd"],
                  *[s["p_high"] for s in result["sequences"].values()]):
        assert f"{value:.3f}" in page
    assert f">{result['grade']}<" in page
    assert "Not for clinical use without local validation" in page
    assert identifier not in (tmp_path / "anonymous" / "case-1" / "grade.json").read_text()
    command = json.loads((tmp_path / "anonymous" / "run.json").read_text())["command"]
    assert identifier not in command and "--image T1FSGd=<PATH>" in command
    grade_one(built, tmp_path / "identified", "--identify")
    assert identifier in (tmp_path / "identified" / "case-1" / CASE_REPORT).read_text()
    assert identifier in json.loads((tmp_path / "identified" / "run.json").read_text())["command"]


def test_a_patient_that_cannot_be_graded_does_not_stop_the_batch(built, tmp_path, capsys):
    manifest = pd.read_csv(built / "new" / "manifest.csv", dtype=str)
    for column in [c for c in manifest.columns if c.startswith(("image_", "mask_"))]:
        manifest[column] = [str(built / "new" / v) if isinstance(v, str) else v
                            for v in manifest[column]]
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    manifest.loc[0, "image_T2FS"] = str(broken)
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "batch"
    bad, good = manifest["patient_id"]
    # an --out that already holds a folder of the failing patient's name, with a user's file
    (out / bad).mkdir(parents=True)
    (out / bad / "notes.txt").write_text("not sarcograde's")
    assert main(["grade", "--model", str(built / "pkg"), "--out", str(out), "--manifest",
                 str(tmp_path / "manifest.csv"), "--device", "cpu"]) == 1
    assert [p.name for p in (out / bad).iterdir()] == ["notes.txt"]  # only the user's file
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sarcograde grade: error: 1 of 2 patient(s) not graded")
    assert any(bad in line and broken.name in line for line in err[:-1])
    grades = read_grades(out / GRADES).set_index("patient_id")
    assert grades.loc[bad, "grade"] == "not graded" and grades.loc[bad, "error"]
    assert pd.isna(grades.loc[bad, "p_high"])
    assert grades.loc[good, "p_high"] == pytest.approx(read_grade(grade_path(out, good))["p_high"])
    # a patient folder grade began is removed whole
    (out / bad / "notes.txt").unlink()
    (out / bad).rmdir()
    assert main(["grade", "--model", str(built / "pkg"), "--out", str(out), "--manifest",
                 str(tmp_path / "manifest.csv"), "--device", "cpu"]) == 1
    assert not (out / bad).exists() and (out / good / "grade.json").is_file()


def test_a_tampered_package_is_refused_in_one_line(built, tmp_path, capsys):
    import shutil

    package = tmp_path / "pkg"
    shutil.copytree(built / "pkg", package)
    weights = next(package.glob("T1FSGd/*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert main(["grade", "--model", str(package), "--out", str(tmp_path / "out"), "--image",
                 "T1FSGd=x.nii.gz", "--mask", "T1FSGd=y.nii.gz"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SHA-256" in err and weights.name in err
    assert not (tmp_path / "out" / "case-1").exists()


@pytest.mark.parametrize("pseudonym", ["../escaped", "a/b", ".hidden"])
def test_an_id_that_is_not_a_file_name_is_refused_before_any_output(built, tmp_path, capsys,
                                                                      pseudonym):
    row, base = new_patient(built), built / "new"
    out = tmp_path / "deep" / "out"
    assert main(["grade", "--model", str(built / "pkg"), "--out", str(out), "--id", pseudonym,
                 "--device", "cpu", "--image", f"T1FSGd={base / row['image_T1FSGd']}",
                 "--mask", f"T1FSGd={base / row['mask_T1FSGd']}"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and pseudonym in err
    assert not (tmp_path / "deep" / "escaped").exists()
    assert not any(p.name.endswith((".json", ".html", ".csv"))
                   for p in (tmp_path / "deep").rglob("*"))


def test_the_case_report_renders_in_chromium(built, tmp_path, browser):
    grade_one(built, tmp_path / "graded")
    page = tmp_path / "graded" / "case-1" / CASE_REPORT
    assert_renders(browser, page, min_images=2, sections=4,
                   shot_name="case_report_screenshot.png")
    assert browser.evaluate("document.getElementById('p-high').textContent") == \
        f"{read_grade(grade_path(tmp_path / 'graded', 'case-1'))['p_high']:.3f}"


# --- the acquisition against the training range ----------------------------------------------

def grade_files(built, out, images: dict, masks: dict, model=None) -> dict:
    args = ["grade", "--model", str(model or built / "pkg"), "--out", str(out), "--id", "case-1",
            "--device", "cpu"]
    args += [a for seq, path in images.items() for a in ("--image", f"{seq}={path}")]
    args += [a for seq, path in masks.items() for a in ("--mask", f"{seq}={path}")]
    assert main(args) == 0
    return read_grade(grade_path(out, "case-1"))


def training_patient(built) -> tuple[dict, dict]:
    row = pd.read_csv(built / "train" / "manifest.csv", dtype=str, keep_default_na=False).iloc[0]
    base = built / "train"
    return ({seq: base / row[f"image_{seq}"] for seq in SEQUENCES},
            {seq: base / row[f"mask_{seq}"] for seq in SEQUENCES if row.get(f"mask_{seq}")})


def test_the_package_holds_the_training_images_spacing_range(built):
    document = json.loads((built / "pkg" / MODEL_JSON).read_text())
    manifest = pd.read_csv(built / "train" / "manifest.csv", dtype=str)
    card = (built / "pkg" / "MODEL_CARD.md").read_text()
    for seq in SEQUENCES:
        spacing = [max(sitk.ReadImage(str(built / "train" / p)).GetSpacing()[:2])
                   for p in manifest[f"image_{seq}"]]
        block = document["models"][seq]["acquisition_range"]
        assert block["known"] and block["n_patients"] == len(manifest)
        pixel = block["values"]["pixel_spacing_mm"]
        assert pixel["min"] == pytest.approx(min(spacing), abs=1e-4)
        assert pixel["max"] == pytest.approx(max(spacing), abs=1e-4)
        assert block["values"]["field_strength_t"] is None  # NIfTI holds none
        assert f"- in-plane pixel spacing: {pixel['min']:.4g}–{pixel['max']:.4g} mm" in card


def test_a_training_patient_is_inside_its_range_and_a_3_mm_one_is_flagged(built, tmp_path):
    images, masks = training_patient(built)
    inside = grade_files(built, tmp_path / "inside", images, masks)
    block = inside["acquisition_range"]
    assert block["checked"] and block["outside"] == []
    assert "acquisition_outside_training_range" not in [f["code"] for f in inside["qa_flags"]]
    assert block["sequences"]["T1FSGd"]["values"]["pixel_spacing_mm"] == pytest.approx(
        max(sitk.ReadImage(str(images["T1FSGd"])).GetSpacing()[:2]), abs=1e-4)

    # the same T1FSGd image and contour resampled to 3 mm pixels, as a coarser scanner gives
    coarse = {}
    for name, path, interpolator in (("image", images["T1FSGd"], sitk.sitkLinear),
                                     ("mask", masks["T1FSGd"], sitk.sitkNearestNeighbor)):
        source = sitk.ReadImage(str(path))
        spacing = (3.0, 3.0, source.GetSpacing()[2])
        size = [max(1, round(n * s / t)) for n, s, t in
                zip(source.GetSize(), source.GetSpacing(), spacing)]
        coarse[name] = tmp_path / f"coarse-{name}.nii.gz"
        sitk.WriteImage(sitk.Resample(source, size, sitk.Transform(), interpolator,
                                      source.GetOrigin(), spacing, source.GetDirection()),
                        str(coarse[name]))
    result = grade_files(built, tmp_path / "coarse", {"T1FSGd": coarse["image"]},
                         {"T1FSGd": coarse["mask"]})
    flagged = [o for o in result["acquisition_range"]["outside"]
               if o["value"] == "pixel_spacing_mm"]
    assert [(o["sequence"], o["patient"]) for o in flagged] == [("T1FSGd", 3.0)]
    span = json.loads((built / "pkg" / MODEL_JSON).read_text())["models"]["T1FSGd"][
        "acquisition_range"]["values"]["pixel_spacing_mm"]
    message = (f"T1FSGd: in-plane pixel spacing 3 mm is outside the training range "
               f"{span['min']:.4g}–{span['max']:.4g} mm ({span['n']} patients)")
    assert {"code": "acquisition_outside_training_range", "sequence": "T1FSGd",
            "message": message} in result["qa_flags"]
    page = (tmp_path / "coarse" / "case-1" / CASE_REPORT).read_text()
    assert message in page and "outside the training range" in page


def test_a_package_without_ranges_grades_without_comparing_and_says_why(built, tmp_path):
    import shutil

    from sarcograde.formats.package import content_checksum

    old = tmp_path / "old-pkg"  # as exported before the acquisition was recorded
    shutil.copytree(built / "pkg", old)
    document = json.loads((old / MODEL_JSON).read_text())
    for block in document["models"].values():
        del block["acquisition_range"]
    document["checksum"] = content_checksum(document)
    (old / MODEL_JSON).write_text(json.dumps(document, indent=2))
    images, masks = training_patient(built)
    result = grade_files(built, tmp_path / "graded", images, masks, model=old)
    block = result["acquisition_range"]
    assert block["checked"] is False and "exported before" in block["reason"]
    assert "acquisition_outside_training_range" not in [f["code"] for f in result["qa_flags"]]
    page = (tmp_path / "graded" / "case-1" / CASE_REPORT).read_text()
    assert "Acquisition not compared with the training cohort" in page
