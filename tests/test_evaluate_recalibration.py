"""Recalibration for a new site: fitted on the N recalibration patients only, evaluated on the
others only, and it corrects a site whose logits are shifted by a constant."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from sarcograde.errors import SarcogradeError
from sarcograde.evaluate.metrics import Scored
from sarcograde.evaluate.recalibration import recalibration, recalibration_split

from test_evaluate import PNG, _manifest, main


class _Patient:
    def __init__(self, pid):
        self.patient_id = pid


def _site(n=400, shift=1.5, seed=0):
    """A well-calibrated model moved to a site whose risk is higher: logits shifted by -shift."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0.3, 1.5, n)
    y = (rng.random(n) < expit(true_logit)).astype(int)
    p = expit(true_logit - shift)
    return y, p, [_Patient(f"P{i:03d}") for i in range(n)]


def _model(p):
    return Scored(name="DL", key="dl", shown="DL", p=p, block={})


def test_the_split_is_stratified_reproducible_and_disjoint():
    y, _, _ = _site()
    fit, rest = recalibration_split(y, 50, seed=3)
    assert len(fit) == 50 and len(rest) == 350 and not set(fit) & set(rest)
    assert abs(y[fit].mean() - y.mean()) < 0.02  # the class shares of the site
    again, _ = recalibration_split(y, 50, seed=3)
    assert fit.tolist() == again.tolist()
    with pytest.raises(SarcogradeError, match="--recalibrate 399: give between 2 and 398"):
        recalibration_split(y, 399, seed=3)


def test_a_shifted_site_is_corrected_and_the_fit_equals_scikit_learn():
    y, p, patients = _site()
    fit, rest = recalibration_split(y, 200, 0)
    block, after = recalibration([_model(p)], y, patients, (fit, rest), 0, 200)
    model = block["models"]["DL"]
    assert model["fit"] == "intercept and slope"  # 200 patients: both classes hold 20 or more
    reference = LogisticRegression(C=np.inf, tol=1e-10).fit(logit(p[fit])[:, None], y[fit])
    assert model["slope"] == pytest.approx(reference.coef_[0, 0], rel=1e-5)
    assert model["intercept"] == pytest.approx(reference.intercept_[0], rel=1e-5)
    before = model["before"]["calibration_intercept"]["value"]
    after_intercept = model["after"]["calibration_intercept"]["value"]
    assert before > 1.0 and abs(after_intercept) < abs(before) / 2
    assert model["after"]["brier"]["value"] < model["before"]["brier"]["value"]
    # the AUC is a ranking: a monotone recalibration leaves it as it was
    assert model["after"]["auc"]["value"] == pytest.approx(model["before"]["auc"]["value"])
    assert after["DL"] == pytest.approx(expit(model["intercept"] + model["slope"]
                                              * logit(p[rest])))
    assert block["recalibration_patients"] == [patients[i].patient_id for i in fit]


def test_few_recalibration_patients_fit_the_intercept_only():
    y, p, patients = _site()
    model = recalibration([_model(p)], y, patients, recalibration_split(y, 30, 0), 0,
                          100)[0]["models"]["DL"]
    assert model["fit"] == "intercept only" and model["slope"] == 1.0


def test_no_evaluated_patient_enters_the_fit_and_the_after_uses_the_fitted_patients():
    y, p, patients = _site()
    split = fit, rest = recalibration_split(y, 100, 0)
    block = recalibration([_model(p)], y, patients, split, 0, 200)[0]["models"]["DL"]
    # poisoning the evaluated patients' labels leaves the fitted recalibration unchanged
    poisoned_y = y.copy()
    poisoned_y[rest] = 1 - poisoned_y[rest]
    poisoned = recalibration([_model(p)], poisoned_y, patients, split, 0, 200)[0]["models"]["DL"]
    assert (poisoned["intercept"], poisoned["slope"]) == (block["intercept"], block["slope"])
    assert poisoned["after"]["brier"]["value"] != block["after"]["brier"]["value"]
    # poisoning the recalibration patients' predictions changes the "after" numbers only
    poisoned_p = p.copy()
    poisoned_p[fit] = 1 - poisoned_p[fit]
    moved = recalibration([_model(poisoned_p)], y, patients, split, 0, 200)[0]["models"]["DL"]
    assert moved["before"] == block["before"]  # the evaluated patients' p are untouched
    assert moved["after"]["brier"]["value"] != block["after"]["brier"]["value"]
    assert moved["intercept"] != block["intercept"]


def test_evaluate_recalibrate_end_to_end(tmp_path):
    test = _manifest(tmp_path / "test", "B", 60, 2)
    y = (test["grade"] > 1).astype(int).to_numpy()
    rng = np.random.default_rng(4)
    p = expit(2.0 * (y - 0.5) + rng.normal(0, 1, len(y)) - 1.5)
    pd.DataFrame({"patient_id": test["patient_id"], "p_high": p}).to_csv(
        tmp_path / "predictions.csv", index=False)
    out = tmp_path / "eval"
    assert main([str(tmp_path / "predictions.csv"), "--manifest",
                 str(tmp_path / "test" / "manifest.csv"), "--out", str(out), "--bootstrap", "100",
                 "--recalibrate", "20"]) == 0
    block = json.loads((out / "metrics.json").read_text())["recalibration"]
    assert block["n"] == 20 and block["n_evaluated"] == 40
    assert (out / "recalibration.png").read_bytes().startswith(PNG)
    model = block["models"]["DL"]
    assert abs(model["after"]["calibration_intercept"]["value"]) < \
        abs(model["before"]["calibration_intercept"]["value"])
    # the report of the evaluation shows it
    from sarcograde.report import build_report
    page = build_report(out, tmp_path / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="recalibration">'):]
    section = section[:section.index("</section>")]
    assert "Not run" not in section and "fitted on 20 patients" in section
    assert 'data-metric="recalibration_after_brier"' in section
    assert 'alt="recalibration"' in section
    with pytest.raises(SarcogradeError, match="--recalibrate 59"):
        main([str(tmp_path / "predictions.csv"), "--manifest",
              str(tmp_path / "test" / "manifest.csv"), "--out", str(tmp_path / "bad"),
              "--recalibrate", "59"])
    assert not (tmp_path / "bad").exists()
