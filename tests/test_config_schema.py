"""The settings table: every source of settings (the presets, `--config` files, the command
line's values, a study's `overrides`, the radiomics settings) is held against it before any work,
and an unknown key or a bad value is one line naming the file and the key."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import pytest
import yaml

from sarcograde import cli, config
from sarcograde.config import PRESETS, AugmentParams, load_config, load_preset
from sarcograde.config_schema import (AUGMENT, PREPROCESS, RADIOMICS, SETTINGS, STUDY_OVERRIDES,
                                      check_settings, describe)
from sarcograde.errors import SarcogradeError
from sarcograde.preprocess import Params
from sarcograde.radiomics.settings import load_settings


def flat_keys(tree: dict, prefix: str = "") -> set[str]:
    """section.key of every leaf of a settings mapping."""
    out = set()
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flat_keys(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def documented(table: dict) -> set[str]:
    return {f"{row.section}.{row.key}" for row in describe(table)}


def shipped_radiomics() -> dict:
    text = resources.files("sarcograde").joinpath("configs", "radiomics.yaml").read_text()
    return yaml.safe_load(text)


# --- the table against what the code and the shipped files hold ------------------------------

def test_the_presets_and_the_radiomics_settings_pass_the_table_and_hold_all_of_it():
    for name in PRESETS:
        preset = load_preset(name)              # checked against the table as it loads
        assert preset.pop("preset") == name
        # every key but the optional ones (model.dropout; train.augment's mapping) is spelt out
        assert flat_keys(preset) == documented(SETTINGS) - {"model.dropout"} - {
            f"train.augment.{k}" for k in AUGMENT}
    assert flat_keys(shipped_radiomics()) == documented(RADIOMICS)
    load_settings()


def test_the_table_follows_the_dataclasses_that_read_it():
    assert list(PREPROCESS) == [f.name for f in dataclasses.fields(Params)]
    assert list(AUGMENT) == [f.name for f in dataclasses.fields(AugmentParams)]
    assert set(RADIOMICS["preprocess"]) <= set(PREPROCESS)


def test_every_key_has_a_one_line_description():
    rows = describe(STUDY_OVERRIDES)
    assert len({(r.section, r.key) for r in rows}) == len(rows)
    assert {"train.max_epochs", "train.augment.zoom", "model.dropout", "evaluate.bootstrap",
            "radiomics.features.bin_width"} <= {f"{r.section}.{r.key}" for r in rows}
    for row in rows:
        assert row.description.strip() and "\n" not in row.description, row


# --- unknown keys, with the nearest known one ------------------------------------------------

@pytest.mark.parametrize("values, problem", [
    ({"train": {"max_epoch": 2}},
     "unknown setting train.max_epoch; did you mean train.max_epochs?"),
    ({"trian": {"folds": 2}}, "unknown section trian; did you mean train?"),
    ({"train": {"augment": {"flip": 0.1}}},
     "unknown setting train.augment.flip; did you mean train.augment.flip_p?"),
    ({"model": {"xyz": 1}}, "unknown setting model.xyz; known: architecture, init_features, "
                            "growth_rate, block_config, pretrained, dropout"),
    ({"preset": "quick"}, "unknown section preset; known: preprocess, model, train"),
])
def test_an_unknown_key_is_named_with_the_nearest_known_one(values, problem):
    with pytest.raises(SarcogradeError) as caught:
        check_settings(values, path="my.yaml")
    assert str(caught.value) == f"my.yaml: {problem}"


# --- values of the wrong type or out of range ------------------------------------------------

@pytest.mark.parametrize("values, problem", [
    ({"train": {"patience": -1}}, "train.patience -1 is not a whole number >= 0"),
    ({"train": {"patience": 2.5}}, "train.patience 2.5 is not a whole number >= 0"),
    ({"train": {"max_epochs": None}}, "train.max_epochs null is not a whole number >= 1"),
    ({"train": {"folds": 1}}, "train.folds 1 is not a whole number >= 2"),
    ({"train": {"batch_size": True}}, "train.batch_size true is not a whole number >= 1"),
    ({"train": {"learning_rate": 0}}, "train.learning_rate 0 is not a number > 0"),
    ({"train": {"learning_rate": "1e-4"}}, "train.learning_rate '1e-4' is not a number > 0 (YAML "
     "reads it as text: write numbers unquoted, and 1.0e-4 rather than 1e-4)"),
    ({"train": {"precision": "bf17"}}, "train.precision 'bf17' is not auto, fp32, bf16 or fp16"),
    ({"train": {"class_weights": "balanced"}},
     "train.class_weights 'balanced' is not inverse_frequency or none"),
    ({"train": {"concurrent_folds": 0}},
     "train.concurrent_folds 0 is not auto or a whole number >= 1"),
    ({"train": {"channels_last": "yes"}}, "train.channels_last 'yes' is not auto, true or false"),
    ({"train": {"checkpoint_every_s": -5}},
     "train.checkpoint_every_s -5 is not a number of seconds >= 0"),
    ({"train": {"augment": "none"}}, "train.augment 'none' is not true, false or a mapping of "
     "flip_p, rotate_deg, rotate_p, zoom, zoom_p, crop_min, crop_p, elastic_sd, elastic_grid, "
     "elastic_p"),
    ({"train": {"augment": {"zoom": [1.1, 0.9]}}}, "train.augment.zoom [1.1, 0.9] is not a "
     "[low, high] pair of numbers > 0 with low <= high"),
    ({"train": {"augment": {"flip_p": 1.5}}}, "train.augment.flip_p 1.5 is not a number in [0, 1]"),
    ({"train": 3}, "train 3 is not a mapping of settings"),
    ({"model": {"dropout": 1}}, "model.dropout 1 is not a number in [0, 1)"),
    ({"model": {"architecture": "resnet"}},
     "model.architecture 'resnet' is not densenet161 or densenet"),
    ({"model": {"block_config": [6, 0]}},
     "model.block_config [6, 0] is not a non-empty list of whole numbers >= 1"),
    ({"model": {"pretrained": ""}}, "model.pretrained '' is not none, imagenet or a file path"),
    ({"preprocess": {"n4_grid_mm": "fine"}},
     "preprocess.n4_grid_mm 'fine' is not auto or a number of mm >= 0"),
    ({"preprocess": {"n4_iterations": []}},
     "preprocess.n4_iterations [] is not a non-empty list of whole numbers >= 1"),
    ({"preprocess": {"spacing_mm": 0}}, "preprocess.spacing_mm 0 is not a number of mm > 0"),
])
def test_a_bad_value_says_what_the_key_takes(values, problem):
    with pytest.raises(SarcogradeError) as caught:
        check_settings(values, path="my.yaml")
    assert str(caught.value) == f"my.yaml: {problem}"


@pytest.mark.parametrize("values", [
    {"preprocess": {"n4_grid_mm": "auto"}}, {"preprocess": {"n4_grid_mm": 6}},
    {"train": {"precision": "fp32", "concurrent_folds": "auto", "channels_last": False}},
    {"train": {"concurrent_folds": 3, "augment": {"zoom": [1, 1], "elastic_p": 0}}},
    {"train": {"augment": False}},
    {"model": {"pretrained": "weights/densenet161.pth", "dropout": 0.2}},
    {"model": {"pretrained": "imagenet"}},
])
def test_values_the_presets_use_and_their_alternatives_pass(values):
    check_settings(values)


@pytest.mark.parametrize("values, problem", [
    ({"features": {"bin_wdth": 1}},
     "unknown radiomics setting features.bin_wdth; did you mean features.bin_width?"),
    ({"features": {"intensity_range": [1, 0]}}, "features.intensity_range [1, 0] is not a "
     "[low, high] pair of numbers with low < high, high may be null"),
    ({"features": {"families": ["glcm", "wavelet"]}}, "features.families ['glcm', 'wavelet'] "
     "is not a non-empty list of morphology, statistics, glcm, glrlm, glszm, ngtdm or ngldm"),
    ({"model": {"max_correlation": 0}},
     "model.max_correlation 0 is not a number in (0, 1]"),
    ({"model": {"inner_folds": 1}}, "model.inner_folds 1 is not a whole number >= 2"),
    ({"preprocess": {"size": 64}}, "unknown radiomics setting preprocess.size; known: "
     "spacing_mm, n4, n4_grid_mm, n4_iterations"),
])
def test_the_radiomics_settings_file_is_held_against_its_table(tmp_path, values, problem):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(SarcogradeError) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}: {problem}"
    assert load_settings(None).features["intensity_range"] == [-5.0, None]


# --- every source ----------------------------------------------------------------------------

def test_a_preset_with_a_typo_does_not_load(tmp_path, monkeypatch):
    shipped = resources.files("sarcograde").joinpath("configs", "quick.yaml").read_text()
    (tmp_path / "configs").mkdir()
    preset = tmp_path / "configs" / "quick.yaml"
    preset.write_text(shipped.replace("patience:", "patiense:"))
    monkeypatch.setattr(config.resources, "files", lambda package: tmp_path)
    with pytest.raises(SarcogradeError) as caught:
        load_preset("quick")
    assert str(caught.value) == (f"{preset}: unknown setting train.patiense; did you mean "
                                 "train.patience?")


def test_command_line_values_are_checked_too(tmp_path):
    with pytest.raises(SarcogradeError, match=r"^train.folds 1 is not a whole number >= 2$"):
        load_config("quick", None, {"train": {"folds": 1, "repeats": None}})
    assert load_config("quick", None, {"train": {"folds": None}})["train"]["folds"] == 5


def run_cli(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err.strip()


def test_train_refuses_a_typo_in_its_config_before_any_work(tmp_path, capsys):
    user = tmp_path / "my.yaml"
    user.write_text("train: {max_epoch: 2}\n")
    out = tmp_path / "run"
    err = run_cli(["train", str(tmp_path / "no-cache"), "--out", str(out), "--preset", "quick",
                   "--config", str(user)], capsys)
    assert err == (f"sarcograde train: error: {user}: unknown setting train.max_epoch; did you "
                   "mean train.max_epochs?")
    assert not out.exists()
    user.write_text("train: {patience: -1}\n")
    err = run_cli(["train", str(tmp_path / "no-cache"), "--out", str(out), "--config", str(user)],
                  capsys)
    assert err == f"sarcograde train: error: {user}: train.patience -1 is not a whole number >= 0"
    assert not out.exists()


def test_preprocess_refuses_bad_settings_and_flags_before_any_work(tmp_path, capsys):
    user = tmp_path / "my.yaml"
    user.write_text("preprocess: {n4_grid: 4}\n")
    out = tmp_path / "cache"
    common = ["preprocess", str(tmp_path / "manifest.csv"), "--out", str(out)]
    err = run_cli([*common, "--config", str(user)], capsys)
    assert err == (f"sarcograde preprocess: error: {user}: unknown setting preprocess.n4_grid; "
                   "did you mean preprocess.n4_grid_mm?")
    err = run_cli([*common, "--n4-grid-mm", "fine"], capsys)
    assert err == ("sarcograde preprocess: error: preprocess.n4_grid_mm 'fine' is not auto or a "
                   "number of mm >= 0")
    err = run_cli([*common, "--size", "4"], capsys)
    assert err.endswith("preprocess.size 4 is not a whole number of pixels >= 8")
    assert not out.exists()


@pytest.mark.parametrize("action", ["extract", "fit"])
def test_radiomics_refuses_a_typo_in_its_settings_before_any_work(tmp_path, capsys, action):
    user = tmp_path / "my.yaml"
    user.write_text("model: {inner_fold: 4}\n")
    out = tmp_path / "out"
    argv = (["radiomics", "extract", str(tmp_path / "manifest.csv")] if action == "extract" else
            ["radiomics", "fit", str(tmp_path / "features.csv"), "--manifest",
             str(tmp_path / "manifest.csv")])
    err = run_cli([*argv, "--out", str(out), "--config", str(user)], capsys)
    assert err == (f"sarcograde radiomics: error: {user}: unknown radiomics setting "
                   "model.inner_fold; did you mean model.inner_folds?")
    assert not out.exists()


@pytest.fixture
def manifest(tmp_path) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text("patient_id,grade,image_T2,mask_T2\nP1,high,p1.nii.gz,m1.nii.gz\n")
    return path


@pytest.mark.parametrize("overrides, problem", [
    ({"train": {"max_epoch": 2}},
     "unknown setting overrides.train.max_epoch; did you mean overrides.train.max_epochs?"),
    ({"evaluation": {"bootstrap": 10}},
     "unknown section overrides.evaluation; did you mean overrides.evaluate?"),
    ({"evaluate": {"bootstrap": 0}}, "overrides.evaluate.bootstrap 0 is not a whole number >= 1"),
    ({"radiomics": {"features": {"bin_wdth": 1}}}, "unknown setting "
     "overrides.radiomics.features.bin_wdth; did you mean overrides.radiomics.features.bin_width?"),
    ({"radiomics": {"model": {"Cs": [0.1, -1]}}},
     "overrides.radiomics.model.Cs [0.1, -1] is not a non-empty list of numbers > 0"),
    ({"model": {"dropout": 2}}, "overrides.model.dropout 2 is not a number in [0, 1)"),
])
def test_a_study_refuses_bad_overrides_before_any_stage(tmp_path, capsys, manifest, overrides,
                                                        problem):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"train": str(manifest), "test": {"B": str(manifest)},
                                     "sequences": ["T2"], "models": ["dl"],
                                     "overrides": overrides}))
    out = tmp_path / "out"
    err = run_cli(["study", str(study), "--out", str(out)], capsys)
    assert err == f"sarcograde study: error: {study}: {problem}"
    assert not out.exists()
