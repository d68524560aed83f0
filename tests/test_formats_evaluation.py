"""formats.evaluation, formats.records and formats.study: evaluate's outputs, the run records and
study.json as the report reads them; each malformed input is a one-line error naming the file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sarcograde.errors import SarcogradeError
from sarcograde.formats import evaluation
from sarcograde.formats.evaluation import (compares_models, read_cohort_table, read_figure,
                                           read_model_metrics, read_output_json)
from sarcograde.formats.records import read_record, record_path
from sarcograde.formats.study import read_study


def write_metrics(folder, metrics) -> None:
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


def one_line(caught) -> str:
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_several_models_metrics_are_read_and_told_from_one_model(tmp_path):
    auc = {"value": 0.7, "ci95": [0.6, 0.8]}
    write_metrics(tmp_path, {"models": {"dl": {"auc": auc}, "clinical": {"auc": auc}},
                             "delong": [{"a": "dl", "b": "clinical", "p": 0.2}]})
    assert set(read_model_metrics(tmp_path)["models"]) == {"dl", "clinical"}
    assert compares_models(tmp_path)
    write_metrics(tmp_path, {"auc": auc})
    assert not compares_models(tmp_path) and not compares_models(tmp_path / "absent")
    # evaluate of one prediction file lists its baselines under `models` beside its own `auc`
    write_metrics(tmp_path, {"auc": auc, "models": {"DL": {"predictions": "p.csv", "auc": auc},
                                                    "clinical": {"auc": auc}}})
    assert not compares_models(tmp_path)
    write_metrics(tmp_path, {"auc": auc, "models": {"A": {"predictions": "a.csv", "auc": auc},
                                                    "B": {"predictions": "b.csv", "auc": auc}}})
    assert compares_models(tmp_path)


@pytest.mark.parametrize("metrics, problem", [
    ({"auc": 0.7}, "no 'models'"),
    ({"models": {}}, "'models' is empty or not a mapping"),
    ({"models": ["dl"]}, "'models' is empty or not a mapping"),
    ({"models": {"dl": 0.7}}, "model(s) dl: not a mapping of metrics"),
    ({"models": {"dl": {}}, "delong": {"a": "dl"}}, "'delong' is not a list"),
    ({"models": {"dl": {}}, "delong": [{"a": "dl"}]}, "'delong' is not a list"),
])
def test_malformed_several_models_metrics_are_refused(tmp_path, metrics, problem):
    write_metrics(tmp_path, metrics)
    with pytest.raises(SarcogradeError) as caught:
        read_model_metrics(tmp_path)
    message = one_line(caught)
    assert str(tmp_path / "metrics.json") in message and problem in message


def test_flow_and_survival_must_be_objects(tmp_path):
    path = tmp_path / "patient_flow.json"
    assert read_output_json(path) is None
    path.write_text('{"included": 3}', encoding="utf-8")
    assert read_output_json(path) == {"included": 3}
    path.write_text("[3]", encoding="utf-8")
    with pytest.raises(SarcogradeError, match="expected an object.*rerun `sarcograde evaluate`"):
        read_output_json(path)


def test_a_figure_must_be_a_png(tmp_path):
    path = tmp_path / "roc.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"rest")
    assert read_figure(path).endswith(b"rest")
    path.write_bytes(b"GIF89a")
    with pytest.raises(SarcogradeError, match="roc.png: not a PNG image"):
        read_figure(path)
    with pytest.raises(SarcogradeError, match="absent.png: cannot read figure"):
        read_figure(tmp_path / "absent.png")


def test_table_one_prefers_the_markdown_with_its_notes(tmp_path):
    assert read_cohort_table(tmp_path) is None
    (tmp_path / "cohort_table.csv").write_text("Characteristic,Low\nAge,50\n", encoding="utf-8")
    table = read_cohort_table(tmp_path)
    assert table.header == ["Characteristic", "Low"] and table.rows == [["Age", 50]]
    (tmp_path / "cohort_table.md").write_text(
        "# Table 1\n\n| Characteristic | Low |\n|---|---:|\n| Age | 50 |\n\nTests: t-test.\n",
        encoding="utf-8")
    table = read_cohort_table(tmp_path)
    assert (table.header, table.rows, table.notes) == (
        ["Characteristic", "Low"], [["Age", "50"]], ["Tests: t-test."])


def test_run_records_follow_the_naming_rule_and_are_checked(tmp_path):
    page = tmp_path / "report.html"
    assert record_path(page) == tmp_path / "report.run.json"
    assert record_path(tmp_path) == tmp_path / "run.json"
    assert read_record(record_path(page)) is None
    record_path(page).write_text('{"status": "finished"}', encoding="utf-8")
    assert read_record(record_path(page)) == {"status": "finished"}
    record_path(page).write_text('"finished"', encoding="utf-8")
    with pytest.raises(SarcogradeError, match="report.run.json: corrupt JSON"):
        read_record(record_path(page))


def test_study_json_is_optional_but_checked(tmp_path):
    assert read_study(tmp_path) is None
    (tmp_path / "study.json").write_text('{"config": {"seed": 3}}', encoding="utf-8")
    assert read_study(tmp_path) == {"config": {"seed": 3}}
    (tmp_path / "study.json").write_text("{", encoding="utf-8")
    with pytest.raises(SarcogradeError, match="study.json: corrupt JSON.*rerun `sarcograde study`"):
        read_study(tmp_path)


# ------------------------------------------------------------------ writers: write, then read back

@pytest.mark.parametrize("write, read", [
    (evaluation.write_metrics, evaluation.read_metrics),
    (evaluation.write_patient_flow, evaluation.read_patient_flow),
    (evaluation.write_survival, evaluation.read_survival)])
def test_json_outputs_read_back_as_written(tmp_path, write, read):
    content = {"auc": {"value": 0.75, "ci95": [0.6, 0.9]}, "n": 3, "included": ["007", "A 1"],
               "note": None}
    write(tmp_path, content)
    assert read(tmp_path) == content


def test_confusion_reads_back_and_a_foreign_one_is_refused(tmp_path):
    rows = [{"model": "DL", "rule": "argmax", "threshold": 0.5, "tn": 3, "fp": 1, "fn": 0, "tp": 4},
            {"model": "DL", "rule": "youden", "threshold": 0.37, "tn": 2, "fp": 2, "fn": 1,
             "tp": 3}]
    assert evaluation.read_confusion(tmp_path) is None
    evaluation.write_confusion(tmp_path, rows)
    pd.testing.assert_frame_equal(evaluation.read_confusion(tmp_path), pd.DataFrame(rows))
    (tmp_path / evaluation.CONFUSION).write_text("model,tn\nDL,3\n", encoding="utf-8")
    with pytest.raises(SarcogradeError) as caught:
        evaluation.read_confusion(tmp_path)
    assert "no column(s) rule, threshold, fp, fn, tp" in one_line(caught)


def test_model_tables_read_back_as_written(tmp_path):
    baselines = pd.DataFrame({"model": ["dl", "clinical"], "label": ["DL", "Clinical"],
                              "n": [10, 10], "threshold": [0.5, 0.5], "auc": [0.8, 0.65]})
    evaluation.write_baselines(tmp_path, baselines)
    pd.testing.assert_frame_equal(evaluation.read_baselines(tmp_path), baselines)
    table = baselines[["model", "n", "auc"]]
    evaluation.write_table2(tmp_path, table, "Table 2\n\n| model | n |\n")
    frame, markdown = evaluation.read_table2(tmp_path)
    pd.testing.assert_frame_equal(frame, table)
    assert markdown == "Table 2\n\n| model | n |\n"


def test_delong_pairs_read_back_without_their_ci(tmp_path):
    pairs = [{"a": "DL", "b": "clinical", "auc_a": 0.8, "auc_b": 0.65, "difference": 0.15,
              "z": 1.2, "ci95": [-0.1, 0.4], "p": 0.23, "p_adjusted": 0.69},
             {"a": "DL", "b": "volume", "p": None, "p_adjusted": None, "note": "one class"}]
    evaluation.write_delong(tmp_path, pairs)
    read = evaluation.read_delong(tmp_path)
    assert list(read.columns) == list(evaluation.DELONG_COLUMNS)
    assert read.iloc[0][["a", "b", "auc_a", "difference", "p_adjusted"]].tolist() == [
        "DL", "clinical", 0.8, 0.15, 0.69]
    assert read.iloc[1]["note"] == "one class" and read[["p", "z"]].iloc[1].isna().all()


def test_baseline_predictions_read_back_as_written(tmp_path):
    p = {"dl": np.array([0.2, 0.9]), "clinical": np.array([0.4, 0.6])}
    evaluation.write_baseline_predictions(tmp_path, ["007", "B"], np.array([0, 1]), p)
    read = evaluation.read_baseline_predictions(tmp_path)
    assert read.columns.tolist() == ["patient_id", "label", "p_dl", "p_clinical"]
    assert read["patient_id"].tolist() == ["007", "B"] and read["label"].tolist() == [0, 1]
    np.testing.assert_array_equal(read["p_dl"], p["dl"])
    np.testing.assert_array_equal(read["p_clinical"], p["clinical"])


def test_cohort_table_reads_back_from_markdown_then_csv(tmp_path):
    frame = pd.DataFrame({"characteristic": ["Age", "Grade high"], "Training": ["50", "10"],
                          "Test": ["55", "4"]})
    markdown = ("| characteristic | Training | Test |\n| --- | --- | --- |\n"
                "| Age | 50 | 55 |\n| Grade high | 10 | 4 |\n\nMann-Whitney U test for age.\n")
    evaluation.write_cohort_table(tmp_path, frame, markdown)
    table = read_cohort_table(tmp_path)
    assert table.header == list(frame.columns)
    assert table.rows == frame.values.tolist() and table.notes == ["Mann-Whitney U test for age."]
    (tmp_path / evaluation.COHORT_TABLE_MD).unlink()
    from_csv = read_cohort_table(tmp_path)
    assert from_csv.header == list(frame.columns)
    assert [[str(c) for c in row] for row in from_csv.rows] == frame.values.tolist()


def test_tumour_volumes_read_back_and_a_foreign_cache_is_ignored(tmp_path):
    path = evaluation.tumour_volumes_path(tmp_path, "train")
    assert path.name == "tumour_volumes_train.csv"
    rows = [{"patient_id": "007", "sequence": "T1", "mask": "m.nii.gz", "key": "abc",
             "voxels": 1234, "voxel_ml": 0.1 + 0.2, "volume_ml": 1234 * (0.1 + 0.2)}]
    evaluation.write_tumour_volumes(path, rows)
    hit = evaluation.read_tumour_volumes(path)[("007", "T1", "abc")]
    assert {k: getattr(hit, k) for k in rows[0]} == rows[0]  # exact floats
    path.write_text("patient_id,volume_ml\n007,3.1\n", encoding="utf-8")
    assert evaluation.read_tumour_volumes(path) == {}
