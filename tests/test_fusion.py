"""DL-fusion: a logistic regression on the sequences' out-of-fold logit margins, fitted on the
training cohort only, applied to each site; a patient missing a sequence gets the sub-model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from sarcograde import cli
from sarcograde.fusion import apply, fit, margin

SEQUENCES = ("T1FSGd", "T2FS")


def _cv_predictions(path, labels: np.ndarray, signal: float, seed: int, repeats: int = 2):
    """A training run's cv_predictions.csv: every patient validated once per repeat."""
    rng = np.random.default_rng(seed)
    rows = []
    for repeat in range(repeats):
        z = signal * (2 * labels - 1) + rng.normal(0, 1, len(labels))
        p = 1 / (1 + np.exp(-z))
        rows += [{"patient_id": f"P{i:02d}", "repeat": repeat, "fold": i % 2,
                  "label": int(labels[i]), "p_high": p[i]} for i in range(len(labels))]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def training(tmp_path):
    labels = np.random.default_rng(0).integers(0, 2, 40)
    runs = {}
    for k, seq in enumerate(SEQUENCES):
        (tmp_path / seq).mkdir()
        _cv_predictions(tmp_path / seq / "cv_predictions.csv", labels, 1.0 + k, seed=k)
        runs[seq] = tmp_path / seq
    return runs


def _site(tmp_path, rng_seed: int, with_labels: np.ndarray | None = None):
    """A test site's DL-<SEQ>.csv files (predict's columns, plus a label column to poison)."""
    rng = np.random.default_rng(rng_seed)
    tmp_path.mkdir()
    files = {}
    for seq in SEQUENCES:
        frame = pd.DataFrame({"patient_id": [f"T{i}" for i in range(10)],
                              "p_high": rng.uniform(0.05, 0.95, 10)})
        frame["predicted"] = (frame["p_high"] > 0.5).astype(int)
        if with_labels is not None:
            frame["label"] = with_labels
        files[seq] = tmp_path / f"DL-{seq}.csv"
        frame.to_csv(files[seq], index=False)
    return files


def test_the_fitted_model_is_sklearns_logistic_regression_on_mean_oof_margins(training):
    model = fit({seq: run / "cv_predictions.csv" for seq, run in training.items()})
    # Independent recomputation: mean margin over repeats per patient, then scikit-learn.
    tables = {seq: pd.read_csv(run / "cv_predictions.csv") for seq, run in training.items()}
    x = np.column_stack([
        tables[seq].assign(m=np.log(tables[seq].p_high / (1 - tables[seq].p_high)))
        .groupby("patient_id")["m"].mean().sort_index().to_numpy() for seq in SEQUENCES])
    y = tables["T2FS"].groupby("patient_id")["label"].first().sort_index().to_numpy()
    expected = LogisticRegression().fit(x, y)
    full = model["models"][0]
    assert full["sequences"] == list(SEQUENCES) and full["n"] == 40
    np.testing.assert_allclose([full["coefficients"][s] for s in SEQUENCES], expected.coef_[0],
                               rtol=1e-4)
    assert full["intercept"] == pytest.approx(expected.intercept_[0], rel=1e-4, abs=1e-6)
    # the stronger sequence gets the larger weight
    assert full["coefficients"]["T2FS"] > full["coefficients"]["T1FSGd"] > 0
    # one sub-model per non-empty subset
    assert sorted(tuple(m["sequences"]) for m in model["models"]) == sorted(
        [SEQUENCES, ("T1FSGd",), ("T2FS",)])


def test_apply_by_hand_and_a_missing_sequence_uses_the_sub_model():
    model = {"sequences": ["A", "B"], "models": [
        {"sequences": ["A", "B"], "coefficients": {"A": 1.0, "B": 2.0}, "intercept": -0.5},
        {"sequences": ["A"], "coefficients": {"A": 3.0}, "intercept": 0.0},
        {"sequences": ["B"], "coefficients": {"B": 0.5}, "intercept": 1.0}]}
    a = pd.DataFrame({"patient_id": ["x", "y"], "p_high": [0.5, 0.8]})
    b = pd.DataFrame({"patient_id": ["x"], "p_high": [0.2]})
    table = apply(model, {"A": a, "B": b}).set_index("patient_id")
    # x: -0.5 + 1 * logit(0.5) + 2 * logit(0.2) = -0.5 + 0 - 2 ln 4
    z_x = -0.5 + 2 * np.log(0.2 / 0.8)
    assert table.loc["x", "p_high"] == pytest.approx(1 / (1 + np.exp(-z_x)))
    # y has no B: the A-only model, 3 * logit(0.8) = 3 ln 4
    assert table.loc["y", "p_high"] == pytest.approx(1 / (1 + np.exp(-3 * np.log(4))))
    assert table.loc["x", "sequences_used"] == "A+B" and table.loc["x", "complete"] == 1
    assert table.loc["y", "sequences_used"] == "A" and table.loc["y", "complete"] == 0
    assert table.loc["y", "predicted"] == 1


def test_margin_is_the_logit_and_stays_finite():
    assert margin([0.5, 0.8])[1] == pytest.approx(np.log(4))
    assert np.isfinite(margin([0.0, 1.0])).all()


def _fit_and_apply(runs, site, fusion_dir, out, flag="--sequence"):
    argv = ["fusion", "fit", *[a for s in SEQUENCES for a in ("--run", f"{s}={runs[s]}")],
            "--out", str(fusion_dir)]
    assert cli.main(argv) == 0
    argv = ["fusion", "apply", str(fusion_dir / "model.json"),
            *[a for s in SEQUENCES for a in (flag, f"{s}={site[s]}")],
            "--out", str(out)]
    assert cli.main(argv) == 0
    model = json.loads((fusion_dir / "model.json").read_text())
    return model, pd.read_csv(out)


def test_poisoned_test_labels_leave_the_fused_model_and_predictions_unchanged(training, tmp_path,
                                                                             capsys):
    truth = np.arange(10) % 2
    clean = _site(tmp_path / "clean", 5, truth)
    poisoned = _site(tmp_path / "poisoned", 5, 1 - truth)
    model_a, pred_a = _fit_and_apply(training, clean, tmp_path / "fa", tmp_path / "a.csv")
    capsys.readouterr()
    # with the old spelling of --sequence, deprecated: the same, and one note for both sequences
    model_b, pred_b = _fit_and_apply(training, poisoned, tmp_path / "fb", tmp_path / "b.csv",
                                     flag="--predictions")
    assert [line for line in capsys.readouterr().err.splitlines() if "note:" in line] == [
        "sarcograde fusion apply: note: --predictions is deprecated; use --sequence (the old "
        "spelling goes in the next version)"]
    assert model_a == model_b
    pd.testing.assert_frame_equal(pred_a, pred_b)
    # ...whereas poisoning the TRAINING labels does change it: the test above can fail.
    for run in training.values():
        frame = pd.read_csv(run / "cv_predictions.csv")
        frame["label"] = 1 - frame["label"]
        frame.to_csv(run / "cv_predictions.csv", index=False)
    model_c, _ = _fit_and_apply(training, clean, tmp_path / "fc", tmp_path / "c.csv")
    assert model_c["models"][0]["coefficients"] != model_a["models"][0]["coefficients"]


def test_bad_input_is_one_line(training, tmp_path, capsys):
    assert cli.main(["fusion", "fit", "--run", f"T2FS={training['T2FS']}",
                     "--out", str(tmp_path / "f")]) == 1
    assert cli.main(["fusion", "fit", "--run", "T2FS", "--out", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sarcograde fusion: error: fusion needs at least two sequences",
                   "sarcograde fusion: error: --run 'T2FS' is not SEQ=PATH"]
    assert not (tmp_path / "f" / "model.json").exists()
