"""formats.evaluation, formats.records and formats.study: evaluate's outputs, the run records and
study.json as the report reads them; each malformed input is a one-line error naming the file."""

from __future__ import annotations

import json

import pytest

from sarcograde.errors import SarcogradeError
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
