"""`sarcograde evaluate` end to end on hand-built cohorts: tiny NIfTI masks, manifests,
predictions.csv, RUN/cv_predictions.csv and RUN/folds.json."""

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from sklearn.metrics import roc_auc_score

from sarcograde import baselines as bl
from sarcograde import evaluate
from sarcograde.errors import SarcogradeError
from sarcograde.stats import youden_threshold

PNG = b"\x89PNG\r\n\x1a\n"


def main(argv: list[str]) -> int:
    """The stage as the command line runs it (`sarcograde evaluate ...`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="sarcograde evaluate")
    evaluate.add_arguments(parser)
    return evaluate.run(parser.parse_args(argv))


def _write_mask(path, voxels: int):
    array = np.zeros((4, 8, 8), np.uint8)
    array.flat[:voxels] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 5.0))  # 0.02 ml per voxel
    sitk.WriteImage(image, str(path))


def _manifest(folder, prefix: str, n: int, seed: int, survival=True, grades=None):
    """n patients; high grade ones have larger tumours and shorter survival."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        pid = f"{prefix}{i:02d}"
        grade = int(grades[i]) if grades is not None else int(rng.choice([1, 2, 3],
                                                                          p=[0.35, 0.3, 0.35]))
        _write_mask(folder / f"{pid}.nii.gz", int(rng.integers(20, 80) * (1 + (grade > 1))))
        row = {"patient_id": pid, "grade": grade, "image_T1": f"{pid}.nii.gz",
               "mask_T1": f"{pid}.nii.gz", "age": int(rng.integers(30, 80)),
               "sex": rng.choice(["M", "F"]), "t_stage": int(rng.integers(1, 3)),
               "n_stage": 0, "m_stage": int(rng.random() < 0.15)}
        if survival:
            row["os_months"] = round(float(rng.exponential(30 if grade > 1 else 80)), 1)
            row["os_event"] = int(rng.random() < 0.6)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.loc[1, "age"] = None  # a missing clinical value, imputed
    frame.to_csv(folder / "manifest.csv", index=False)
    return frame


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    train = _manifest(root / "train", "A", 40, 0)
    test = _manifest(root / "test", "B", 30, 1)
    # B29: grade unknown; B28: in the manifest but never predicted; X01: predicted, not in it
    test.loc[29, "grade"] = None
    test.to_csv(root / "test" / "manifest.csv", index=False)
    rng = np.random.default_rng(2)
    labels = (test["grade"] > 1).astype(float).where(test["grade"].notna())
    p = np.clip(0.35 + 0.3 * labels.fillna(0.5) + rng.normal(0, 0.2, len(test)), 0.01, 0.99)
    predictions = pd.DataFrame({"patient_id": test["patient_id"], "p_high": p})
    predictions = predictions[predictions.patient_id != "B28"]
    predictions = pd.concat([predictions, pd.DataFrame({"patient_id": ["X01"], "p_high": [0.7]})])
    predictions = predictions.sample(frac=1, random_state=0)  # row order differs from the manifest
    predictions["predicted"] = (predictions.p_high > 0.5).astype(int)
    predictions.to_csv(root / "predictions.csv", index=False)

    run = root / "run"
    run.mkdir()
    train_ids, train_labels = train["patient_id"].to_numpy(), (train["grade"] > 1).to_numpy(int)
    splits = bl.stratified_splits(train_ids, train_labels, 5, 2, seed=3)
    (run / "folds.json").write_text(json.dumps({
        "folds": 5, "repeats": 2, "seed": 3, "stratify": "grade", "adaptation": None,
        "splits": [{"name": s.name, "repeat": s.repeat, "fold": s.fold, "train": list(s.train),
                    "val": list(s.val)} for s in splits]}))
    label_of = dict(zip(train_ids, train_labels))
    cv = pd.DataFrame([{"patient_id": pid, "repeat": s.repeat, "fold": s.fold,
                        "label": label_of[pid],
                        "p_high": float(np.clip(0.3 + 0.4 * label_of[pid] + rng.normal(0, 0.2),
                                                0.01, 0.99))}
                       for s in splits for pid in s.val])
    cv.to_csv(run / "cv_predictions.csv", index=False)
    return {"root": root, "test": test, "predictions": predictions, "cv": cv}


def _evaluate(study, out, *extra):
    root = study["root"]
    return main([str(root / "predictions.csv"), "--manifest",
                 str(root / "test" / "manifest.csv"), "--out", str(out), "--bootstrap", "200",
                 "--seed", "5", *extra])


def test_full_evaluation(study, tmp_path, monkeypatch):
    root, out = study["root"], tmp_path / "eval"
    assert _evaluate(study, out, "--train-manifest", str(root / "train" / "manifest.csv"),
                     "--run", str(root / "run")) == 0

    flow = json.loads((out / "patient_flow.json").read_text(encoding="utf-8"))
    assert sorted((e["patient_id"], e["reason"]) for e in flow["excluded"]) == [
        ("B28", "not predicted"), ("B29", "grade unknown"), ("X01", "not in manifest")]
    assert flow["n_included"] == 28 and sorted(flow["included"]) == [f"B{i:02d}" for i in range(28)]

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    # matched by patient id, not by row position
    truth = study["test"].set_index("patient_id").loc[flow["included"], "grade"] > 1
    p = study["predictions"].set_index("patient_id").loc[flow["included"], "p_high"]
    assert (metrics["n"], metrics["n_high"]) == (28, int(truth.sum()))
    assert metrics["auc"]["value"] == pytest.approx(roc_auc_score(truth, p))
    for name in ("auc", "precision", "sensitivity", "specificity", "f1", "accuracy", "brier",
                 "calibration_slope", "calibration_intercept"):
        lo, hi = metrics[name]["ci95"]
        assert lo <= metrics[name]["value"] <= hi, name
    assert metrics["threshold"] == 0.5 and metrics["bootstrap"]["resamples"] == 200

    cv = study["cv"].groupby("patient_id").agg(label=("label", "first"), p=("p_high", "mean"))
    youden = metrics["youden"]
    assert youden["threshold"] == pytest.approx(youden_threshold(cv["label"], cv["p"]))
    assert youden["n_training"] == 40
    predicted = p > youden["threshold"]
    assert youden["sensitivity"]["value"] == pytest.approx(predicted[truth].mean())

    baselines = metrics["baselines"]
    assert baselines["cv"]["source"].endswith("the DL run's own splits")
    assert any(note.startswith("age: missing for 1/40 training and 1/28 test")
               for note in baselines["imputation"])
    for key in ("clinical", "volume", "clinical_volume"):
        model = baselines["models"][key]
        assert 0 <= model["auc"]["value"] <= 1
        assert model["delong_vs_dl"]["auc_1"] == pytest.approx(metrics["auc"]["value"])
        assert 0 <= model["delong_vs_dl"]["p"] <= 1
    assert baselines["models"]["volume"]["auc"]["value"] > 0.7  # volumes carry the grade here

    table = pd.read_csv(out / "baselines.csv")
    assert table["model"].tolist() == ["dl", "clinical", "volume", "clinical_volume"]
    confusion = pd.read_csv(out / "confusion.csv")
    assert confusion[["tn", "fp", "fn", "tp"]].sum(axis=1).eq(28).all()
    assert confusion["rule"].tolist()[:2] == ["argmax", "youden"]

    survival = json.loads((out / "survival.json").read_text(encoding="utf-8"))
    assert set(survival["models"]) == {"dl", "clinical", "volume", "clinical_volume", "grade"}
    tested = [m["logrank"] for m in survival["models"].values() if "p" in m["logrank"]]
    for test in tested:
        assert test["p_bonferroni"] == pytest.approx(min(1, test["p"] * len(tested)))
    cohort = pd.read_csv(out / "cohort_table.csv")
    assert {"Age (years)", "Sex", "T stage", "Grade (FNCLCC)", "Tumour volume (ml)",
            "Overall survival"} <= set(cohort["variable"])
    assert "Fisher" in (out / "cohort_table.md").read_text(encoding="utf-8")
    for png in ["roc.png", "calibration.png"] + [m["figure"] for m in survival["models"].values()]:
        assert (out / png).read_bytes()[:8] == PNG, png
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["status"] == "finished"

    # a rerun reuses the cached volumes and gives the same numbers
    def no_reading(*args):
        raise AssertionError("a cached tumour volume was measured again")
    monkeypatch.setattr(bl, "_measure_volume", no_reading)
    again = tmp_path / "again"
    again.mkdir()
    for name in ("tumour_volumes_train.csv", "tumour_volumes_test.csv"):
        (again / name).write_bytes((out / name).read_bytes())
    assert _evaluate(study, again, "--train-manifest", str(root / "train" / "manifest.csv"),
                     "--run", str(root / "run")) == 0
    assert (again / "metrics.json").read_text(encoding="utf-8") == (out / "metrics.json").read_text(encoding="utf-8")


def test_single_cohort_out_of_fold(study, tmp_path, capsys):
    """RUN/cv_predictions.csv as the predictions file: mean over repeats per patient."""
    root = study["root"]
    # A39 has no grade: train leaves such a patient out, so it has no out-of-fold prediction
    manifest = pd.read_csv(root / "train" / "manifest.csv", dtype={"patient_id": str})
    manifest.loc[manifest.patient_id == "A39", "grade"] = None
    manifest.to_csv(root / "train" / "manifest_a39_ungraded.csv", index=False)
    cv = study["cv"][study["cv"].patient_id != "A39"]
    cv.to_csv(tmp_path / "cv_predictions.csv", index=False)
    out = tmp_path / "eval"
    assert main([str(tmp_path / "cv_predictions.csv"), "--manifest",
                 str(root / "train" / "manifest_a39_ungraded.csv"), "--out", str(out),
                 "--bootstrap", "200", "--run", str(root / "run")]) == 0
    console = capsys.readouterr().err
    assert "out-of-fold cross-validation (mean over 2 repeats)" in console

    expected = cv.groupby("patient_id").agg(label=("label", "first"), p=("p_high", "mean"))
    assert (cv.groupby("patient_id").size() == 2).all()  # the average really is over 2 rows
    used = pd.read_csv(out / "baseline_predictions.csv", dtype={"patient_id": str})
    used = used.set_index("patient_id").loc[expected.index]
    np.testing.assert_allclose(used["p_dl"], expected["p"], rtol=1e-12)
    assert (used["label"] == expected["label"]).all()

    flow = json.loads((out / "patient_flow.json").read_text(encoding="utf-8"))
    assert flow["n_predictions"] == 39 and flow["n_included"] == 39
    assert flow["excluded"] == [{"patient_id": "A39", "reason": "grade unknown"}]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["source"] == "out-of-fold cross-validation (mean over 2 repeats)"
    assert (metrics["n"], metrics["n_high"]) == (39, int(expected["label"].sum()))
    assert metrics["auc"]["value"] == pytest.approx(roc_auc_score(expected["label"],
                                                                  expected["p"]))
    assert metrics["confusion"]["tp"] == int(((expected["p"] > 0.5) & (expected["label"] == 1))
                                             .sum())
    # the run's threshold is chosen on these very patients: said, not hidden
    assert metrics["youden"]["caution"].startswith("the threshold was chosen on 39 of the")
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["config"]["source"] == metrics["source"]


def test_out_of_fold_errors_and_unfinished_repeats(study, tmp_path, capsys):
    root, cv = study["root"], study["cv"].copy()
    manifest = str(root / "train" / "manifest.csv")
    flipped = cv.copy()
    flipped.loc[flipped.patient_id == "A05", "label"] = 1 - flipped.loc[
        flipped.patient_id == "A05", "label"]
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    with pytest.raises(SarcogradeError) as error:
        main([str(tmp_path / "flipped.csv"), "--manifest", manifest, "--out",
              str(tmp_path / "e1")])
    message = str(error.value)
    assert message.startswith("A05: ") and "flipped.csv" in message
    assert "differs from the manifest's grade" in message and "\n" not in message
    assert not (tmp_path / "e1").exists()

    partial = cv.drop(cv.index[(cv.patient_id == "A07") & (cv.repeat == 1)])
    partial.to_csv(tmp_path / "partial.csv", index=False)
    out = tmp_path / "e2"
    assert main([str(tmp_path / "partial.csv"), "--manifest", manifest, "--out", str(out),
                 "--bootstrap", "20"]) == 0
    assert "1 patient(s) have fewer than 2 out-of-fold predictions" in capsys.readouterr().err
    used = pd.read_csv(out / "baseline_predictions.csv", dtype={"patient_id": str})
    only = partial.loc[partial.patient_id == "A07", "p_high"]
    assert len(only) == 1
    assert used.set_index("patient_id").loc["A07", "p_dl"] == pytest.approx(only.iloc[0])


def test_one_class_and_no_survival_are_reported_not_raised(tmp_path, capsys):
    folder = tmp_path / "cohort"
    _manifest(folder, "C", 6, 4, survival=False, grades=[2, 3, 2, 3, 3, 2])
    pd.DataFrame({"patient_id": [f"C{i:02d}" for i in range(6)],
                  "p_high": [0.9, 0.8, 0.4, 0.7, 0.6, 0.95]}).to_csv(tmp_path / "p.csv",
                                                                     index=False)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "roc.png").write_bytes(PNG)  # from an earlier run into the same folder: stale now
    (out / "km_dl.png").write_bytes(PNG)
    (out / "survival.json").write_text(json.dumps(  # the earlier run's record of its figures
        {"models": {"dl": {"title": "DL", "figure": "km_dl.png"}}}), encoding="utf-8")
    (out / "km_mine.png").write_bytes(PNG)  # a user's file: sarcograde did not write it
    assert main([str(tmp_path / "p.csv"), "--manifest", str(folder / "manifest.csv"),
                 "--out", str(out), "--bootstrap", "50"]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["auc"]["value"] is None
    assert metrics["auc"]["note"].startswith("not computable: only high-grade patients")
    assert metrics["specificity"]["note"] == "not computable: no low-grade patient"
    assert metrics["calibration_slope"]["value"] is None
    assert metrics["sensitivity"]["value"] == pytest.approx(5 / 6)
    assert metrics["youden"]["note"].startswith("not computed")
    survival = json.loads((out / "survival.json").read_text(encoding="utf-8"))
    assert survival["note"].startswith("not computable: no patient has os_months")
    assert not (out / "roc.png").exists() and not (out / "km_dl.png").exists()
    assert (out / "km_mine.png").read_bytes() == PNG
    assert (out / "calibration.png").read_bytes()[:8] == PNG
    assert "not computable" in capsys.readouterr().err


def test_bad_probability_is_one_line_error_and_writes_nothing(study, tmp_path):
    bad = study["predictions"].copy()
    bad.loc[bad.patient_id == "B03", "p_high"] = 1.7
    bad.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "eval"
    with pytest.raises(SarcogradeError) as error:
        main([str(tmp_path / "bad.csv"), "--manifest",
              str(study["root"] / "test" / "manifest.csv"), "--out", str(out)])
    message = str(error.value)
    assert message.startswith("B03: ") and "bad.csv" in message and "1.7" in message
    assert "\n" not in message and not out.exists()


def test_real_tcia_cohort(tcia_root, tmp_path):
    """The 12 real TCIA patients: real masks, grades (one unknown), age and overall survival."""
    from sarcograde.importers.tcia_sts import import_tcia_sts

    manifest = tmp_path / "manifest.csv"
    import_tcia_sts(tcia_root, tcia_root / "INFOclinical_STS.xlsx", manifest)
    frame = pd.read_csv(manifest, dtype={"patient_id": str})
    volumes = {}
    for row in frame.itertuples():  # the volume counted independently of the stage
        mask = sitk.ReadImage(row.mask_T1)
        volumes[row.patient_id] = (sitk.GetArrayFromImage(mask) > 0).sum() * np.prod(
            mask.GetSpacing()) / 1000
    log_volume = np.log(pd.Series(volumes))
    p = 1 / (1 + np.exp(-(log_volume - log_volume.mean()) / log_volume.std()))
    pd.DataFrame({"patient_id": p.index, "p_high": p.to_numpy()}).to_csv(
        tmp_path / "predictions.csv", index=False)
    out = tmp_path / "eval"
    assert main([str(tmp_path / "predictions.csv"), "--manifest", str(manifest),
                 "--train-manifest", str(manifest), "--out", str(out),
                 "--bootstrap", "100"]) == 0

    graded = frame[frame["grade"].notna()]
    flow = json.loads((out / "patient_flow.json").read_text(encoding="utf-8"))
    assert [e["reason"] for e in flow["excluded"]] == ["grade unknown"]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    truth = graded.set_index("patient_id")["grade"] > 1
    assert (metrics["n"], metrics["n_low"]) == (len(graded), int((~truth).sum()))
    assert metrics["auc"]["value"] == pytest.approx(roc_auc_score(truth, p[truth.index]))
    assert metrics["bootstrap"]["skipped_single_class"] > 0  # few low-grade patients
    cached = pd.read_csv(out / "tumour_volumes_test.csv", dtype={"patient_id": str})
    for row in cached.itertuples():
        assert row.volume_ml == pytest.approx(volumes[row.patient_id], rel=1e-9)
    baselines = metrics["baselines"]
    assert any(d.startswith("t_stage: no value") for d in baselines["dropped_features"])
    assert baselines["models"]["clinical"]["features"] == ["age"]
    survival = json.loads((out / "survival.json").read_text(encoding="utf-8"))
    assert survival["n"] == len(graded) and survival["deaths"] == int(graded["os_event"].sum())
