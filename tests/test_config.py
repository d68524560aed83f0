"""Presets and their merging with a user's YAML file and command-line overrides."""

from __future__ import annotations

import pytest

from sarcograde.config import PRESETS, load_config, load_preset, merge
from sarcograde.errors import SarcogradeError


def keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= keys(value, prefix + key + ".")
    return out


def test_presets_follow_the_paper_and_quick_keeps_every_setting():
    paper = load_preset("paper")
    assert paper["preset"] == "paper"
    # Navarro et al. 2021: 1 mm isotropic, 224 px, DenseNet-161, batch 30, Adam 1e-4, 100 epochs,
    # stratified 5-fold CV x 3 repeats.
    assert paper["preprocess"]["spacing_mm"] == 1.0 and paper["preprocess"]["size"] == 224
    assert paper["model"]["architecture"] == "densenet161"
    assert (paper["train"]["batch_size"], paper["train"]["learning_rate"],
            paper["train"]["max_epochs"]) == (30, 1e-4, 100)
    assert (paper["train"]["folds"], paper["train"]["repeats"]) == (5, 3)
    assert keys(load_preset("quick")) == keys(paper)     # same settings, smaller values
    with pytest.raises(SarcogradeError, match="unknown preset 'fast'; choose one of paper, quick"):
        load_preset("fast")
    assert PRESETS == ("paper", "quick")


def test_merge_is_recursive_ignores_none_and_copies():
    base = {"train": {"folds": 5, "repeats": 3}, "model": {"size": [1, 2]}}
    merged = merge(base, {"train": {"repeats": 1, "folds": None}, "new": 1})
    assert merged == {"train": {"folds": 5, "repeats": 1}, "model": {"size": [1, 2]}, "new": 1}
    merged["model"]["size"].append(3)
    assert base == {"train": {"folds": 5, "repeats": 3}, "model": {"size": [1, 2]}}


def test_file_then_overrides_on_top_of_the_preset(tmp_path):
    (tmp_path / "site.yaml").write_text("train:\n  max_epochs: 40\n  patience: 5\n"
                                        "preprocess:\n  n4: false\n")
    config = load_config("paper", tmp_path / "site.yaml",
                         overrides={"train": {"patience": 7, "seed": None}})
    assert config["train"]["max_epochs"] == 40              # from the file
    assert config["train"]["patience"] == 7                 # the flag wins over the file
    assert "seed" not in config["train"]                    # an unset flag changes nothing
    assert config["train"]["batch_size"] == 30              # untouched preset value
    assert config["preprocess"]["n4"] is False and config["preprocess"]["size"] == 224
    assert load_config("quick")["train"]["max_epochs"] == load_preset("quick")["train"]["max_epochs"]


@pytest.mark.parametrize("old, new", [("bf16", "bf16"), ("none", "fp32"), ("auto", "auto")])
def test_train_amp_in_a_config_file_is_the_old_name_of_train_precision(tmp_path, capsys, old,
                                                                       new):
    (tmp_path / "new.yaml").write_text(f"train:\n  precision: {new}\n  max_epochs: 2\n")
    (tmp_path / "old.yaml").write_text(f"train:\n  amp: {old}\n  max_epochs: 2\n")
    expected = load_config("quick", tmp_path / "new.yaml")
    assert capsys.readouterr().err == ""
    assert load_config("quick", tmp_path / "old.yaml") == expected
    assert expected["train"]["precision"] == new and "amp" not in expected["train"]
    assert capsys.readouterr().err == (
        f"{tmp_path / 'old.yaml'}: note: train.amp: {old} is deprecated; use train.precision: "
        f"{new} (the old name goes in the next version)\n")


@pytest.mark.parametrize("text, problem", [
    ("train:\n  amp: bf16\n  precision: fp32\n", "train.amp and train.precision are one setting "
     "(amp is its old name); give train.precision only"),
    ("trian:\n  folds: 3\n", "unknown section trian; did you mean train?"),
    ("- 1\n- 2\n", "config must be a mapping of sections"),
    ("train: [unclosed\n", "cannot read config"),
])
def test_bad_config_files_name_the_file(tmp_path, text, problem):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SarcogradeError) as info:
        load_config("quick", path)
    assert str(info.value).startswith(f"{path}: {problem}")


def test_missing_config_file(tmp_path):
    with pytest.raises(SarcogradeError, match="cannot read config"):
        load_config("quick", tmp_path / "none.yaml")
