"""`sarcograde study` with `model: PKG`: a received model package is validated on the sites
without retraining. Its models are named PKG-<SEQ> and PKG-fusion, each site is preprocessed
with the package's settings, the baselines (where a training cohort is given) are compared
against it, and the numbers are those of the study that trained it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sarcograde import cli
from sarcograde.cohort import load_manifest
from sarcograde.errors import SarcogradeError
from sarcograde.formats.package import read_package
from sarcograde.study import Layout, build_steps, load_study

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SITES = {"siteA": 10, "siteB": 5, "siteC": 5}
SEQUENCES = ["T1FSGd", "T2FS"]


def _yaml(folder: Path, study: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(json.dumps(study))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Three synthetic sites; a study trained on siteA, run until predict, and its package."""
    root = tmp_path_factory.mktemp("package-study")
    for seed, (site, n) in enumerate(SITES.items()):
        assert cli.main(["synth", str(root / site), "--patients", str(n), "--site", site,
                         "--seed", str(seed), "--sequences", ",".join(SEQUENCES)]) == 0
    manifests = {site: str(root / site / "manifest.csv") for site in SITES}
    study = {"train": manifests["siteA"],
             "test": {"siteB": manifests["siteB"], "siteC": manifests["siteC"]},
             "sequences": SEQUENCES, "preset": "quick", "seed": 0, "models": ["dl", "fusion"],
             "overrides": {"preprocess": {"size": 32, "n4": False},
                           "train": {"max_epochs": 1, "folds": 2},
                           "evaluate": {"bootstrap": 20}}}
    trainer = root / "trained"
    assert cli.main(["study", str(_yaml(root / "yaml", study)), "--out", str(trainer),
                     "--until", "predict"]) == 0
    package = root / "model.zip"
    assert cli.main(["export", "--study", str(trainer), "--zip", "--out", str(package)]) == 0
    return {"root": root, "manifests": manifests, "trainer": trainer, "package": package}


def _received(trained, **keys) -> dict:
    """A study of the received package on siteB and siteC (`keys` added or replaced)."""
    m = trained["manifests"]
    return {"model": str(trained["package"]),
            "test": {"siteB": m["siteB"], "siteC": m["siteC"]}, "seed": 0,
            "overrides": {"evaluate": {"bootstrap": 20}}, **keys}


def test_a_received_package_is_evaluated_against_the_baselines_without_training(trained):
    root = trained["root"]
    path = _yaml(root / "received", _received(trained,
                                              train=trained["manifests"]["siteA"]))
    out = root / "received-out"
    assert cli.main(["study", str(path), "--out", str(out)]) == 0

    # nothing of the DL models was trained: no run, no fusion fit, no training cache
    assert not (out / "train").exists() and not (out / "preprocess" / "train").exists()
    package = read_package(trained["package"])
    for site in ("siteB", "siteC"):
        # each site preprocessed exactly as the package says
        cache = json.loads((out / "preprocess" / site / "T2FS" / "config.json").read_text())
        assert {k: cache[k] for k in ("size", "n4")} == {"size": 32, "n4": False}
        # the package's models predict what the study's own runs predicted (same networks)
        for seq in SEQUENCES:
            mine = pd.read_csv(out / "predict" / site / f"PKG-{seq}.csv")
            theirs = pd.read_csv(trained["trainer"] / "predict" / site / f"DL-{seq}.csv")
            assert mine["patient_id"].tolist() == theirs["patient_id"].tolist()
            np.testing.assert_allclose(mine["p_high"], theirs["p_high"], atol=1e-6)
        fused = pd.read_csv(out / "predict" / site / "PKG-fusion.csv")
        theirs = pd.read_csv(trained["trainer"] / "predict" / site / "DL-fusion.csv")
        np.testing.assert_allclose(fused["p_high"], theirs["p_high"], atol=1e-6)

        metrics = json.loads((out / "evaluate" / site / "metrics.json").read_text())
        assert list(metrics["models"]) == ["PKG-T1FSGd", "PKG-T2FS", "PKG-fusion", "clinical",
                                           "volume", "clinical+volume"]
        # the graded model at the package's own threshold, recomputed from the files
        block = metrics["operating_threshold"]
        assert block["model"] == "PKG-fusion" and block["threshold"] == package.threshold
        labels = {p.patient_id: p.label for p in load_manifest(trained["manifests"][site])}
        y = np.array([labels[pid] for pid in fused["patient_id"]])
        predicted = (fused["p_high"] > package.threshold).to_numpy(int)
        assert block["sensitivity"]["value"] == pytest.approx(predicted[y == 1].mean())
        assert block["specificity"]["value"] == pytest.approx(1 - predicted[y == 0].mean())
        assert (out / "explain" / site / "T1FSGd" / "attention.csv").is_file()
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "PKG-fusion" in report and "applied as received, without retraining" in report


def test_without_a_training_cohort_the_package_alone_is_evaluated(trained, tmp_path):
    path = _yaml(tmp_path, _received(trained))
    study = load_study(path)
    assert study.train is None and study.sequences == SEQUENCES
    assert study.model_names() == ["PKG-T1FSGd", "PKG-T2FS", "PKG-fusion"]
    steps = {s.name: s for s in build_steps(study, Layout(tmp_path / "out"))}
    assert not [n for n in steps if n.startswith(("train", "check/train", "preprocess/train"))]
    evaluate = steps["evaluate/siteB"].argv
    assert "--model" in evaluate and "--train-manifest" not in evaluate and "--run" not in evaluate
    one_site = _yaml(tmp_path / "one", _received(
        trained, test={"siteB": trained["manifests"]["siteB"]}))
    assert cli.main(["study", str(one_site), "--out", str(tmp_path / "out"), "--until",
                     "evaluate"]) == 0
    metrics = json.loads((tmp_path / "out" / "evaluate" / "siteB" / "metrics.json").read_text())
    assert list(metrics["models"]) == ["PKG-T1FSGd", "PKG-T2FS", "PKG-fusion"]
    assert metrics["operating_threshold"]["model"] == "PKG-fusion"


@pytest.mark.parametrize("keys, message", [
    ({"sequences": ["T1FSGd", "DWI"]}, "sequence 'DWI' is not one the model package grades"),
    ({"models": ["dl", "clinical", "volume", "clinical+volume"]},
     "models: clinical is fitted on the training cohort: give train"),
    ({"sequences": ["T2FS"], "models": ["dl", "fusion"]}, "fusion needs at least two sequences"),
    ({"model": "nowhere.zip"}, "model: model package not found"),
])
def test_what_a_package_study_refuses(trained, tmp_path, keys, message):
    path = _yaml(tmp_path, {**_received(trained), **keys})
    with pytest.raises(SarcogradeError, match=message):
        load_study(path)


def test_the_package_s_settings_are_not_repeated_by_hand(trained, tmp_path, capsys):
    manifest = trained["manifests"]["siteB"]
    assert cli.main(["preprocess", manifest, "--sequence", "T2FS", "--model",
                     str(trained["package"]), "--size", "64", "--out",
                     str(tmp_path / "cache")]) != 0
    assert "--size with --model" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
