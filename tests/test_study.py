"""`sarcograde study`: the YAML is checked before any stage runs (one line per problem), steps
are keyed so that a rerun skips what is finished and redoes what changed, a non-grade target
becomes a derived manifest, and a study killed mid-way and rerun ends with the numbers of an
uninterrupted one."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sarcograde import cli
from sarcograde.cohort import load_manifest
from sarcograde.evaluate import add_arguments as add_evaluate_arguments
from sarcograde.study import Layout, build_steps, load_study
from sarcograde.study.target import target_manifest

REPO = Path(__file__).resolve().parents[1]
SITES = {"siteA": 10, "siteB": 4, "siteC": 4}


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> Path:
    """Three tiny synthetic sites with T1FSGd and T2FS; siteA trains."""
    root = tmp_path_factory.mktemp("cohorts")
    for seed, (site, n) in enumerate(SITES.items()):
        assert cli.main(["synth", str(root / site), "--patients", str(n), "--site", site,
                         "--seed", str(seed), "--sequences", "T1FSGd,T2FS"]) == 0
    return root


def _write_study(folder: Path, cohorts: Path, **changes) -> Path:
    study = {"train": str(cohorts / "siteA" / "manifest.csv"),
             "test": {"siteB": str(cohorts / "siteB" / "manifest.csv"),
                      "siteC": str(cohorts / "siteC" / "manifest.csv")},
             "sequences": ["T1FSGd", "T2FS"], "preset": "quick", "seed": 0,
             "overrides": {"preprocess": {"size": 32, "n4": False},
                           "train": {"max_epochs": 1, "folds": 2},
                           "evaluate": {"bootstrap": 20}}}
    study.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(json.dumps(study))  # JSON is YAML
    return path


@pytest.mark.parametrize("change, message", [
    ({"sequence": ["T2FS"]}, "unknown key(s) sequence"),
    ({"train": "nowhere/manifest.csv"}, "train: manifest not found"),
    ({"sequences": ["T2FS", "DWI"]}, "unknown sequence 'DWI'"),
    ({"target": "age"}, "target 'age' must be 0/1"),
    ({"target": "no_such_column"}, "target 'no_such_column' is not a column"),
    ({"models": ["dl", "deep"]}, "unknown model 'deep'"),
    ({"models": ["dl", "volume"]}, "list all three or none"),
    ({"overrides": {"train": {"epochs": 2}}}, "overrides.train: unknown option(s) epochs"),
    ({"test": {"pooled": "x.csv"}}, "test site name 'pooled' is reserved"),
])
def test_a_bad_study_file_is_one_line_before_any_stage(cohorts, tmp_path, capsys, change,
                                                       message):
    path = _write_study(tmp_path, cohorts, **change)
    out = tmp_path / "out"
    assert cli.main(["study", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sarcograde study: error: {path}: ")
    assert message in err
    assert not out.exists()


def test_invalid_yaml_is_one_line(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text("train: [unclosed\n")
    assert cli.main(["study", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid YAML" in err


def test_relative_paths_are_taken_from_the_yaml_folder(cohorts, tmp_path):
    path = tmp_path / "study.yaml"
    rel = os.path.relpath(cohorts, tmp_path)
    path.write_text(f"train: {rel}/siteA/manifest.csv\ntest:\n  siteB: {rel}/siteB/manifest.csv\n"
                    "sequences: [T2FS]\nmodels: [dl]\n")
    study = load_study(path)
    assert study.train.resolve() == (cohorts / "siteA" / "manifest.csv").resolve()
    assert study.model_names() == ["DL-T2FS"]
    assert study.target == "grade" and study.preset == "paper"


def test_the_steps_parse_with_the_real_command_line(cohorts, tmp_path):
    study = load_study(_write_study(tmp_path, cohorts))
    steps = build_steps(study, Layout(tmp_path / "out"))
    names = [s.name for s in steps]
    assert names[:3] == ["check/train", "check/siteB", "check/siteC"]
    assert "train/fusion" in names and "evaluate/pooled" in names and names[-1] == "report"
    assert names.index("predict/siteC/DL-fusion") < names.index("evaluate/siteB")
    # the baselines are fitted by evaluate, which writes their prediction files
    assert "--baseline-predictions" in steps[names.index("evaluate/siteB")].argv
    # each stage's arguments exist and have the right types (evaluate's --predictions NAME=path
    # is the multi-model form of issue 12; parsed where this evaluate has it)
    evaluate = argparse.ArgumentParser()
    add_evaluate_arguments(evaluate)
    multi_model = "--predictions" in evaluate._option_string_actions
    for step in steps:
        if step.argv is not None and (step.argv[0] != "evaluate" or multi_model):
            cli.build_parser(step.argv[0]).parse_args(step.argv)


def test_the_executor_reaches_the_stages_that_take_it_and_leaves_the_keys(cohorts, tmp_path):
    study = load_study(_write_study(tmp_path, cohorts))
    ray = ("--executor", "ray", "--ray-address", "HEAD:6379")
    local = build_steps(study, Layout(tmp_path / "out"))
    remote = build_steps(study, Layout(tmp_path / "out"), executor=ray)
    for before, after in zip(local, remote):
        takes_it = before.stage in ("preprocess", "train", "predict") and before.argv[0] in (
            "preprocess", "train", "predict")
        assert (after.argv[-4:] == list(ray)) == takes_it, after.name
        if after.argv:
            cli.build_parser(after.argv[0]).parse_args(after.argv)
        assert after.key() == before.key()  # same results on any executor: nothing reruns


def test_a_rerun_skips_finished_steps_and_redoes_what_changed(cohorts, tmp_path):
    path = _write_study(tmp_path, cohorts)
    out = tmp_path / "out"
    assert cli.main(["study", str(path), "--out", str(out), "--until", "check"]) == 0
    state = json.loads((out / "study.json").read_text())
    assert state["runs"][0]["ran"] == ["check/train", "check/siteB", "check/siteC"]
    assert (out / "check" / "siteB" / "qa.csv").is_file()

    assert cli.main(["study", str(path), "--out", str(out), "--until", "check"]) == 0
    state = json.loads((out / "study.json").read_text())
    assert state["runs"][1]["ran"] == []
    assert state["runs"][1]["skipped"] == ["check/train", "check/siteB", "check/siteC"]

    # a changed input (one image of siteC) reruns exactly the step that reads it
    manifest = pd.read_csv(cohorts / "siteC" / "manifest.csv")
    image = cohorts / "siteC" / manifest["image_T2FS"].iloc[0]
    original = image.read_bytes()
    try:
        image.write_bytes(original + b"\0")  # gzip ignores trailing zeros: still a valid image
        assert cli.main(["study", str(path), "--out", str(out), "--until", "check"]) == 0
    finally:
        image.write_bytes(original)
    state = json.loads((out / "study.json").read_text())
    assert state["runs"][2]["ran"] == ["check/siteC"]
    # ...and a deleted output reruns its step
    (out / "check" / "siteB" / "qa.csv").unlink()
    assert cli.main(["study", str(path), "--out", str(out), "--until", "check"]) == 0
    state = json.loads((out / "study.json").read_text())
    assert state["runs"][3]["ran"] == ["check/siteB", "check/siteC"]


def test_a_non_grade_target_becomes_the_grade_of_a_derived_manifest(cohorts, tmp_path):
    frame = pd.read_csv(cohorts / "siteB" / "manifest.csv", dtype=str)
    frame["lung_metastasis"] = ["1", "0", "", "1"]
    source = cohorts / "siteB" / "with-target.csv"  # beside the images its paths point to
    frame.to_csv(source, index=False)
    out = tmp_path / "derived.csv"
    target_manifest(source, "lung_metastasis", out)
    derived = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert derived["grade"].tolist() == ["G3", "G1", "", "G3"]
    assert derived["grade_original"].tolist() == frame["grade"].tolist()
    cohort = load_manifest(out, strict=True)  # the paths resolve from the new folder
    assert [p.label for p in cohort] == [1, 0, None, 1]
    assert all(p.images["T2FS"].is_file() for p in cohort)


def _study_process(path: Path, out: Path) -> subprocess.Popen:
    """The study up to the predictions, in a process of its own (so that it can be killed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sarcograde.cli", "study", str(path), "--out",
                             str(out), "--until", "predict", "--jobs", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _finish(process: subprocess.Popen) -> None:
    _, err = process.communicate()
    assert process.returncode == 0, err.decode()


def _numbers(out: Path) -> dict[str, pd.DataFrame]:
    files = sorted((out / "predict").glob("*/*.csv")) + sorted((out / "train").glob("*/*.csv"))
    return {str(f.relative_to(out)): pd.read_csv(f) for f in files}


@pytest.mark.slow
def test_a_study_killed_mid_way_and_rerun_ends_with_the_same_numbers(cohorts, tmp_path):
    path = _write_study(tmp_path, cohorts, models=["dl", "fusion"])
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _finish(_study_process(path, whole))

    process = _study_process(path, resumed)
    # kill it (SIGKILL: no clean-up) once the first sequence's ensemble is trained
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        state = resumed / "study.json"
        if state.is_file() and "train/T1FSGd" in json.loads(state.read_text())["steps"]:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the study ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = set(json.loads((resumed / "study.json").read_text())["steps"])
    assert "predict/siteB/DL-fusion" not in finished

    _finish(_study_process(path, resumed))
    state = json.loads((resumed / "study.json").read_text())
    assert set(state["runs"][-1]["skipped"]) == finished  # nothing finished was redone
    a, b = _numbers(whole), _numbers(resumed)
    assert set(a) == set(b) and "predict/siteC/DL-fusion.csv" in a
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    assert (json.loads((whole / "train" / "fusion" / "model.json").read_text())
            == json.loads((resumed / "train" / "fusion" / "model.json").read_text()))
