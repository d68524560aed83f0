"""`sarcograde radiomics` end to end: extraction with the project's preprocessing, the
per-patient cache (reuse, invalidation), bad input, and fit/predict read by `evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from sklearn.metrics import (accuracy_score, brier_score_loss, f1_score, precision_score,
                             recall_score, roc_auc_score)

from preprocess_phantom import phantom
from sarcograde.cli import main
from sarcograde.formats.radiomics import read_radiomics_models
from sarcograde.formats.run import read_folds, read_run_config
from sarcograde.preprocess import Params, normalise_volume
from sarcograde.radiomics import extract as extract_module

# Small tumours and no N4 keep each patient at about a second.
FAST = "preprocess:\n  n4: false\n"


def write_cohort(folder, patients):
    rows = ["patient_id,grade,image_T2FS,mask_T2FS"]
    for pid, (grade, radius, seed) in patients.items():
        image, mask, _ = phantom(shape_zyx=(10, 32, 32), radius_mm=radius, seed=seed)
        sitk.WriteImage(image, str(folder / f"{pid}_img.nii.gz"))
        sitk.WriteImage(mask, str(folder / f"{pid}_mask.nii.gz"))
        rows.append(f"{pid},{grade},{pid}_img.nii.gz,{pid}_mask.nii.gz")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


@pytest.fixture
def cohort(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "fast.yaml").write_text(FAST)
    return write_cohort(data, {"P1": ("1", 5.0, 0), "P2": ("3", 6.0, 1)})


def extract(manifest, out, config, *flags, sequence="T2FS"):
    return main(["radiomics", "extract", str(manifest), "--sequence", sequence, "--out", str(out),
                 "--config", str(config), *flags])


def run_json(out):
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


def test_features_are_computed_on_the_preprocessed_volume_and_cached(cohort, tmp_path,
                                                                     monkeypatch):
    out, config = tmp_path / "features", tmp_path / "fast.yaml"
    assert extract(cohort, out, config) == 0
    table = pd.read_csv(out / "features.csv", dtype={"patient_id": str})
    assert list(table.patient_id) == ["P1", "P2"]
    assert table.columns[1:].str.match(r"(morph|stat|cm|rlm|szm|ngt|ngl)_").all()
    recorded = run_json(out)
    assert recorded["config"]["settings"]["features"]["bin_width"] == 0.25
    assert recorded["config"]["settings"]["preprocess"]["n4"] is False
    assert recorded["packages"]["mirp"] == "2.5.0"
    # The first-order mean is the mean of the project's preprocessed volume inside its mask.
    image = sitk.ReadImage(str(cohort.parent / "P2_img.nii.gz"))
    mask = sitk.ReadImage(str(cohort.parent / "P2_mask.nii.gz"))
    volume = normalise_volume(image, mask, Params(n4=False))
    assert table.set_index("patient_id").loc["P2", "stat_mean"] == pytest.approx(
        volume.image[volume.mask > 0].mean(), rel=1e-5)
    assert table.set_index("patient_id").loc["P2", "morph_vol_approx"] == volume.mask.sum()

    # A rerun reuses every patient without computing anything.
    def no_compute(*args, **kwargs):
        raise AssertionError("recomputed a cached patient")

    monkeypatch.setattr(extract_module, "compute_features", no_compute)
    assert extract(cohort, out, config) == 0
    assert run_json(out)["patients"] == {"computed": 0, "reused": 2, "failed": 0}
    assert pd.read_csv(out / "features.csv", dtype={"patient_id": str}).equals(table)
    monkeypatch.undo()

    # A changed image recomputes that patient only; a changed setting recomputes all.
    other, _, _ = phantom(shape_zyx=(10, 32, 32), radius_mm=5.0, seed=7)
    sitk.WriteImage(other, str(cohort.parent / "P1_img.nii.gz"))
    assert extract(cohort, out, config) == 0
    assert run_json(out)["patients"] == {"computed": 1, "reused": 1, "failed": 0}
    config.write_text(FAST + "features:\n  bin_width: 0.5\n")
    assert extract(cohort, out, config) == 0
    assert run_json(out)["patients"] == {"computed": 2, "reused": 0, "failed": 0}
    names = pd.read_csv(out / "features.csv", nrows=0).columns
    assert any(n.endswith("_w0.5") for n in names) and not any(n.endswith("_w0.25") for n in names)


def test_bad_input_is_a_one_line_warning_or_error_and_the_rest_goes_on(cohort, tmp_path, capsys):
    data = cohort.parent
    image, mask, _ = phantom(shape_zyx=(10, 32, 32), radius_mm=5.0, seed=3)
    array = sitk.GetArrayFromImage(image)
    around = sitk.GetArrayFromImage(sitk.BinaryDilate(mask, [2, 2, 2]))
    array[around > 0] = 50.0  # constant in and around the tumour, as seen after resampling
    flat = sitk.GetImageFromArray(array)
    flat.CopyInformation(image)
    sitk.WriteImage(flat, str(data / "P3_img.nii.gz"))
    sitk.WriteImage(mask, str(data / "P3_mask.nii.gz"))
    sitk.WriteImage(mask * 0, str(data / "P4_mask.nii.gz"))
    with open(cohort, "a") as fh:
        fh.write("P3,2,P3_img.nii.gz,P3_mask.nii.gz\nP4,2,P3_img.nii.gz,P4_mask.nii.gz\n")
    out = tmp_path / "features"
    assert extract(cohort, out, tmp_path / "fast.yaml") == 1
    err = capsys.readouterr().err
    flagged = [line for line in err.splitlines() if "P3" in line]
    assert len(flagged) == 1 and "empty feature classes glcm, glrlm, glszm, ngtdm, ngldm" in \
        flagged[0] and "constant" in flagged[0]
    failed = [line for line in err.splitlines() if "P4" in line]
    assert len(failed) == 1 and "P4_mask.nii.gz" in failed[0] and "mask is empty" in failed[0]
    table = pd.read_csv(out / "features.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert list(table.index) == ["P1", "P2", "P3"]
    assert table.loc["P3", "stat_mean"] == pytest.approx(table.loc["P3", "stat_min"])
    assert table.loc["P3"].filter(regex="^cm_").isna().all()
    assert run_json(out)["empty_feature_classes"]["P3"]["empty"][0] == "glcm"


def synthetic_features(folder, name, n, seed, shift=2.0):
    """A features.csv and its manifest with a grade signal in two features."""
    rng = np.random.default_rng(seed)
    ids = [f"{name}{i:03d}" for i in range(n)]
    labels = np.tile([0, 1], n // 2)
    x = pd.DataFrame(rng.normal(size=(n, 15)), columns=[f"stat_f{j}" for j in range(15)])
    x["stat_f0"] += shift * labels
    x["cm_f1"] = rng.normal(size=n) - shift * labels
    x.insert(0, "patient_id", ids)
    x.loc[0, "stat_f3"] = np.nan
    x.to_csv(folder / f"{name}_features.csv", index=False)
    grades = np.where(labels == 1, 3, 1)
    manifest = pd.DataFrame({"patient_id": ids, "grade": grades, "image_T2FS": "none.nii.gz",
                             "mask_T2FS": "none.nii.gz"})
    manifest.to_csv(folder / f"{name}_manifest.csv", index=False)
    return folder / f"{name}_features.csv", folder / f"{name}_manifest.csv", labels


def test_fit_predict_and_evaluate_agree_with_scikit_learn(tmp_path):
    train, train_manifest, _ = synthetic_features(tmp_path, "T", 40, seed=0)
    test, test_manifest, test_labels = synthetic_features(tmp_path, "X", 30, seed=1)
    run = tmp_path / "run"
    assert main(["radiomics", "fit", str(train), "--manifest", str(train_manifest), "--out",
                 str(run), "--preset", "quick", "--repeats", "2", "--seed", "3"]) == 0
    folds = json.loads((run / "folds.json").read_text())
    assert folds["repeats"] == 2 and len(folds["splits"]) == 10 and folds["seed"] == 3
    cv = pd.read_csv(run / "cv_predictions.csv")
    assert list(cv.columns) == ["patient_id", "repeat", "fold", "label", "p_high"]
    assert len(cv) == 80
    assert run_json(run)["config"]["settings"]["model"]["max_correlation"] == 0.9

    preds = tmp_path / "predict" / "radiomics-T2FS.csv"
    assert main(["radiomics", "predict", str(run), str(test), "--out", str(preds)]) == 0
    table = pd.read_csv(preds, dtype={"patient_id": str})
    assert list(table.columns[:3]) == ["patient_id", "p_high", "predicted"]
    assert [c for c in table.columns if c.startswith("p_fold_")] == \
        [s["name"].replace("fold", "p_fold") for s in folds["splits"]]
    assert (table.predicted == (table.p_high > 0.5)).all()
    assert (tmp_path / "predict" / "radiomics-T2FS.run.json").is_file()

    out = tmp_path / "eval"
    assert main(["evaluate", str(preds), "--manifest", str(test_manifest), "--out", str(out),
                 "--bootstrap", "50"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    y, p = test_labels, table.p_high.to_numpy()
    yhat = (p > 0.5).astype(int)
    assert roc_auc_score(y, p) > 0.7  # the signal was learnt
    expected = {"auc": roc_auc_score(y, p), "precision": precision_score(y, yhat),
                "sensitivity": recall_score(y, yhat), "specificity": recall_score(1 - y, 1 - yhat),
                "f1": f1_score(y, yhat), "accuracy": accuracy_score(y, yhat),
                "brier": brier_score_loss(y, p)}
    for name, value in expected.items():
        assert metrics[name]["value"] == pytest.approx(value), name


def test_the_fit_run_folder_reads_back_through_the_formats_of_train(tmp_path):
    train, train_manifest, _ = synthetic_features(tmp_path, "T", 20, seed=0)
    run = tmp_path / "run"
    assert main(["radiomics", "fit", str(train), "--manifest", str(train_manifest), "--out",
                 str(run), "--preset", "quick", "--folds", "4", "--seed", "3"]) == 0
    folds = read_folds(run)
    assert folds.names == [s.name for s in read_radiomics_models(run).splits]
    assert (folds.folds, folds.folds_requested, folds.seed, folds.stratify) == (4, 4, 3, "grade")
    config = read_run_config(run)
    assert config["features_hash"] and config["folds"] == 4
    assert config["config_hash"] == read_radiomics_models(run).config_hash
    selected = pd.read_csv(run / "selected_features.csv")
    assert list(selected.columns) == ["model", "feature", "coefficient"]
    assert set(selected["model"]) <= set(folds.names)


def test_predict_names_missing_feature_columns(tmp_path, capsys):
    train, train_manifest, _ = synthetic_features(tmp_path, "T", 40, seed=0)
    run = tmp_path / "run"
    assert main(["radiomics", "fit", str(train), "--manifest", str(train_manifest), "--out",
                 str(run), "--preset", "quick"]) == 0
    other = pd.read_csv(train).drop(columns=["cm_f1"])
    other.to_csv(tmp_path / "other.csv", index=False)
    capsys.readouterr()
    out = tmp_path / "p.csv"
    assert main(["radiomics", "predict", str(run), str(tmp_path / "other.csv"), "--out",
                 str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other.csv" in err and "cm_f1" in err
    assert not out.exists()


@pytest.mark.slow
def test_parallel_extraction_gives_the_serial_numbers(cohort, tmp_path):
    """Two worker processes (each imports MIRP and ITK anew: tens of seconds)."""
    config = tmp_path / "fast.yaml"
    assert extract(cohort, tmp_path / "serial", config, "--jobs", "1") == 0
    assert extract(cohort, tmp_path / "parallel", config, "--jobs", "2") == 0
    serial = pd.read_csv(tmp_path / "serial" / "features.csv", float_precision="round_trip")
    parallel = pd.read_csv(tmp_path / "parallel" / "features.csv", float_precision="round_trip")
    pd.testing.assert_frame_equal(serial, parallel)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_tcia_tumour_volumes(tcia_root, tmp_path):
    """Two real TCIA patients: MIRP's voxel-counted volume on the 1 mm grid matches the volume of
    the mask as drawn (within 3% for resampling), and every feature class has values."""
    from sarcograde.io import tumour_volume_ml

    rows = ["patient_id,image_T1,mask_T1"]
    for pid in ("STS_008", "STS_025"):
        folder = tcia_root / "nifti" / pid
        rows.append(f"{pid},{folder / 'MR_T1_image.nii.gz'},{folder / 'MR_T1_mask.nii.gz'}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    (tmp_path / "fast.yaml").write_text(FAST)
    out = tmp_path / "features"
    assert extract(manifest, out, tmp_path / "fast.yaml", sequence="T1") == 0
    table = pd.read_csv(out / "features.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert table.notna().all().all() and run_json(out)["empty_feature_classes"] == {}
    for pid in table.index:
        mask = sitk.ReadImage(str(tcia_root / "nifti" / pid / "MR_T1_mask.nii.gz"))
        drawn = tumour_volume_ml(mask)
        assert table.loc[pid, "morph_vol_approx"] / 1000 == pytest.approx(drawn, rel=0.03)
