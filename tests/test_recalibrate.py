"""`sarcograde recalibrate`: a new package version whose graded model (here the fusion) is
recalibrated for a site. The recalibrated package's p_high equals expit(a + b logit(p)) of the
original's, in `grade`, in `fusion apply` and, for a package of one sequence, in `predict`; the
fit solves the logistic score equations on the site's patients; the card names the site and N;
no patient id of the site enters the package; an edited recalibration, a second recalibration
and another package's grades are refused.

The package is test_grade's (two tiny runs, their fusion); the site's predictions are written
by hand, since the command only reads them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from sarcograde.cli import main
from sarcograde.formats.grade import CASE_REPORT, grade_path, read_grade
from sarcograde.formats.package import MODEL_CARD, MODEL_JSON, read_package
from test_grade import SEQUENCES, built, new_patient  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def site(built, tmp_path_factory):
    """The training site's 8 patients as the new site, with made-up p_high of the package's
    fusion (too confident: the recalibration has something to correct), and PKG2."""
    root = tmp_path_factory.mktemp("recalibrate")
    manifest = built / "train" / "manifest.csv"
    ids = pd.read_csv(manifest, dtype=str)["patient_id"].tolist()
    p = np.linspace(0.05, 0.95, len(ids))
    predictions = root / "PKG-fusion.csv"
    pd.DataFrame({"patient_id": ids, "p_high": p, "predicted": (p > 0.5).astype(int)}).to_csv(
        predictions, index=False)
    out = root / "pkg2"
    assert main(["recalibrate", str(built / "pkg"), "--predictions", str(predictions),
                 "--manifest", str(manifest), "--site", "hospital-x", "--out", str(out)]) == 0
    return root, manifest, ids, p, out


def grade_with(built, model, out) -> dict:
    row = new_patient(built)
    images = [a for s in SEQUENCES
              for a in ("--image", f"{s}={built / 'new' / row[f'image_{s}']}")]
    args = ["grade", "--model", str(model), "--out", str(out), "--id", "case-1", "--device",
            "cpu", *images, "--mask", f"T1FSGd={built / 'new' / row['mask_T1FSGd']}"]
    assert main(args) == 0
    return read_grade(grade_path(out, "case-1"))


def test_the_fit_solves_the_score_equations_on_the_sites_patients(site):
    _, manifest, ids, p, out = site
    block = json.loads((out / MODEL_JSON).read_text())["recalibration"]
    grades = pd.read_csv(manifest, dtype=str).set_index("patient_id")["grade"].astype(int)
    y = (grades.loc[ids].to_numpy() >= 2).astype(int)
    assert block["n"] == len(ids) and block["n_high"] == y.sum() and block["site"] == "hospital-x"
    # 8 patients: fewer than 20 of the smaller class, so the intercept only (slope 1), and the
    # intercept makes the expected events equal the observed ones
    assert block["fit"] == "intercept only" and block["slope"] == 1.0
    assert expit(block["intercept"] + logit(p)).sum() == pytest.approx(y.sum(), abs=1e-6)


def test_n_draws_the_patients_as_evaluate_recalibrate_does(built, site, tmp_path):
    from sarcograde.evaluate.recalibration import recalibration_split

    root, manifest, ids, p, _ = site
    out = tmp_path / "pkg-n"
    assert main(["recalibrate", str(built / "pkg"), "--predictions",
                 str(root / "PKG-fusion.csv"), "--manifest", str(manifest), "--site", "x",
                 "--n", "4", "--seed", "1", "--out", str(out)]) == 0
    block = read_package(out).recalibration
    grades = pd.read_csv(manifest, dtype=str).set_index("patient_id")["grade"].astype(int)
    y = (grades.loc[ids].to_numpy() >= 2).astype(int)
    fit, _ = recalibration_split(y, 4, 1)
    assert (block["n"], block["seed"], block["n_high"]) == (4, 1, y[fit].sum())
    assert expit(block["intercept"] + logit(p[fit])).sum() == pytest.approx(y[fit].sum(),
                                                                             abs=1e-6)


def test_grade_with_the_recalibrated_package_is_expit_of_the_originals(built, site, tmp_path):
    _, _, _, _, out = site
    before = grade_with(built, built / "pkg", tmp_path / "before")
    after = grade_with(built, out, tmp_path / "after")
    block = read_package(out).recalibration
    expected = expit(block["intercept"] + block["slope"] * logit(before["p_high"]))
    assert after["p_high"] == pytest.approx(expected, abs=1e-9)
    assert after["p_high_uncalibrated"] == pytest.approx(before["p_high"], abs=1e-9)
    assert after["recalibration"]["site"] == "hospital-x"
    assert after["model"]["id"] == read_package(out).id != before["model"]["id"]
    assert after["grade"] == ("high" if after["p_high"] > after["threshold"] else "low")
    page = (tmp_path / "after" / "case-1" / CASE_REPORT).read_text()
    assert (f"recalibrated for hospital-x (intercept only, fitted on {block['n']} patients of "
            f"that site); before the recalibration: {before['p_high']:.3f}") in page
    assert 'id="recalibration"' not in (tmp_path / "before" / "case-1" / CASE_REPORT).read_text()


def test_fusion_apply_with_the_recalibrated_package(built, site, tmp_path):
    _, _, _, _, out = site
    paths = []
    for k, seq in enumerate(SEQUENCES):
        path = tmp_path / f"{seq}.csv"
        pd.DataFrame({"patient_id": ["a", "b"], "p_high": [0.2 + 0.1 * k, 0.7]}).to_csv(
            path, index=False)
        paths += ["--sequence", f"{seq}={path}"]
    for model, name in ((built / "pkg", "before.csv"), (out, "after.csv")):
        assert main(["fusion", "apply", str(model), *paths, "--out", str(tmp_path / name)]) == 0
    before, after = (pd.read_csv(tmp_path / n) for n in ("before.csv", "after.csv"))
    block = read_package(out).recalibration
    assert np.allclose(after["p_high"], expit(block["intercept"] + block["slope"]
                                               * logit(before["p_high"])))
    assert np.allclose(after["p_high_uncalibrated"], before["p_high"])


def test_predict_with_a_recalibrated_package_of_one_sequence(built, site, tmp_path):
    root, manifest, ids, p, _ = site
    single = tmp_path / "pkg-t1"
    assert main(["export", "--run", f"T1FSGd={built / 'run-T1FSGd'}", "--onnx", "--out",
                 str(single)]) == 0
    predictions = root / "PKG-fusion.csv"  # any p_high of the site's patients will do
    assert main(["recalibrate", str(single), "--predictions", str(predictions), "--manifest",
                 str(manifest), "--site", "hospital-x", "--out", str(tmp_path / "pkg-t1-x")]) == 0
    cache = built / "cache-T1FSGd"
    for model, name in ((single, "before.csv"), (tmp_path / "pkg-t1-x", "after.csv")):
        assert main(["predict", str(model), str(cache), "--out", str(tmp_path / name),
                     "--device", "cpu"]) == 0
    before, after = (pd.read_csv(tmp_path / n) for n in ("before.csv", "after.csv"))
    block = read_package(tmp_path / "pkg-t1-x").recalibration
    assert np.allclose(after["p_high"], expit(block["intercept"] + block["slope"]
                                               * logit(before["p_high"])))
    assert np.allclose(after["p_high_uncalibrated"], before["p_high"])
    assert (after["predicted"] == (after["p_high"] > 0.5)).all()
    assert np.allclose(after["p_high_sd"], before["p_high_sd"])  # the fold models' spread
    # the weights and the ONNX graphs are the original package's, byte for byte
    files = [json.loads((path / MODEL_JSON).read_text())["files"]
             for path in (single, tmp_path / "pkg-t1-x")]
    assert any(name.endswith(".onnx") for name in files[0])
    assert [{k: v for k, v in f.items() if k != MODEL_CARD} for f in files] == \
        [{k: v for k, v in files[0].items() if k != MODEL_CARD}] * 2


def test_the_card_names_the_site_and_n_and_the_package_holds_no_site_id(built, site):
    _, _, ids, _, out = site
    card = (out / MODEL_CARD).read_text()
    original = read_package(built / "pkg").id
    assert "## Recalibration for hospital-x" in card
    assert f"fitted on {len(ids)} labelled patients" in card and original in card
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [pid for pid in ids if pid.encode() in data], path
    # the weights are the original package's, byte for byte
    before = json.loads((built / "pkg" / MODEL_JSON).read_text())["files"]
    after = json.loads((out / MODEL_JSON).read_text())["files"]
    assert {k: v for k, v in after.items() if k != MODEL_CARD} == \
        {k: v for k, v in before.items() if k != MODEL_CARD}


def refusal(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_what_recalibrate_and_grade_refuse(built, site, tmp_path, capsys):
    root, manifest, ids, p, out = site
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for path in out.iterdir():  # a copy with the intercept edited
        if path.is_dir():
            (tampered / path.name).mkdir()
            for inner in path.iterdir():
                (tampered / path.name / inner.name).write_bytes(inner.read_bytes())
        else:
            (tampered / path.name).write_bytes(path.read_bytes())
    document = json.loads((tampered / MODEL_JSON).read_text())
    document["recalibration"]["intercept"] += 1.0
    (tampered / MODEL_JSON).write_text(json.dumps(document))
    assert "checksum" in refusal(capsys, "grade", "--model", str(tampered), "--out",
                                 str(tmp_path / "g"), "--manifest",
                                 str(built / "new" / "manifest.csv"), "--device", "cpu")
    assert not (tmp_path / "g").exists()
    predictions = root / "PKG-fusion.csv"
    again = refusal(capsys, "recalibrate", str(out), "--predictions", str(predictions),
                    "--manifest", str(manifest), "--site", "y", "--out", str(tmp_path / "p3"))
    assert "already recalibrated for site hospital-x" in again
    other = tmp_path / "grades.csv"
    pd.DataFrame({"patient_id": ids, "p_high": p, "model_id": "0123456789abcdef"}).to_csv(
        other, index=False)
    message = refusal(capsys, "recalibrate", str(built / "pkg"), "--predictions", str(other),
                      "--manifest", str(manifest), "--site", "y", "--out", str(tmp_path / "p4"))
    assert "graded by package 0123456789abcdef" in message and ids[0] in message
    assert not (tmp_path / "p3").exists() and not (tmp_path / "p4").exists()
