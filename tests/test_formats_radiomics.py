"""sarcograde.formats.radiomics: RUN/models.json gives back the fitted pipelines' predictions
exactly, and a missing, damaged or pickled file is refused in one line; the extraction's files
(features.csv, config.json, patients/<patient_id>.json) read back or are refused in one line."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from sarcograde.errors import SarcogradeError
from sarcograde.formats.radiomics import (FoldModel, PatientFeatures, RadiomicsModels,
                                          patient_features_path, read_extraction_config,
                                          read_features, read_patient_features,
                                          read_radiomics_models, write_extraction_config,
                                          write_features, write_patient_features,
                                          write_radiomics_models)
from sarcograde.radiomics.model import fit_cv
from sarcograde.radiomics.settings import load_settings
from sarcograde.splits import make_splits


def _features(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Signal in `a`, a near-copy of it, noise, a constant and values missing here and there."""
    grade = np.tile([0, 1], n // 2)
    x = pd.DataFrame(rng.normal(size=(n, 6)), columns=list("abcdef"),
                     index=[f"P{i:03d}" for i in range(n)])
    x["a"] += 1.2 * grade
    x["a_copy"] = x["a"] + 0.01 * rng.normal(size=n)
    x["constant"] = 2.0
    x.loc[x.index[::7], "b"] = np.nan
    x["rare"] = np.nan
    x.loc[x.index[0], "rare"] = 1.0  # no value in the training folds without this patient
    return x


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    rng = np.random.default_rng(3)
    x = _features(40, rng)
    labels = pd.Series(np.tile([0, 1], 20), index=x.index)
    splits, _ = make_splits(list(x.index), labels.to_numpy(), folds=4, repeats=2, seed=1)
    fit = fit_cv(x, labels, splits, load_settings().model, seed=0)
    run = tmp_path_factory.mktemp("run")
    write_radiomics_models(run, RadiomicsModels(
        fit.columns, splits, [FoldModel.from_pipeline(m) for m in fit.models], "abc"))
    return fit, run, _features(20, rng)


def message_of(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_models_read_back_predict_as_the_fitted_pipelines(fitted):
    fit, run, external = fitted
    stored = read_radiomics_models(run)
    assert stored.columns == fit.columns and stored.config_hash == "abc"
    assert [s.as_dict() for s in stored.splits] == [s.as_dict() for s in fit.splits]
    # the fixture exercises every step: a column dropped by the imputer in some folds only,
    # masks that drop columns, and missing values in the external patients
    assert any(not m.imputed.all() for m in stored.models)
    assert any(m.imputed.all() for m in stored.models)
    assert all(not m.variance_kept.all() and not m.correlation_kept.all() for m in stored.models)
    x = external[fit.columns].to_numpy(float)
    assert np.isnan(x).any()
    for pipeline, model in zip(fit.models, stored.models):
        p_pipeline = pipeline.predict_proba(x)[:, 1]
        p_json = 1 / (1 + np.exp(-model.decision_function(x)))
        np.testing.assert_allclose(p_json, p_pipeline, rtol=0, atol=1e-12)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle", "short coef", "bad mask",
                                    "no models"])
def test_a_damaged_models_json_is_refused_in_one_line(fitted, tmp_path, damage):
    _, run, _ = fitted
    text = (run / "models.json").read_text()
    spec = json.loads(text)
    path = tmp_path / "models.json"
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff not json")
    elif damage == "pickle":  # an old joblib file renamed: refused, not unpickled
        path.write_bytes(pickle.dumps({"columns": spec["columns"]}))
    else:
        if damage == "short coef":
            spec["models"][0]["lasso"]["coef"].pop()
        elif damage == "bad mask":
            spec["models"][1]["variance"]["kept"][0] = 1
        else:
            del spec["models"]
        path.write_text(json.dumps(spec))
    with pytest.raises(SarcogradeError) as exc:
        read_radiomics_models(tmp_path)
    message = message_of(exc)
    assert str(path) in message and "rerun `sarcograde radiomics fit`" in message


def test_a_missing_models_json_names_the_run_and_the_stage_to_rerun(tmp_path):
    with pytest.raises(SarcogradeError) as exc:
        read_radiomics_models(tmp_path)
    assert message_of(exc) == (f"{tmp_path}: no models.json: rerun `sarcograde radiomics fit`")


def test_patient_features_read_back_only_with_their_key(tmp_path):
    path = patient_features_path(tmp_path, "P1")
    assert path == tmp_path / "patients" / "P1.json"
    features = PatientFeatures({"stat_mean": 1.5, "cm_f1": float("nan")}, ["cm"], "too small")
    write_patient_features(path, "P1", "k1", features)
    back = read_patient_features(path, "k1")
    assert back.values["stat_mean"] == 1.5 and np.isnan(back.values["cm_f1"])
    assert (back.empty, back.reason) == (["cm"], "too small")
    assert read_patient_features(path) is not None       # any key
    assert read_patient_features(path, "k2") is None     # computed with other settings
    assert read_patient_features(tmp_path / "patients" / "P2.json") is None  # not computed yet
    for damaged in ("{not json", "[1, 2]", '{"key": "k1", "features": {}}'):
        path.write_text(damaged)
        assert read_patient_features(path, "k1") is None  # recomputed, never trusted
    with pytest.raises(SarcogradeError):
        patient_features_path(tmp_path, "../P1")


def test_the_extraction_config_is_none_when_absent_and_a_damaged_one_names_the_stage(tmp_path):
    assert read_extraction_config(tmp_path) is None
    write_extraction_config(tmp_path, {"sequence": "T2FS"})
    assert read_extraction_config(tmp_path) == {"sequence": "T2FS"}
    (tmp_path / "config.json").write_text("{truncated")
    with pytest.raises(SarcogradeError) as exc:
        read_extraction_config(tmp_path)
    message = message_of(exc)
    assert str(tmp_path / "config.json") in message
    assert "rerun `sarcograde radiomics extract`" in message


def test_features_read_back_exactly_and_a_bad_table_is_refused_in_one_line(tmp_path):
    frame = pd.DataFrame({"patient_id": ["007", "P2"], "stat_mean": [0.1 + 0.2, np.nan],
                          "morph_vol": [1e-17, 3.0]})
    write_features(tmp_path, frame)
    back = read_features(tmp_path / "features.csv")
    assert list(back.index) == ["007", "P2"]  # ids stay text
    assert back.loc["007", "stat_mean"] == 0.1 + 0.2 and np.isnan(back.loc["P2", "stat_mean"])
    assert back.loc["007", "morph_vol"] == 1e-17
    bad = {"twice.csv": ("patient_id,a\nP1,1\nP1,2\n", "patient P1 appears twice"),
           "text.csv": ("patient_id,a\nP1,high\n", "non-numeric feature value"),
           "ids.csv": ("a,b\n1,2\n", "not a features.csv"),
           "empty.csv": ("", "cannot read features")}
    for name, (text, problem) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SarcogradeError) as exc:
            read_features(tmp_path / name)
        assert message_of(exc).startswith(f"{tmp_path / name}: {problem}")
