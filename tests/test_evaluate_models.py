"""`sarcograde evaluate` with several named models: each model as if evaluated alone, the same
bootstrap patients for all, the DeLong matrix, Kaplan-Meier with Bonferroni, pooled sites and the
baselines written as prediction files."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import CensoredData, logrank, norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (accuracy_score, brier_score_loss, f1_score, precision_score,
                             recall_score, roc_auc_score)

from sarcograde.errors import SarcogradeError
from sarcograde.evaluate import ALL_METRICS

from test_evaluate import PNG, _manifest, main
from test_stats_delong import _brute_force

MODELS = {"DL-T1FSGd": 0.12, "DL-T2FS": 0.06, "DL-fusion": 0.18}  # grade signal of each model
MISSING = "B05"  # left out of DL-T2FS's file


def _predictions(labels: pd.Series, signal: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + signal * (2 * labels - 1) + rng.normal(0, 0.25, len(labels)), 0.01, 0.99)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    test = _manifest(root / "test", "B", 30, 1)
    _manifest(root / "train", "A", 40, 0)
    labels = (test["grade"] > 1).astype(int)
    order = np.random.default_rng(7).permutation(len(test))  # not the manifest's order
    files = {}
    for i, (name, signal) in enumerate(MODELS.items()):
        frame = pd.DataFrame({"patient_id": test["patient_id"],
                              "p_high": _predictions(labels, signal, 10 + i)}).iloc[order]
        frame["predicted"] = (frame["p_high"] > 0.5).astype(int)
        if name == "DL-T2FS":
            frame = frame[frame.patient_id != MISSING]
        files[name] = root / f"{name}.csv"
        frame.to_csv(files[name], index=False)
    return {"root": root, "test": test, "labels": labels.set_axis(test["patient_id"]),
            "files": files}


def _evaluate(cohort, out, *extra):
    args = ["--manifest", str(cohort["root"] / "test" / "manifest.csv"), "--out", str(out),
            "--bootstrap", "200", "--seed", "5", *extra]
    return main(args)


def _model_args(files):
    return [arg for name, path in files.items() for arg in ("--predictions", f"{name}={path}")]


def _read(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compared(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("compared") / "eval"
    assert _evaluate(cohort, out, *_model_args(cohort["files"])) == 0
    return out


def test_each_model_is_its_own_evaluation_and_scikit_learn(cohort, compared, tmp_path):
    metrics = _read(compared / "metrics.json")
    assert list(metrics["models"]) == list(MODELS)
    common = [pid for pid in pd.read_csv(cohort["files"]["DL-T1FSGd"], dtype=str)["patient_id"]
              if pid != MISSING]
    y = cohort["labels"][common].to_numpy()
    for name, path in cohort["files"].items():
        # the same patients, in the same order, evaluated alone: the same numbers and CIs
        frame = pd.read_csv(path, dtype={"patient_id": str}).set_index("patient_id").loc[common]
        frame.reset_index().to_csv(tmp_path / f"{name}.csv", index=False)
        alone = tmp_path / name
        assert _evaluate(cohort, alone, str(tmp_path / f"{name}.csv")) == 0
        single = _read(alone / "metrics.json")
        model = metrics["models"][name]
        for metric in ALL_METRICS:
            assert model[metric]["value"] == pytest.approx(single[metric]["value"], rel=1e-12)
            assert model[metric]["ci95"] == pytest.approx(single[metric]["ci95"], rel=1e-12)
        assert model["confusion"] == single["confusion"] and model["n"] == len(common) == 29

        p = frame["p_high"].to_numpy()
        predicted = (p > 0.5).astype(int)
        logit = np.log(p / (1 - p))[:, None]
        expected = {
            "auc": roc_auc_score(y, p), "precision": precision_score(y, predicted),
            "sensitivity": recall_score(y, predicted),
            "specificity": recall_score(y, predicted, pos_label=0),
            "f1": f1_score(y, predicted), "accuracy": accuracy_score(y, predicted),
            "brier": brier_score_loss(y, p),
            "calibration_slope": LogisticRegression(C=np.inf, tol=1e-10).fit(
                logit, y).coef_[0, 0]}
        for metric, value in expected.items():
            assert model[metric]["value"] == pytest.approx(value, rel=1e-5), (name, metric)

    # the top-level keys still describe the first model, as the single-file form writes them
    assert metrics["model"] == "DL-T1FSGd" and metrics["n"] == 29
    assert metrics["auc"] == metrics["models"]["DL-T1FSGd"]["auc"]
    table = pd.read_csv(compared / "table2.csv")
    assert table["model"].tolist() == list(MODELS)
    assert table.set_index("model").loc["DL-T2FS", "auc_ci_low"] == pytest.approx(
        metrics["models"]["DL-T2FS"]["auc"]["ci95"][0])
    assert "DL-fusion" in (compared / "table2.md").read_text(encoding="utf-8")


def test_a_patient_missing_from_one_model_is_named(cohort, tmp_path, capsys):
    out = tmp_path / "eval"
    assert _evaluate(cohort, out, *_model_args(cohort["files"])) == 0
    err = capsys.readouterr().err
    assert f"{MISSING} left out of the comparison: not predicted by DL-T2FS" in " ".join(
        err.split())
    flow = _read(out / "patient_flow.json")
    assert {"patient_id": MISSING, "reason": "not predicted by every model",
            "missing_from": ["DL-T2FS"]} in flow["excluded"]
    assert MISSING not in flow["included"] and flow["n_included"] == 29
    assert flow["models"]["DL-T2FS"]["n_matched"] == 29
    assert flow["models"]["DL-fusion"]["n_matched"] == 30
    assert flow["comparison"] == "the 29 graded patients predicted by all 3 models"


def test_delong_matrix_and_km_bonferroni(cohort, compared):
    metrics = _read(compared / "metrics.json")
    common = [pid for pid in pd.read_csv(cohort["files"]["DL-T1FSGd"], dtype=str)["patient_id"]
              if pid != MISSING]
    y = cohort["labels"][common].to_numpy()
    scores = [pd.read_csv(path, dtype={"patient_id": str}).set_index("patient_id").loc[
        common, "p_high"].to_numpy() for path in cohort["files"].values()]
    aucs, cov = _brute_force(y, scores)
    names = list(MODELS)
    pairs = {(pair["a"], pair["b"]): pair for pair in metrics["delong"]}
    assert list(pairs) == [(names[0], names[1]), (names[0], names[2]), (names[1], names[2])]
    for (a, b), pair in pairs.items():
        i, j = names.index(a), names.index(b)
        se = np.sqrt(cov[i, i] + cov[j, j] - 2 * cov[i, j])
        p = 2 * norm.sf(abs(aucs[i] - aucs[j]) / se)
        assert pair["p"] == pytest.approx(p, rel=1e-8)
        assert pair["p_adjusted"] == pytest.approx(min(1.0, 3 * p), rel=1e-8)  # Bonferroni
    csv = pd.read_csv(compared / "delong.csv")
    assert csv["p_adjusted"].tolist() == pytest.approx([pairs[k]["p_adjusted"] for k in pairs])

    # log-rank per model and for the true grade (scipy), Bonferroni over the 4 tests
    survival = _read(compared / "survival.json")
    test = cohort["test"].set_index("patient_id").loc[common]
    groups = {name: s > 0.5 for name, s in zip(names, scores)}
    groups["grade"] = y == 1
    assert set(survival["models"]) == set(groups)
    for key, high in groups.items():
        def sample(mask):
            return CensoredData.right_censored(
                test["os_months"].to_numpy()[mask], test["os_event"].to_numpy()[mask] == 0)
        p = logrank(sample(high), sample(~high)).pvalue
        entry = survival["models"][key]["logrank"]
        assert entry["p"] == pytest.approx(p, rel=1e-6), key
        assert entry["p_bonferroni"] == pytest.approx(min(1.0, 4 * p), rel=1e-6), key
    for png in ["roc.png", "calibration.png", "calibration_models.png", "km_panel.png",
                *[m["figure"] for m in survival["models"].values()]]:
        assert (compared / png).read_bytes()[:8] == PNG, png


def test_pooled_sites_counted_per_site(tmp_path):
    """Two sites whose patient ids repeat: pooled by site, counted by hand."""
    grades = {"north": [1, 2, 3, 1, 3], "south": [2, 1, 1, 3, 2, 2]}
    p = {"north": [0.2, 0.7, 0.6, 0.55, 0.9], "south": [0.8, 0.3, 0.45, 0.4, 0.65, 0.7]}
    args = []
    for site, g in grades.items():
        _manifest(tmp_path / site, "S", len(g), 3, grades=g)
        for model, shift in (("DL-T2FS", 0.0), ("clinical", 0.05)):
            folder = tmp_path / "predict" / site
            folder.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"patient_id": [f"S{i:02d}" for i in range(len(g))],
                          "p_high": np.clip(np.array(p[site]) - shift, 0, 1)}).to_csv(
                folder / f"{model}.csv", index=False)
        args += ["--pooled", f"{site}={tmp_path / site / 'manifest.csv'}"]
    out = tmp_path / "eval"
    assert main([*args, "--out", str(out), "--bootstrap", "200",
                 "--predictions", f"DL-T2FS={tmp_path / 'predict' / '{site}' / 'DL-T2FS.csv'}",
                 "--predictions", f"clinical={tmp_path / 'predict' / '{site}' / 'clinical.csv'}"
                 ]) == 0
    metrics = _read(out / "metrics.json")
    assert metrics["pooled"] is True
    assert metrics["sites"] == {"north": {"n": 5, "n_low": 2, "n_high": 3},
                                "south": {"n": 6, "n_low": 2, "n_high": 4}}
    assert (metrics["n"], metrics["n_low"], metrics["n_high"]) == (11, 4, 7)
    y = [int(g > 1) for site in grades for g in grades[site]]
    assert metrics["models"]["DL-T2FS"]["auc"]["value"] == pytest.approx(
        roc_auc_score(y, p["north"] + p["south"]))
    flow = _read(out / "patient_flow.json")
    assert flow["included"][:2] == ["north/S00", "north/S01"] and "south/S00" in flow["included"]


def test_baselines_written_as_prediction_files_and_compared(cohort, tmp_path):
    root = cohort["root"]
    predict = tmp_path / "predict"
    out = tmp_path / "eval"
    assert _evaluate(cohort, out, *_model_args({"DL-fusion": cohort["files"]["DL-fusion"]}),
                     "--train-manifest", str(root / "train" / "manifest.csv"),
                     "--baseline-predictions", str(predict)) == 0
    metrics = _read(out / "metrics.json")
    assert list(metrics["models"]) == ["DL-fusion", "clinical", "volume", "clinical+volume"]
    assert len(metrics["delong"]) == 6  # every pair of the four models
    files = {"DL-fusion": cohort["files"]["DL-fusion"]}
    for name in ("clinical", "volume", "clinical+volume"):
        files[name] = predict / f"{name}.csv"
        written = pd.read_csv(files[name], dtype={"patient_id": str})
        assert list(written.columns) == ["patient_id", "p_high", "predicted"]
        assert sorted(written["patient_id"]) == sorted(cohort["test"]["patient_id"])
    # the files, evaluated as models like any other, give the baselines' numbers
    again = tmp_path / "again"
    assert _evaluate(cohort, again, *_model_args(files)) == 0
    metrics_again = _read(again / "metrics.json")
    for name in files:
        for metric in ALL_METRICS:
            assert metrics_again["models"][name][metric]["value"] == pytest.approx(
                metrics["models"][name][metric]["value"]), (name, metric)
            assert metrics_again["models"][name][metric]["ci95"] == pytest.approx(
                metrics["models"][name][metric]["ci95"]), (name, metric)
    assert [pair["p"] for pair in metrics_again["delong"]] == pytest.approx(
        [pair["p"] for pair in metrics["delong"]])


@pytest.mark.parametrize("extra, message", [
    (["--predictions", "../reader=x.csv"], "model name '../reader' cannot be a file name"),
    (["--predictions", "DL-T2FS=a.csv", "--predictions", "DL-T2FS=b.csv"],
     "model DL-T2FS given twice"),
    (["--predictions", "DL-T2FS"], "is not NAME=PATH"),
    (["--predictions", "DL-T2FS=a.csv", "--pooled", "a=m.csv"], "not both"),
])
def test_bad_model_arguments_are_one_line_errors(cohort, tmp_path, extra, message):
    with pytest.raises(SarcogradeError) as error:
        _evaluate(cohort, tmp_path / "eval", *extra)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "eval").exists()


def _without_images(frame: pd.DataFrame, path) -> str:
    """The manifest of ids, grades and clinical columns only (no image_/mask_ column)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=[c for c in frame if c.startswith(("image_", "mask_"))]).to_csv(
        path, index=False)
    return str(path)


def test_any_named_predictions_on_manifests_without_images(cohort, tmp_path, capsys):
    root = cohort["root"]
    train = pd.read_csv(root / "train" / "manifest.csv", dtype=str)
    test = pd.read_csv(root / "test" / "manifest.csv", dtype=str)
    bare = {"train": _without_images(train, tmp_path / "bare" / "train.csv"),
            "test": _without_images(test, tmp_path / "bare" / "test.csv")}
    reader = tmp_path / "r.csv"  # a radiologist's reading: any name that is a file name
    pd.read_csv(cohort["files"]["DL-fusion"]).to_csv(reader, index=False)
    files = {"reader-1": reader, "DL-T1FSGd": cohort["files"]["DL-T1FSGd"]}
    out = tmp_path / "bare_eval"
    assert main(["--manifest", bare["test"], "--train-manifest", bare["train"], *_model_args(files),
                 "--out", str(out), "--bootstrap", "200", "--seed", "5"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    metrics = _read(out / "metrics.json")
    assert list(metrics["models"]) == ["reader-1", "DL-T1FSGd", "clinical"]
    frame = pd.read_csv(reader, dtype={"patient_id": str}).set_index("patient_id")
    y = cohort["labels"][frame.index]
    assert metrics["models"]["reader-1"]["auc"]["value"] == pytest.approx(
        roc_auc_score(y, frame["p_high"]))
    for name in ("volume", "clinical_volume"):  # they need masks, and say so in one line
        note = metrics["baselines"]["models"][name]["note"]
        assert "needs the masks" in note and f"baseline {name}: {note}" in err
    table = pd.read_csv(out / "cohort_table.csv")
    assert "Tumour volume (ml)" not in set(table["variable"]) and "Age (years)" in set(
        table["variable"])
    # the clinical baseline does not depend on whether the manifests name images
    full = tmp_path / "full_eval"
    assert _evaluate(cohort, full, *_model_args(files),
                     "--train-manifest", str(root / "train" / "manifest.csv")) == 0
    full_metrics = _read(full / "metrics.json")["models"]["clinical"]
    for metric in ALL_METRICS:
        assert metrics["models"]["clinical"][metric]["value"] == pytest.approx(
            full_metrics[metric]["value"]), metric


def test_another_target_is_the_label_and_the_real_grade_stays(cohort, tmp_path):
    root = cohort["root"]
    manifests = {}
    rng = np.random.default_rng(3)
    for name in ("train", "test"):
        frame = pd.read_csv(root / name / "manifest.csv", dtype=str)
        frame["lung_metastasis"] = rng.integers(0, 2, len(frame))
        frame.loc[2, "lung_metastasis"] = None  # unknown: left out like an unknown grade
        manifests[name] = root / name / "manifest_lung.csv"
        frame.to_csv(manifests[name], index=False)
    out = tmp_path / "eval"
    assert main(["--manifest", str(manifests["test"]), "--train-manifest",
                 str(manifests["train"]), *_model_args({"DL-fusion": cohort["files"]["DL-fusion"]}),
                 "--target", "lung_metastasis", "--out", str(out), "--bootstrap", "50"]) == 0
    metrics = _read(out / "metrics.json")
    assert metrics["target"] == "lung_metastasis"
    assert metrics["classes"] == ["lung metastasis: no", "lung metastasis: yes"]
    test = pd.read_csv(manifests["test"], dtype={"patient_id": str}).set_index("patient_id")
    predictions = pd.read_csv(cohort["files"]["DL-fusion"], dtype={"patient_id": str})
    known = predictions[predictions["patient_id"].map(test["lung_metastasis"]).notna()]
    y = known["patient_id"].map(test["lung_metastasis"]).astype(int)
    assert metrics["n"] == len(known) and metrics["n_high"] == int(y.sum())
    assert metrics["auc"]["value"] == pytest.approx(roc_auc_score(y, known["p_high"]))
    table = pd.read_csv(out / "cohort_table.csv", dtype=str, keep_default_na=False)
    grades = table[table["variable"] == "Grade (FNCLCC)"].set_index("level")["test"]
    # the real grades of the included patients, not the target written as G1/G3
    real = test.loc[known["patient_id"], "grade"].astype(int)
    for grade in (1, 2, 3):
        assert grades[f"G{grade}"].startswith(f"{int((real == grade).sum())}/{len(real)} ")
    target = table[table["variable"] == "Lung metastasis"].set_index("level")["test"]
    assert target["yes"].startswith(f"{int(y.sum())}/{len(y)} ")
    survival = _read(out / "survival.json")
    assert survival["models"]["grade"]["title"] == "True lung metastasis"
def test_decision_curve_of_every_model_on_the_shared_resamples(cohort, compared):
    curves = pd.read_csv(compared / "decision_curve.csv")
    metrics = _read(compared / "metrics.json")
    assert list(curves["model"].unique()) == list(MODELS)
    assert (curves.groupby("model").size() == 91).all()
    assert (compared / "decision_curve.png").read_bytes().startswith(PNG)
    common = [pid for pid in pd.read_csv(cohort["files"]["DL-T1FSGd"], dtype=str)["patient_id"]
              if pid != MISSING]
    y = cohort["labels"][common].to_numpy()
    prevalence = y.mean()
    for name, path in cohort["files"].items():
        p = pd.read_csv(path, dtype={"patient_id": str}).set_index("patient_id").loc[
            common, "p_high"].to_numpy()
        curve = curves[curves["model"] == name].set_index("threshold")
        for t in (0.1, 0.25, 0.5, 0.73):
            row = curve.loc[curve.index[np.isclose(curve.index, t)][0]]
            tp, fp = int(((p > t) & (y == 1)).sum()), int(((p > t) & (y == 0)).sum())
            assert row["net_benefit"] == pytest.approx(tp / len(y) - fp / len(y) * t / (1 - t))
            assert row["treat_all"] == pytest.approx(prevalence - (1 - prevalence) * t / (1 - t))
            assert row["treat_none"] == 0
            assert row["net_benefit_ci_low"] <= row["net_benefit"] <= row["net_benefit_ci_high"]
        # Table 2's net benefit is the curve's at the operating threshold (argmax, 0.5)
        block = metrics["models"][name]["net_benefit"]
        assert block["value"] == pytest.approx(curve.loc[0.5, "net_benefit"])
        low, high = block["ci95"]
        assert low == pytest.approx(curve.loc[0.5, "net_benefit_ci_low"])
        assert high == pytest.approx(curve.loc[0.5, "net_benefit_ci_high"])
    table = pd.read_csv(compared / "table2.csv")
    assert "net_benefit_ci_low" in table.columns


def test_abstention_by_ensemble_spread_equals_scikit_learn_on_the_kept(cohort, tmp_path):
    rng = np.random.default_rng(3)
    files = dict(cohort["files"])
    for name in ("DL-T1FSGd", "DL-T2FS"):  # predict's files carry the spread; the fusion not
        frame = pd.read_csv(files[name], dtype={"patient_id": str})
        frame["p_high_sd"] = np.round(rng.uniform(0.01, 0.2, len(frame)), 3)
        files[name] = tmp_path / f"{name}.csv"
        frame.to_csv(files[name], index=False)
    out = tmp_path / "eval"
    assert _evaluate(cohort, out, *_model_args(files), "--coverage", "0.8") == 0
    block = _read(out / "metrics.json")["abstention"]
    assert block["coverage"] == 0.8
    assert "no p_high_sd column" in block["models"]["DL-fusion"]["note"]
    curves = pd.read_csv(out / "selective_prediction.csv")
    assert list(curves["model"].unique()) == ["DL-T1FSGd", "DL-T2FS"]
    assert (out / "selective_prediction.png").read_bytes().startswith(PNG)
    common = [pid for pid in pd.read_csv(cohort["files"]["DL-T1FSGd"], dtype=str)["patient_id"]
              if pid != MISSING]
    for name in ("DL-T1FSGd", "DL-T2FS"):
        frame = pd.read_csv(files[name], dtype={"patient_id": str}).set_index("patient_id")
        frame = frame.loc[common].assign(label=cohort["labels"][common].to_numpy())
        kept = frame.sort_values("p_high_sd", kind="stable").head(int(np.ceil(0.8 * 29)))
        y, p = kept["label"].to_numpy(), kept["p_high"].to_numpy()
        model = block["models"][name]
        assert model["n_kept"] == len(kept) == 24 and model["n"] == 29
        assert model["max_spread"] == pytest.approx(kept["p_high_sd"].max())
        assert model["auc"]["value"] == pytest.approx(roc_auc_score(y, p))
        assert model["accuracy"]["value"] == pytest.approx(accuracy_score(y, p > 0.5))
        assert model["sensitivity"]["value"] == pytest.approx(recall_score(y, p > 0.5))
        low, high = model["auc"]["ci95"]
        assert low <= model["auc"]["value"] <= high
        row = curves[(curves["model"] == name) & (curves["n_kept"] == 24)].iloc[0]
        assert row["auc"] == pytest.approx(roc_auc_score(y, p))
        assert row["coverage"] == pytest.approx(24 / 29)


def test_coverage_outside_zero_one_is_a_one_line_error(cohort, tmp_path):
    with pytest.raises(SarcogradeError, match="--coverage must be a share"):
        _evaluate(cohort, tmp_path / "eval", *_model_args(cohort["files"]), "--coverage", "1.5")
    assert not (tmp_path / "eval").exists()


def test_subgroup_metrics_equal_scikit_learn_on_the_subgroup(cohort, tmp_path):
    test = cohort["test"].copy()
    # two histologies of 15 and 12 patients and a rare one of 3 (too small to score)
    test["histology"] = ["leiomyosarcoma"] * 15 + ["liposarcoma"] * 12 + ["synovial"] * 3
    test.to_csv(cohort["root"] / "test" / "manifest_histology.csv", index=False)
    out = tmp_path / "eval"
    args = ["--manifest", str(cohort["root"] / "test" / "manifest_histology.csv"),
            "--out", str(out), "--bootstrap", "200", "--seed", "5", *_model_args(cohort["files"])]
    assert main(args) == 0
    block = _read(out / "metrics.json")["subgroups"]
    assert (out / "subgroups.png").read_bytes().startswith(PNG)
    rows = pd.read_csv(out / "subgroups.csv")
    common = [pid for pid in pd.read_csv(cohort["files"]["DL-T1FSGd"], dtype=str)["patient_id"]
              if pid != MISSING]
    manifest = test.set_index("patient_id").loc[common]
    y_all = cohort["labels"][common].to_numpy()
    levels = {"histology": manifest["histology"].to_numpy(), "sex": manifest["sex"].to_numpy(),
              "age": np.where(manifest["age"].isna(), "unknown", np.where(
                  manifest["age"] < 50, "<50", np.where(manifest["age"] < 65, "50-64", ">=65")))}
    scored = {(g["variable"], g["level"]) for g in block["groups"]}
    small = {(g["variable"], g["level"]) for g in block["too_small"]}
    assert ("histology", "synovial") in small and ("histology", "liposarcoma") in scored
    assert {("sex", "M"), ("sex", "F")} <= scored
    n_checked = 0
    for group in block["groups"]:
        where = levels[group["variable"]] == group["level"]
        y = y_all[where]
        assert group["n"] == where.sum() >= 10 and 0 < y.sum() < len(y)
        for name, path in cohort["files"].items():
            p = pd.read_csv(path, dtype={"patient_id": str}).set_index("patient_id").loc[
                common, "p_high"].to_numpy()[where]
            model = group["models"][name]
            assert model["auc"]["value"] == pytest.approx(roc_auc_score(y, p))
            assert model["sensitivity"]["value"] == pytest.approx(recall_score(y, p > 0.5))
            assert model["specificity"]["value"] == pytest.approx(
                recall_score(y, p > 0.5, pos_label=0))
            assert model["accuracy"]["value"] == pytest.approx(accuracy_score(y, p > 0.5))
            assert model["brier"]["value"] == pytest.approx(brier_score_loss(y, p))
            low, high = model["auc"]["ci95"]
            assert low <= model["auc"]["value"] <= high
            row = rows[(rows["variable"] == group["variable"]) & (rows["level"] == group["level"])
                       & (rows["model"] == name)].iloc[0]
            assert row["auc"] == pytest.approx(model["auc"]["value"])
            n_checked += 1
    assert n_checked >= 4 * len(MODELS)
    for group in block["too_small"]:  # listed, never scored
        where = levels[group["variable"]] == group["level"]
        assert group["n"] == where.sum()
        assert where.sum() < 10 or y_all[where].min() == y_all[where].max()
