"""`sarcograde demo` end to end at a reduced size: every stage's artifact, a report, and an
external AUC well above chance on the synthetic site; a rerun resumes instead of retraining."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sarcograde import cli
from sarcograde.demo import DemoLayout, demo_steps, run_demo

# Reduced so that the whole pipeline runs in a few minutes on two CPU cores.
REDUCED = dict(patients_train=24, patients_test=16, seed=0, epochs=4, folds=3, size=32,
               bootstrap=200, jobs=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = run_demo(out, **REDUCED)
    return out, result


@pytest.mark.slow
def test_demo_runs_every_stage_and_grades_the_external_site(demo):
    out, result = demo
    layout = DemoLayout(out)
    for role in ("train", "test"):
        assert pd.read_csv(layout.check(role) / "qa.csv")["usable"].all()
        assert (layout.cache(role) / "index.csv").is_file()
    models = sorted(layout.run.glob("fold_*/model.pt"))
    assert len(models) == REDUCED["folds"]
    predictions = pd.read_csv(layout.predictions)
    assert len(predictions) == REDUCED["patients_test"]
    assert predictions["patient_id"].str.startswith("siteB-").all()

    metrics = json.loads((layout.eval / "metrics.json").read_text(encoding="utf-8"))
    assert result["auc"] == metrics["auc"]
    assert metrics["n"] == REDUCED["patients_test"]
    assert metrics["baselines"]["models"], "baselines were not fitted"
    assert json.loads((layout.eval / "survival.json").read_text(encoding="utf-8"))["models"]
    assert "threshold" in metrics["youden"]
    # A synthetic grade signal that a small CNN learns: well above chance on the other site.
    assert metrics["auc"]["value"] > 0.7, metrics["auc"]

    attention = pd.read_csv(layout.explain / "attention.csv")
    assert set(attention["patient_id"]) == set(predictions["patient_id"])
    page = result["report"].read_text(encoding="utf-8")
    assert result["report"] == layout.report
    for section in ("flow", "cohort", "performance", "survival", "attention", "training",
                    "methods", "provenance"):
        assert f'<section id="{section}">' in page
    assert "Synthetic cohort." in page and "Not run" not in page


@pytest.mark.slow
def test_a_rerun_resumes_without_retraining(demo):
    out, _ = demo
    layout = DemoLayout(out)
    before = {p: p.stat().st_mtime_ns for p in layout.run.glob("fold_*/model.pt")}
    cache_before = {p: p.stat().st_mtime_ns for p in layout.cache("test").glob("patients/*.npz")}
    run_demo(out, **REDUCED)
    assert {p: p.stat().st_mtime_ns for p in layout.run.glob("fold_*/model.pt")} == before
    assert {p: p.stat().st_mtime_ns
            for p in layout.cache("test").glob("patients/*.npz")} == cache_before


def test_the_steps_are_the_pipeline_in_order(tmp_path):
    config = tmp_path / "demo-config.yaml"
    steps = demo_steps(DemoLayout(tmp_path), patients_train=30, patients_test=20, seed=3,
                       size=None, folds=None, bootstrap=100, jobs=1, train_config=config)
    commands = [argv[0] for _, argv in steps]
    assert commands == ["synth", "synth", "check", "check", "preprocess", "preprocess", "train",
                        "predict", "evaluate", "explain", "report"]
    registered = {name for name, _, _ in cli.COMMANDS}
    assert set(commands) <= registered
    # Every step parses with the real command line (flags exist, values have the right type).
    for _, argv in steps:
        cli.build_parser(argv[0]).parse_args(argv)
    evaluate = dict(zip(steps[8][1][2::2], steps[8][1][3::2]))
    assert evaluate["--bootstrap"] == "100" and "--train-manifest" in evaluate
    train = dict(zip(steps[6][1][2::2], steps[6][1][3::2]))
    assert train["--config"] == str(config) and train["--preset"] == "quick"


def test_too_small_a_demo_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--patients-train", "4"]) == 1
    assert "at least 10 training" in capsys.readouterr().err
