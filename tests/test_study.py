"""`sarcograde study`: the YAML is checked before any stage runs (one line per problem), steps
are keyed so that a rerun skips what is finished and redoes what changed, a non-grade target
becomes a derived manifest, and a study killed mid-way and rerun ends with the numbers of an
uninterrupted one."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from sarcograde import cli
from sarcograde import study as study_mod
from sarcograde.cohort import load_manifest
from sarcograde.evaluate import add_arguments as add_evaluate_arguments
from sarcograde.study import Layout, build_steps, load_study
from sarcograde.errors import SarcogradeError
from sarcograde.options import spelt_before_renames
from sarcograde.study.runner import Step, run_steps
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
    ({"overrides": {"train": {"epochs": 2}}},
     "unknown setting overrides.train.epochs; did you mean overrides.train.max_epochs?"),
    ({"overrides": {"train": {"patience": -1}}},
     "overrides.train.patience -1 is not a whole number >= 0"),
    ({"test": {"pooled": "x.csv"}}, "test site name 'pooled' is reserved"),
    ({"models": ["clinical", "volume", "clinical+volume"]}, "must include dl or radiomics"),
    ({"models": ["radiomics", "fusion"]}, "fusion combines the DL models; list dl too"),
    ({"sequences": ["T2FS"], "models": ["dl", "fusion"]}, "fusion needs at least two sequences"),
    ({"overrides": {"radiomics": {"features": {"bins": 8}}}},
     "unknown setting overrides.radiomics.features.bins; known: families, bin_width, "
     "intensity_range, min_texture_voxels"),
    ({"overrides": {"train": {"amp": "bf16", "precision": "bf16"}}},
     "overrides.train.amp and overrides.train.precision are one setting (amp is its old name); "
     "give overrides.train.precision only"),
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


def test_the_default_models_follow_the_sequences(cohorts, tmp_path):
    """Without `models:`, one sequence has no fusion (nothing to fuse); two have it."""
    one = load_study(_write_study(tmp_path / "one", cohorts, sequences=["T2FS"]))
    assert one.models == ["dl", "clinical", "volume", "clinical+volume"]
    assert one.model_names() == ["DL-T2FS", "clinical", "volume", "clinical+volume"]
    steps = [s.name for s in build_steps(one, Layout(tmp_path / "out"))]
    assert "predict/siteB/DL-T2FS" in steps and not any("fusion" in s for s in steps)
    two = load_study(_write_study(tmp_path / "two", cohorts))
    assert two.models == ["dl", "fusion", "clinical", "volume", "clinical+volume"]
    assert "DL-fusion" in two.model_names()


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


def test_the_abstention_coverage_and_recalibration_reach_every_evaluation(cohorts, tmp_path):
    overrides = {"train": {"folds": 2},
                 "evaluate": {"bootstrap": 20, "coverage": 0.8, "recalibrate": 12}}
    study = load_study(_write_study(tmp_path, cohorts, overrides=overrides))
    evaluations = [s for s in build_steps(study, Layout(tmp_path / "out"))
                   if s.stage == "evaluate" and s.argv and s.argv[0] == "evaluate"]
    assert [s.name for s in evaluations] == ["evaluate/siteB", "evaluate/siteC", "evaluate/pooled"]
    for step in evaluations:
        parsed = cli.build_parser("evaluate").parse_args(step.argv)
        assert (parsed.coverage, parsed.recalibrate) == (0.8, 12)
    with pytest.raises(SarcogradeError, match="overrides.evaluate.coverage 1.5"):
        load_study(_write_study(tmp_path / "bad", cohorts,
                                overrides={"evaluate": {"coverage": 1.5}}))


def test_the_executor_reaches_the_stages_that_take_it_and_leaves_the_keys(cohorts, tmp_path):
    study = load_study(_write_study(tmp_path, cohorts))
    ray = ("--executor", "ray", "--ray-address", "HEAD:6379")
    local = build_steps(study, Layout(tmp_path / "out"))
    remote = build_steps(study, Layout(tmp_path / "out"), executor=ray)
    for before, after in zip(local, remote):
        stages = ("preprocess", "train", "predict", "explain")
        takes_it = before.stage in stages and before.argv[0] in stages
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
    # the resolved study, which the report's methods paragraph reads from study.json
    study = load_study(path)
    assert state["config"]["train"] == str(study.train)
    assert list(state["config"]["test"]) == ["siteB", "siteC"]
    assert state["config"]["sequences"] == study.sequences
    assert state["config"]["seed"] == study.seed
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


def test_train_amp_in_the_overrides_is_the_old_name_of_train_precision(cohorts, tmp_path,
                                                                        capsys):
    overrides = {"train": {"max_epochs": 1, "precision": "bf16"}}
    new = load_study(_write_study(tmp_path / "new", cohorts, overrides=overrides))
    assert capsys.readouterr().err == ""
    old_path = _write_study(tmp_path / "old", cohorts,
                            overrides={"train": {"max_epochs": 1, "amp": "bf16"}})
    old = load_study(old_path)
    assert old.overrides == new.overrides == overrides
    assert capsys.readouterr().err == (
        f"{old_path}: note: overrides.train.amp: bf16 is deprecated; use "
        "overrides.train.precision: bf16 (the old name goes in the next version)\n")
    # its old value none is fp32
    none = load_study(_write_study(tmp_path / "none", cohorts,
                                   overrides={"train": {"amp": "none"}}))
    assert none.overrides == {"train": {"precision": "fp32"}}


def test_a_step_recorded_with_an_option_s_old_spelling_is_still_finished(cohorts, tmp_path):
    """A study resumed after options were renamed (fusion apply's --sequence, explain's
    --slice-logits) does not redo the steps the previous version finished: their keys, with the
    old spellings, still count. Any other change of the command still reruns the step."""
    layout = Layout(tmp_path / "out")
    steps = [s for s in build_steps(load_study(_write_study(tmp_path, cohorts)), layout)
             if s.name in ("predict/siteB/DL-fusion", "explain/siteB/T2FS")]
    assert len(steps) == 2
    assert [a for s in steps for a in s.argv if a in ("--sequence", "--slice-logits")] == [
        "--sequence", "--sequence", "--slice-logits"]
    state = {"steps": {}}
    for step in steps:
        old = Step(step.name, step.stage, step.inputs, step.outputs,
                   spelt_before_renames(step.argv))
        assert "--predictions" in old.argv and old.key() != step.key()
        state["steps"][step.name] = {"key": old.key()}
        for output in step.outputs:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text("finished")
    layout.state.write_text(json.dumps(state))
    ran = run_steps(steps, layout.state)
    assert ran["runs"][-1]["skipped"] == [s.name for s in steps]
    assert [ran["steps"][s.name]["key"] for s in steps] == [s.key() for s in steps]

    changed = Step(steps[0].name, "predict", steps[0].inputs, steps[0].outputs,
                   spelt_before_renames(steps[0].argv) + ["--out", "elsewhere.csv"])
    state["steps"][changed.name] = {"key": changed.key()}
    layout.state.write_text(json.dumps(state))
    with pytest.raises(SarcogradeError, match="stopped at step predict/siteB/DL-fusion"):
        run_steps(steps[:1], layout.state)  # not finished: it runs (and lacks its inputs)


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="the line is for machines without a GPU")
def test_a_paper_study_on_a_cpu_says_first_how_long_an_epoch_takes(cohorts, tmp_path, capsys,
                                                                    monkeypatch):
    def steps_not_run(steps, state, config=None) -> dict:  # what they say is not tested here
        print("[run_steps]", file=sys.stderr)
        return {}

    monkeypatch.setattr(study_mod, "run_steps", steps_not_run)
    tiny = {"architecture": "densenet", "init_features": 8, "growth_rate": 8,
            "block_config": [2, 2], "pretrained": "none"}  # a quick timed step
    for preset in ("paper", "quick"):
        path = _write_study(tmp_path / preset, cohorts, preset=preset, overrides={
            "preprocess": {"size": 32, "n4": False}, "model": tiny, "train": {"max_epochs": 1}})
        study_mod.run_study(path, tmp_path / preset / "out", until="train")
        err = capsys.readouterr().err
        said = [line for line in err.splitlines() if line.startswith("paper preset on a CPU")]
        if preset == "quick":
            assert said == []
            continue
        assert len(said) == 1 and re.fullmatch(
            r"paper preset on a CPU: one step of 30 slices takes [\d.]+ s here, so an epoch "
            r"takes about [\d.]+ (s|min|h) per 1,000 training slices; the quick preset runs in "
            r"minutes", said[0])
        assert err.index(said[0]) < err.index("[run_steps]")  # before the first step


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


def test_radiomics_runs_per_sequence_in_the_preprocess_train_and_predict_stages(cohorts,
                                                                               tmp_path):
    study = load_study(_write_study(tmp_path, cohorts, test={
        "siteB": str(cohorts / "siteB" / "manifest.csv"),
        "siteC": str(cohorts / "siteC" / "manifest.csv")}, models=["radiomics"]))
    assert study.model_names() == ["radiomics-T1FSGd", "radiomics-T2FS"]
    out = tmp_path / "out"
    steps = {s.name: s for s in build_steps(study, Layout(out), jobs=3)}
    seqs, cohorts_ = ("T1FSGd", "T2FS"), ("train", "siteB", "siteC")
    assert list(steps) == (
        [f"check/{c}" for c in cohorts_]
        + [f"radiomics/{c}/{s}" for c in cohorts_ for s in seqs]
        + [f"train/radiomics-{s}" for s in seqs]
        + [f"predict/{site}/radiomics-{s}" for site in ("siteB", "siteC") for s in seqs]
        + ["evaluate/siteB", "evaluate/siteC", "evaluate/pooled", "report"])
    assert {s.stage for name, s in steps.items() if name.startswith("radiomics/")} == {"preprocess"}

    extract = steps["radiomics/siteC/T2FS"]
    assert extract.argv == ["radiomics", "extract", str(study.test["siteC"]), "--sequence", "T2FS",
                            "--out", str(out / "radiomics" / "siteC" / "T2FS"), "--jobs", "3"]
    assert extract.outputs == [out / "radiomics" / "siteC" / "T2FS" / "features.csv"]
    fit = steps["train/radiomics-T1FSGd"]
    assert fit.argv == ["radiomics", "fit", str(out / "radiomics/train/T1FSGd/features.csv"),
                        "--manifest", str(study.train), "--out",
                        str(out / "train" / "radiomics-T1FSGd"), "--preset", "quick",
                        "--folds", "2", "--seed", "0"]  # the DL runs' CV (overrides.train)
    predict = steps["predict/siteB/radiomics-T2FS"]
    assert predict.argv == ["radiomics", "predict", str(out / "train" / "radiomics-T2FS"),
                            str(out / "radiomics/siteB/T2FS/features.csv"),
                            "--out", str(out / "predict/siteB/radiomics-T2FS.csv")]
    evaluate = steps["evaluate/siteB"].argv
    assert [evaluate[i + 1] for i, a in enumerate(evaluate) if a == "--predictions"] == [
        f"radiomics-{s}={out / 'predict/siteB' / f'radiomics-{s}.csv'}" for s in seqs]
    # no DL run: the first radiomics run gives the Youden threshold
    assert evaluate[evaluate.index("--run") + 1] == str(out / "train" / "radiomics-T1FSGd")
    pooled = steps["evaluate/pooled"].argv
    assert f"radiomics-T2FS={out / 'predict' / '{site}' / 'radiomics-T2FS'}.csv" in pooled
    for step in steps.values():
        if step.argv is not None:
            cli.build_parser(step.argv[0]).parse_args(step.argv)
    # --until keeps its meaning: features by preprocess, fits by train
    until = [s.name for s in build_steps(study, Layout(out), until="train")]
    assert until[-1] == "train/radiomics-T2FS" and not any(n.startswith("predict") for n in until)

    with_dl = load_study(_write_study(tmp_path, cohorts, models=["dl", "radiomics"], overrides={
        "radiomics": {"preprocess": {"n4": False}}}))
    steps = {s.name: s for s in build_steps(with_dl, Layout(out))}
    assert "preprocess/siteB/T2FS" in steps and "explain/siteB/T2FS" in steps
    evaluate = steps["evaluate/siteB"].argv
    assert evaluate[2].startswith("DL-T1FSGd=")  # DL first: the reference model and its run
    assert evaluate[evaluate.index("--run") + 1] == str(out / "train" / "T1FSGd")
    # overrides.radiomics is DIR/radiomics.yaml, given to extract and fit and part of their keys
    for name in ("radiomics/train/T2FS", "train/radiomics-T2FS"):
        assert "--config" in steps[name].argv and out / "radiomics.yaml" in steps[name].inputs
    assert with_dl.model_names()[:2] == ["DL-T1FSGd", "DL-T2FS"]


@pytest.mark.slow  # about 70 s on two shared CPU cores
def test_a_study_without_dl_evaluates_radiomics_like_every_model(cohorts, tmp_path):
    overrides = {"train": {"folds": 2}, "evaluate": {"bootstrap": 20},
                 # coarse and without N4: seconds per patient (the settings reach extract and fit)
                 "radiomics": {"preprocess": {"spacing_mm": 3.0, "n4": False}}}
    path = _write_study(tmp_path, cohorts, sequences=["T2FS"], overrides=overrides,
                        models=["radiomics", "clinical", "volume", "clinical+volume"])
    out = tmp_path / "out"
    assert cli.main(["study", str(path), "--out", str(out), "--jobs", "1"]) == 0
    assert not (out / "preprocess").exists() and not (out / "explain").exists()
    extraction = json.loads((out / "radiomics" / "train" / "T2FS" / "config.json").read_text())
    assert '"spacing_mm": 3.0' in json.dumps(extraction)
    for site in ("siteB", "siteC"):
        predictions = pd.read_csv(out / "predict" / site / "radiomics-T2FS.csv",
                                  dtype={"patient_id": str})
        grades = {p.patient_id: p.label for p in load_manifest(cohorts / site / "manifest.csv")}
        y = [grades[pid] for pid in predictions["patient_id"]]
        metrics = json.loads((out / "evaluate" / site / "metrics.json").read_text())
        assert set(metrics["models"]) == {"radiomics-T2FS", "clinical", "volume",
                                          "clinical+volume"}
        auc = metrics["models"]["radiomics-T2FS"]["auc"]["value"]
        assert auc == pytest.approx(roc_auc_score(y, predictions["p_high"]), abs=1e-12)
        assert any({d["a"], d["b"]} == {"radiomics-T2FS", "clinical"} for d in metrics["delong"])
    pooled = json.loads((out / "evaluate" / "pooled" / "metrics.json").read_text())
    assert "radiomics-T2FS" in pooled["models"] and pooled["pooled"] is True
    assert (out / "report.html").is_file()


@pytest.mark.slow  # about a minute on two free CPU cores, like the radiomics study below
def test_a_study_of_another_target_names_it_in_its_report_beside_the_real_grades(cohorts,
                                                                                tmp_path):
    """Radiomics and the baselines only, one coarse sequence, one test site: seconds per
    patient. The target is a 0/1 column unrelated to the grade."""
    manifests = {}
    for site, values in (("siteA", [0, 1] * 5), ("siteB", [1, 0, 0, 1])):
        frame = pd.read_csv(cohorts / site / "manifest.csv", dtype=str)
        frame["lung_metastasis"] = values
        manifests[site] = cohorts / site / "with-lung-metastasis.csv"  # beside its images
        frame.to_csv(manifests[site], index=False)
    overrides = {"train": {"folds": 2}, "evaluate": {"bootstrap": 20},
                 "radiomics": {"preprocess": {"spacing_mm": 3.0, "n4": False}}}
    path = _write_study(tmp_path, cohorts, sequences=["T2FS"], overrides=overrides,
                        train=str(manifests["siteA"]), test={"siteB": str(manifests["siteB"])},
                        target="lung_metastasis",
                        models=["radiomics", "clinical", "volume", "clinical+volume"])
    out = tmp_path / "out"
    # with DL models, explain names the target in its montages (--target, a real option)
    with_dl = load_study(_write_study(tmp_path / "dl", cohorts, sequences=["T2FS"],
                                      train=str(manifests["siteA"]),
                                      test={"siteB": str(manifests["siteB"])},
                                      target="lung_metastasis", models=["dl"]))
    explain = {s.name: s for s in build_steps(with_dl, Layout(out))}["explain/siteB/T2FS"].argv
    assert explain[explain.index("--target") + 1] == "lung_metastasis"
    cli.build_parser("explain").parse_args(explain)
    assert cli.main(["study", str(path), "--out", str(out), "--jobs", "1"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "lung metastasis: no vs yes" in page and "FNCLCC G1) vs" not in page
    assert "predicted lung metastasis: yes at the argmax" in page
    metrics = json.loads((out / "evaluate" / "siteB" / "metrics.json").read_text())
    assert metrics["target"] == "lung_metastasis" and metrics["n_high"] == 2
    # Table 1: the real grades of siteA and siteB under "Grade (FNCLCC)", the target beside them
    table = pd.read_csv(out / "evaluate" / "siteB" / "cohort_table.csv", dtype=str,
                        keep_default_na=False)
    rows = table.set_index(["variable", "level"])
    for site, column in (("siteA", "training"), ("siteB", "test")):
        grades = load_manifest(cohorts / site / "manifest.csv").patients
        for grade in (1, 2, 3):
            count = sum(p.grade == grade for p in grades)
            assert rows.loc[("Grade (FNCLCC)", f"G{grade}"), column].startswith(
                f"{count}/{len(grades)}")
            assert f"<td>G{grade}</td>" in page
    assert rows.loc[("Lung metastasis", "yes"), "training"].startswith("5/10")
    assert rows.loc[("Lung metastasis", "yes"), "test"].startswith("2/4")
    assert ">Lung metastasis<" in page
