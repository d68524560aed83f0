"""sarcograde.formats.run: run config, folds.json, fold models, checkpoints and out-of-fold
predictions; every damaged file is one line saying what is wrong."""

from __future__ import annotations

import json
import pickle
import zipfile

import pandas as pd
import pytest
import torch

from fakes import calibrated_model, write_run
from sarcograde.errors import SarcogradeError
from sarcograde.formats.records import record_path
from sarcograde.formats.run import (Folds, read_checkpoint, read_cv_predictions, read_fold_model,
                                    read_folds, read_run_config, write_checkpoint, write_folds)
from sarcograde.splits import make_splits
from sarcograde.train import fold as train_fold


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("run"), [calibrated_model(1), calibrated_model(2)])


def message_of(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_folds_round_trip(tmp_path):
    ids = [f"P{i:02d}" for i in range(12)]
    splits, adaptation = make_splits(ids, [0, 1] * 6, folds=3, repeats=2, seed=4)
    folds = Folds(folds=3, repeats=2, seed=4, splits=splits, folds_requested=5,
                  adaptation=adaptation)
    write_folds(tmp_path, folds)
    back = read_folds(tmp_path)
    assert back.splits == splits and back.names == [f"fold_{i:02d}" for i in range(6)]
    assert json.loads((tmp_path / "folds.json").read_text())["folds_requested"] == 5


@pytest.mark.parametrize("content, problem", [
    ("{", "corrupt JSON"), ('{"folds": 2}', "bad or missing 'splits'"),
    ('{"folds": 1, "repeats": 1, "splits": []}', "lists no fold"),
    ('{"folds": 1, "repeats": 1, "splits": [{"name": "../x", "repeat": 0, "fold": 0, '
     '"train": [], "val": []}]}', "'../x' is not fold_XX"),
    ('{"folds": 1, "repeats": 1, "splits": [{"name": "fold_00", "repeat": 0, "fold": 0, '
     '"train": ["../../etc"], "val": []}]}', "cannot be a file name"),
])
def test_a_malformed_folds_json_is_refused(tmp_path, content, problem):
    (tmp_path / "folds.json").write_text(content)
    with pytest.raises(SarcogradeError, match="folds.json: ") as exc:
        read_folds(tmp_path)
    assert problem in message_of(exc)


def test_a_corrupt_run_config_says_to_rerun_train(tmp_path):
    assert read_run_config(tmp_path, required=False) is None
    (tmp_path / "config.json").write_text('{"model": ')
    with pytest.raises(SarcogradeError) as exc:
        read_run_config(tmp_path)
    assert message_of(exc).endswith("rerun `sarcograde train`")


def test_fold_model_reads_back(run):
    payload = read_fold_model(run / "fold_01" / "model.pt")
    assert payload["fold"] == 1 and payload["input"]["size"] == 32


def test_a_truncated_model_says_what_is_wrong(run, tmp_path):
    data = (run / "fold_00" / "model.pt").read_bytes()
    for name, content in (("truncated.pt", data[: len(data) // 3]), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SarcogradeError) as exc:
            read_fold_model(tmp_path / name)
        message = message_of(exc)
        assert f"{name}: not a readable sarcograde fold model: truncated" in message
        assert "Errno" not in message


def test_an_unsafe_model_is_refused_for_safety(tmp_path):
    torch.save({"state_dict": {}, "model": {}, "input": {}, "preprocess": {},
                "payload": pickle.loads(pickle.dumps(zipfile.ZipInfo("x")))},
               tmp_path / "unsafe.pt")
    with pytest.raises(SarcogradeError) as exc:
        read_fold_model(tmp_path / "unsafe.pt")
    message = message_of(exc)
    assert "unsafe.pt: sarcograde fold model refused for safety" in message
    assert "weights_only" not in message


def test_a_model_file_without_the_fold_fields(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(SarcogradeError, match="plain.pt: not a readable sarcograde fold model: "
                                              "no model, input, preprocess"):
        read_fold_model(tmp_path / "plain.pt")


def test_a_damaged_checkpoint_is_reported_and_the_fold_starts_over(tmp_path, capsys):
    path = tmp_path / train_fold.CHECKPOINT
    write_checkpoint(path, {"config_hash": "abc", "history": []})
    assert read_checkpoint(path)["config_hash"] == "abc"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SarcogradeError, match="training checkpoint: truncated"):
        read_checkpoint(path)
    assert train_fold._read_checkpoint(path) is None
    err = " ".join(capsys.readouterr().err.split())  # the console may wrap; the words count
    assert "checkpoint.pt: not a readable training checkpoint: truncated" in err
    assert err.endswith("this fold starts over")


def test_cv_predictions_are_checked(tmp_path):
    path = tmp_path / "cv_predictions.csv"
    pd.DataFrame({"patient_id": ["A", "B"], "repeat": 0, "fold": [0, 1], "label": [0, 1],
                  "p_high": [0.2, 1.5]}).to_csv(path, index=False)
    with pytest.raises(SarcogradeError, match="B: .*p_high 1.5 is not a probability"):
        read_cv_predictions(path)
    pd.DataFrame({"patient_id": ["A"], "p_high": [0.2]}).to_csv(path, index=False)
    with pytest.raises(SarcogradeError, match="no column"):
        read_cv_predictions(path)


def test_run_records_follow_one_naming_rule(tmp_path):
    assert record_path(tmp_path) == tmp_path / "run.json"
    (tmp_path / "predictions.csv").write_text("")
    assert record_path(tmp_path / "predictions.csv") == tmp_path / "predictions.run.json"
    assert record_path(tmp_path / "qa.csv") == tmp_path / "qa.run.json"


def test_train_refuses_a_run_folder_with_a_corrupt_config(tmp_path, capsys):
    from fakes import cohort, graded_cache
    from sarcograde.cli import main

    cache = graded_cache(tmp_path / "cache", cohort(2, 2))
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"config_hash": ')
    assert main(["train", str(cache), "--out", str(out), "--preset", "quick"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "config.json: corrupt JSON" in err and "use a new --out folder" in err
    assert not (out / "folds.json").exists()
