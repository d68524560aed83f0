"""`sarcograde export`: a trained run as a model package whose ensemble gives the run's numbers,
no training patient id or build path anywhere in it, the threshold and metrics it carries, a
study's external sites on its card, and what it refuses.

The round trip trains a tiny quick-preset run on a synthetic cache (tests/fakes.py); the study is
a study folder's layout made of fake runs (fakes.write_run), a real `fusion fit` and a real
`evaluate`."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

from sarcograde import __version__
from sarcograde.artifacts import write_json
from sarcograde.cli import main
from sarcograde.data import load_slices
from sarcograde.ensemble import aggregate, load_ensemble, package_ensemble, slice_logits
from sarcograde.formats.evaluation import format_estimate
from sarcograde.formats.package import MODEL_CARD, MODEL_JSON, read_package
from sarcograde.formats.run import CV_PREDICTIONS, write_cv_predictions
from sarcograde.stats import youden_threshold
from fakes import (PREPROCESS, calibrated_model, cohort, graded_cache, synthetic_slices,
                   write_cache, write_run)
from test_evaluate import _manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"architecture": "densenet", "init_features": 8, "growth_rate": 8, "block_config": [2, 2],
        "pretrained": "none"}
# Training patients with ids that no weight byte or number can spell by chance.
GRADES = {f"TRAINPAT{i:03d}": grade for i, grade in enumerate(cohort(4, 4).values())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained by `sarcograde train` (2 folds, 1 epoch), exported as a folder and a zip."""
    root = tmp_path_factory.mktemp("build")
    cache = graded_cache(root / "cache", GRADES)
    user = root / "tiny.yaml"
    user.write_text(yaml.safe_dump({"model": TINY, "train": {"folds": 2, "max_epochs": 1,
                                                             "batch_size": 8}}))
    run = root / "run"
    assert main(["train", str(cache), "--out", str(run), "--preset", "quick", "--config",
                 str(user), "--device", "cpu", "--seed", "3"]) == 0
    for out, extra in ((root / "pkg", []), (root / "pkg.zip", ["--zip"])):
        assert main(["export", "--run", f"T1={run}", "--out", str(out), *extra]) == 0
    return root


def package_files(path) -> dict[str, bytes]:
    """Every file of a package folder, or the zip itself and every entry, by name."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*")
                if p.is_file()}
    with zipfile.ZipFile(path) as archive:
        return {path.name: path.read_bytes(),
                **{info.filename: archive.read(info) for info in archive.infolist()}}


# --- the round trip --------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["pkg", "pkg.zip"])
def test_the_package_gives_the_runs_slice_logits_and_p_high(trained, form, tmp_path):
    slices = load_slices(trained / "cache")
    run = load_ensemble(trained / "run")
    package = read_package(trained / form)
    ensemble = package_ensemble(package, "T1")
    assert ensemble.names == run.names == ["fold_00", "fold_01"]
    assert ensemble.input_meta == run.input_meta
    expected, got = slice_logits(run, slices.images), slice_logits(ensemble, slices.images)
    assert np.abs(got - expected).max() <= 1e-6

    assert main(["predict", str(trained / "run"), str(trained / "cache"),
                 "--out", str(tmp_path / "predictions.csv")]) == 0
    predicted = pd.read_csv(tmp_path / "predictions.csv", dtype={"patient_id": str})
    for row in predicted.itertuples():
        mine = slices.patient_index == slices.patient_ids.index(row.patient_id)
        p_high, _ = aggregate(got[:, mine])
        assert abs(p_high - row.p_high) <= 1e-6, row.patient_id


def test_the_package_holds_no_training_id_and_no_build_path(trained):
    # '"manifest"': the caches' key naming their cohort's file, which must not travel
    forbidden = [*GRADES, str(trained), str(trained.resolve()), '"manifest"']
    for form in ("pkg", "pkg.zip"):
        for name, data in package_files(trained / form).items():
            for text in forbidden:
                assert text.encode() not in data, f"{form}/{name} holds {text!r}"
    document = read_package(trained / "pkg").document
    assert document["models"]["T1"]["preprocess"] == {"sequence": "T1", "spacing_mm": 1.0,
                                                     "size": 32, "margin_mm": 10.0}
    # the record of the export, with its paths, stays beside the package on this machine
    record = json.loads((trained / "pkg.run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished" and record["package"]["sarcograde"] == __version__


def test_threshold_metrics_cohort_and_versions_of_a_run(trained):
    document = read_package(trained / "pkg").document
    cv = pd.read_csv(trained / "run" / CV_PREDICTIONS, dtype={"patient_id": str})
    per_patient = cv.groupby("patient_id").agg(label=("label", "first"), p_high=("p_high", "mean"))
    y, p = per_patient["label"].to_numpy(), per_patient["p_high"].to_numpy()
    threshold = document["threshold"]
    assert threshold["model"] == document["graded_model"] == "PKG-T1"
    assert threshold["rule"] == "youden" and threshold["value"] == youden_threshold(y, p)
    auc = document["cross_validation"]["models"]["PKG-T1"]["auc"]
    assert auc["value"] == pytest.approx(roc_auc_score(y, p))
    assert auc["ci95"][0] <= auc["value"] <= auc["ci95"][1]
    assert document["training_cohort"] == {"n": 8, "n_low": 4, "n_high": 4,
                                           "grades": {"G1": 4, "G2": 2, "G3": 2},
                                           "sites": {"A": 8}}
    block = document["models"]["T1"]
    assert block["train"]["max_epochs"] == 1 and block["seed"] == 3 and block["model"] == TINY
    assert [f["best_epoch"] for f in block["folds"]] == [1, 1]
    assert document["versions"]["exported_with"]["sarcograde"] == __version__ == "0.2.0"
    assert set(document["versions"]["exported_with"]) >= {"torch", "monai", "numpy", "SimpleITK",
                                                          "scikit-learn", "pydicom"}
    assert document["fusion"] is None and document["external_validation"] is None
    card = (trained / "pkg" / MODEL_CARD).read_text(encoding="utf-8")
    assert "Not for clinical use without local validation" in card
    assert f"| PKG-T1 | 8 (4/4) | {format_estimate(auc)} |" in card
    assert f"p_high > {threshold['value']:.3f}" in card
    assert "sarcograde grade --model PKG --image T1=IMAGE --mask T1=MASK" in card


def test_a_given_threshold_and_a_re_export_replace_the_package(trained, tmp_path):
    out = tmp_path / "pkg"
    assert main(["export", "--run", f"T1={trained / 'run'}", "--threshold", "0.3",
                 "--out", str(out)]) == 0
    first = read_package(out)
    assert first.threshold == 0.3 and first.document["threshold"]["rule"] == "given"
    assert main(["export", "--run", f"T1={trained / 'run'}", "--out", str(out)]) == 0
    again = read_package(out)
    assert again.document["threshold"]["rule"] == "youden"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "pkg.run.json"]  # no leftovers


def refusal(capsys, *argv) -> str:
    assert main(["export", *argv]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_what_export_refuses(trained, tmp_path, capsys):
    run = str(trained / "run")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert refusal(capsys, "--run", f"T1={run}", "--out", str(busy)) == (
        f"sarcograde export: error: {busy}: --out is a folder that is not a model package; "
        "choose a new --out (only an earlier package is replaced)")
    assert (busy / "notes.txt").read_text() == "mine"
    assert refusal(capsys, "--run", f"T1={run}", "--zip", "--out", str(trained / "pkg")).endswith(
        "--out is a folder, and the package would be one file (--zip); choose another --out")
    assert refusal(capsys, "--run", f"T2={run}", "--out", str(tmp_path / "p")).endswith(
        "this run was trained on sequence T1; name it T1")
    assert refusal(capsys, "--run", f"T1={run}", "--run", f"T1b={run}", "--out",
                   str(tmp_path / "p")) == (
        "sarcograde export: error: several sequences need their fusion to give one grade: add "
        "--fusion FUSION (`sarcograde fusion fit`) or export one sequence")
    assert refusal(capsys, "--run", f"T1={run}", "--threshold", "1.5", "--out",
                   str(tmp_path / "p")) == (
        "sarcograde export: error: --threshold 1.5 is not between 0 and 1")
    assert not (tmp_path / "p").exists()


# --- from a study ----------------------------------------------------------------------------

TRAIN_IDS = [f"STUDYPAT{i:03d}" for i in range(12)]
TRAIN_GRADES = [1, 2, 3, 1, 2, 3, 1, 3, 2, 1, 3, 2]
SEQUENCES = ("T1", "T2")


def fake_study(root):
    """A study folder as `sarcograde study` leaves it, of fake runs with out-of-fold
    predictions, their training caches, a real fusion and a real evaluation of site B."""
    rng = np.random.default_rng(5)
    labels = np.array([int(g > 1) for g in TRAIN_GRADES])
    for k, seq in enumerate(SEQUENCES):
        preprocess = {**PREPROCESS, "sequence": seq}
        write_cache(root / "preprocess" / "train" / seq, {
            pid: {"image": synthetic_slices(rng, 3)[0], "mask": synthetic_slices(rng, 3)[1],
                  "grade": grade} for pid, grade in zip(TRAIN_IDS, TRAIN_GRADES)},
            preprocess, manifest=str(root / "train.csv"))
        run = write_run(root / "train" / seq, [calibrated_model(10 * k + f) for f in range(2)],
                        preprocess=preprocess)
        write_cv_predictions(run / CV_PREDICTIONS, pd.DataFrame({
            "patient_id": TRAIN_IDS, "repeat": 0, "fold": np.arange(12) % 2, "label": labels,
            "p_high": expit(0.8 * (2 * labels - 1) + rng.normal(0, 1, 12))}))
    assert main(["fusion", "fit", *[a for s in SEQUENCES
                                    for a in ("--run", f"{s}={root / 'train' / s}")],
                 "--out", str(root / "train" / "fusion")]) == 0
    site = _manifest(root / "sites" / "B", "B", 30, 1)
    y = (site["grade"] > 1).to_numpy(int)
    predictions = []
    for k, model in enumerate(("DL-T1", "DL-T2", "DL-fusion")):
        p = np.clip(0.5 + 0.15 * (2 * y - 1) + np.random.default_rng(k).normal(0, 0.2, 30),
                    0.01, 0.99)
        path = root / "predict" / "B" / f"{model}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"patient_id": site["patient_id"], "p_high": p,
                      "predicted": (p > 0.5).astype(int)}).to_csv(path, index=False)
        predictions += ["--predictions", f"{model}={path}"]
    assert main(["evaluate", *predictions, "--manifest", str(root / "sites" / "B" / "manifest.csv"),
                 "--out", str(root / "evaluate" / "B"), "--bootstrap", "200", "--seed", "1"]) == 0
    write_json(root / "study.json", {"config": {
        "sequences": list(SEQUENCES), "test": {"B": str(root / "sites" / "B" / "manifest.csv")},
        "models": ["dl", "fusion"], "target": "grade", "seed": 0}, "steps": {}})
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = fake_study(tmp_path_factory.mktemp("study"))
    assert main(["export", "--study", str(root), "--zip", "--out", str(root / "model.zip")]) == 0
    return root


def test_a_study_package_carries_the_fusion_and_its_youden_threshold(study):
    package = read_package(study / "model.zip")
    document = package.document
    assert package.sequences == list(SEQUENCES)
    fusion = json.loads((study / "train" / "fusion" / "model.json").read_text(encoding="utf-8"))
    assert package.fusion == {"name": "PKG-fusion", "trained_as": "DL-fusion", **fusion}
    # DL-fusion's out-of-fold predictions, computed here from the runs' and the fusion's files
    full = fusion["models"][0]
    margins = {s: logit(pd.read_csv(study / "train" / s / CV_PREDICTIONS)["p_high"].to_numpy())
               for s in SEQUENCES}
    fused = expit(full["intercept"] + sum(full["coefficients"][s] * margins[s]
                                          for s in SEQUENCES))
    y = np.array([int(g > 1) for g in TRAIN_GRADES])
    threshold = document["threshold"]
    assert threshold["model"] == "PKG-fusion" and threshold["rule"] == "youden"
    assert threshold["value"] == pytest.approx(youden_threshold(y, fused), abs=1e-9)
    assert "out-of-fold predictions of DL-fusion" in threshold["description"]
    cv = document["cross_validation"]["models"]
    assert list(cv) == ["PKG-T1", "PKG-T2", "PKG-fusion"]
    assert cv["PKG-fusion"]["auc"]["value"] == pytest.approx(roc_auc_score(y, fused))
    assert "sensitivity" in cv["PKG-fusion"] and "sensitivity" not in cv["PKG-T1"]
    assert document["training_cohort"]["sites"] == {"A": 12}
    assert document["training_cohort"]["grades"] == {"G1": 4, "G2": 4, "G3": 4}


def test_a_study_package_carries_every_external_sites_metrics(study):
    package = read_package(study / "model.zip")
    metrics = json.loads((study / "evaluate" / "B" / "metrics.json").read_text(encoding="utf-8"))
    site = package.document["external_validation"]["sites"]["B"]
    assert (site["n"], site["n_low"], site["n_high"]) == (metrics["n"], metrics["n_low"],
                                                          metrics["n_high"])
    assert list(site["models"]) == ["PKG-T1", "PKG-T2", "PKG-fusion"]
    card = package.card
    for ours, theirs in (("PKG-T1", "DL-T1"), ("PKG-T2", "DL-T2"), ("PKG-fusion", "DL-fusion")):
        auc = metrics["models"][theirs]["auc"]
        assert site["models"][ours]["auc"] == {"value": auc["value"], "ci95": auc["ci95"]}
        row = (f"| B | {metrics['n']} ({metrics['n_low']}/{metrics['n_high']}) | {ours} | "
               f"{format_estimate(auc)} | ")
        assert row in card
    assert "sensitivity and specificity at 0.5" in card


def test_a_study_package_holds_no_id_nor_path_and_rebuilds_each_sequence(study):
    for name, data in package_files(study / "model.zip").items():
        for text in [*TRAIN_IDS, str(study), "/train/manifest.csv"]:
            assert text.encode() not in data, f"{name} holds {text!r}"
    package = read_package(study / "model.zip")
    images = synthetic_slices(np.random.default_rng(0), 6)[0]
    for seq in SEQUENCES:
        run = load_ensemble(study / "train" / seq)
        assert np.abs(slice_logits(package_ensemble(package, seq), images)
                      - slice_logits(run, images)).max() <= 1e-6


def test_a_study_refuses_a_second_fusion_and_a_fusion_of_other_sequences(study, tmp_path,
                                                                         capsys):
    fusion = study / "train" / "fusion"
    assert refusal(capsys, "--study", str(study), "--fusion", str(fusion), "--out",
                   str(tmp_path / "p")).endswith("--fusion goes with --run; a study's fusion is "
                                                 "DIR/train/fusion")
    assert refusal(capsys, "--run", f"T1={study / 'train' / 'T1'}", "--fusion", str(fusion),
                   "--out", str(tmp_path / "p")).endswith(
        "the fusion was fitted on T1, T2, the package has T1; give a run for each of the "
        "fusion's sequences")
    # the same runs given one by one, the fusion as its model.json: no external sites
    assert main(["export", *[a for s in SEQUENCES for a in ("--run", f"{s}={study / 'train' / s}")],
                 "--fusion", str(fusion / MODEL_JSON), "--out", str(tmp_path / "runs")]) == 0
    by_runs = read_package(tmp_path / "runs")
    assert by_runs.document["external_validation"] is None
    assert by_runs.threshold == read_package(study / "model.zip").threshold


def test_a_training_cache_without_acquisition_columns_gives_a_package_without_ranges(trained):
    """The fake cache is written as `preprocess` wrote caches before the acquisition columns:
    the package says the ranges are unknown and why, and its card says so too."""
    document = read_package(trained / "pkg").document
    block = document["models"]["T1"]["acquisition_range"]
    assert block["known"] is False and "did not record the acquisition" in block["reason"]
    card = (trained / "pkg" / MODEL_CARD).read_text(encoding="utf-8")
    assert "## Acquisition of the training cohort" in card and block["reason"] in card
