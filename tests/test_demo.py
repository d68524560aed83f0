"""`sarcograde demo`: synthetic sites, then `sarcograde study` on them. The end-to-end run
(slow) checks every model on every external site and pooled; a rerun resumes."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest

from sarcograde import cli
from sarcograde import demo as demo_mod
from sarcograde.demo import EXTERNAL_SITES, DemoLayout, run_demo, study_file, synth_args
from sarcograde.study import Layout
from sarcograde.study.spec import KEYS
from sarcograde.synth import add_arguments as add_synth_arguments

# Reduced so that the whole study runs in a few minutes on two CPU cores.
REDUCED = dict(patients_train=20, patients_test=8, seed=0, epochs=2, folds=2, size=32,
               bootstrap=100, jobs=2)
MODELS = ["DL-T1FSGd", "DL-T2FS", "DL-fusion", "clinical", "volume", "clinical+volume"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, **REDUCED)


@pytest.mark.slow
def test_demo_runs_the_study_and_grades_every_external_site(demo):
    out, result = demo
    layout = Layout(out)
    sites = [s["name"] for s in EXTERNAL_SITES]
    assert set(result["auc"]) == {*sites, "pooled"}
    for site in sites:
        for model in MODELS:
            frame = pd.read_csv(layout.predict(site) / f"{model}.csv")
            assert len(frame) == REDUCED["patients_test"], (site, model)
        metrics = json.loads((layout.evaluate(site) / "metrics.json").read_text())
        assert set(metrics["models"]) == set(MODELS)
        assert result["auc"][site]["DL-fusion"] == metrics["models"]["DL-fusion"]["auc"]
    pooled = json.loads((layout.evaluate("pooled") / "metrics.json").read_text())
    assert pooled["pooled"] is True and set(pooled["models"]) == set(MODELS)
    assert {site: block["n"] for site, block in pooled["sites"].items()} == {
        site: REDUCED["patients_test"] for site in sites}
    # siteC's T2FS contours were carried from T1FSGd: every patient still has T2FS slices
    assert (pd.read_csv(layout.cache("siteC", "T2FS") / "index.csv")["n_slices"] > 0).all()
    assert layout.report.is_file()


@pytest.mark.slow
def test_a_rerun_resumes_without_redoing_a_step(demo):
    out, _ = demo
    models = {p: p.stat().st_mtime_ns for p in out.glob("train/*/fold_*/model.pt")}
    run_demo(out, **REDUCED)
    state = json.loads((out / "study.json").read_text())
    assert state["runs"][-1]["ran"] == [] and state["runs"][-1]["skipped"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("train/*/fold_*/model.pt")} == models


def test_the_study_file_and_synth_arguments_are_valid(tmp_path):
    layout = DemoLayout(tmp_path)
    spec = study_file(layout, seed=3, epochs=2, folds=3, size=32, bootstrap=100)
    assert set(spec) <= KEYS
    assert spec["test"] == {"siteB": "data/siteB/manifest.csv", "siteC": "data/siteC/manifest.csv"}
    assert spec["overrides"] == {"evaluate": {"bootstrap": 100},
                                 "train": {"max_epochs": 2, "folds": 3},
                                 "preprocess": {"size": 32}}
    synth = argparse.ArgumentParser()
    add_synth_arguments(synth)
    carries = "--missing-mask" in synth._option_string_actions  # issue 12's synth option
    for i, site in enumerate(EXTERNAL_SITES):
        argv = synth_args(layout, site, 10, i)
        assert ("--missing-mask" in argv) == (site["name"] == "siteC")
        if carries or "--missing-mask" not in argv:
            cli.build_parser("synth").parse_args(argv)


def test_too_small_a_demo_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--patients-train", "4"]) == 1
    assert "at least 10 training" in capsys.readouterr().err


def test_quick_epochs_is_the_old_spelling_of_max_epochs(tmp_path, monkeypatch, capsys):
    runs = []
    monkeypatch.setattr(demo_mod, "run_demo", lambda out, **kwargs: runs.append(kwargs))
    assert cli.main(["demo", "--out", str(tmp_path), "--max-epochs", "2"]) == 0
    assert capsys.readouterr().err == ""
    assert cli.main(["demo", "--out", str(tmp_path), "--quick-epochs", "2"]) == 0
    assert capsys.readouterr().err == (
        "sarcograde demo: note: --quick-epochs is deprecated; use --max-epochs (the old spelling "
        "goes in the next version)\n")
    assert runs[0] == runs[1] and runs[0]["epochs"] == 2
