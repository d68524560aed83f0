"""The whole pipeline on the 12 real TCIA patients, as a user runs it (README, "Real data").

import tcia-sts -> check -> preprocess (quick preset, T1, N4 on a shrunk image) -> train (quick
preset; only 2 low-grade patients, so the 5 folds asked for become 2, and the run says so) ->
predict (all 12 patients, the ungraded one too) -> evaluate the out-of-fold predictions with
overall survival -> explain -> report. The commands are read from the README's real-data
section and run as written, each in its own process, from a folder where `tcia-sts` is the
shared data, adding only `--threads 1` to predict and explain (CI shares two cores; one torch
thread per process is several times faster there; train's folds have one each by default). The numbers are checked against the spreadsheet
read independently (openpyxl), scikit-learn and lifelines; accuracy is not asserted (12 patients,
plain T1): this tests loading, geometry, the stages' contracts and the statistics.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
import SimpleITK as sitk
from conftest import TCIA_PATIENTS
from lifelines.statistics import logrank_test
from sklearn.metrics import roc_auc_score

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

README = Path(__file__).resolve().parents[1] / "README.md"
STAGES = ["import", "check", "preprocess", "train", "predict", "evaluate", "explain", "report"]
TORCH_STAGES = {"predict", "explain"}  # train: train.threads_per_fold, 1 in the presets
DAYS_PER_MONTH = 365.25 / 12
PNG = b"\x89PNG\r\n\x1a\n"


def readme_commands() -> list[list[str]]:
    """The first bash block of the README's real-data section: one argument list per command."""
    section = README.read_text(encoding="utf-8").split("## Real data", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("sarcograde ")]


def test_readme_runs_every_stage_in_order():
    assert [command[0] for command in readme_commands()] == STAGES


@pytest.fixture(scope="module")
def pipeline(tcia_root, tmp_path_factory) -> dict:
    """Run the README's commands once; their console output by stage, and the work folder."""
    here = tmp_path_factory.mktemp("tcia-pipeline")
    (here / "tcia-sts").symlink_to(tcia_root, target_is_directory=True)
    outputs = {}
    for command in readme_commands():
        command += ["--threads", "1"] if command[0] in TORCH_STAGES else []
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "sarcograde.cli", *command],
                              capture_output=True, encoding="utf-8", cwd=here,
                              env={**os.environ, "MPLBACKEND": "Agg"})
        output = done.stdout + done.stderr
        print(f"sarcograde {command[0]}: {time.perf_counter() - start:.1f} s")
        assert "Traceback" not in output, output
        assert done.returncode == 0, f"sarcograde {' '.join(command)}\n{output}"
        # rich wraps long lines on a non-terminal; compare messages with whitespace collapsed
        outputs[command[0]] = " ".join(output.split())
    assert list(outputs) == STAGES
    return {"work": here / "work", "output": outputs}


@pytest.fixture(scope="module")
def spreadsheet(tcia_root) -> pd.DataFrame:
    """The subset's rows of TCIA's clinical table, read without sarcograde."""
    sheet = openpyxl.load_workbook(tcia_root / "INFOclinical_STS.xlsx",
                                   read_only=True)["Clinical Information"]
    rows = [row for row in sheet.iter_rows(min_row=2, values_only=True) if row[0] in TCIA_PATIENTS]
    table = pd.DataFrame({"patient_id": [r[0] for r in rows], "grade": [r[6] for r in rows],
                          "status": [r[12] for r in rows], "days": [r[13] for r in rows]})
    table["label"] = table["grade"].map({"Low": 0, "Intermediate": 1, "High": 1})
    return table.set_index("patient_id")


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_import_and_check(pipeline):
    work = pipeline["work"]
    manifest = pd.read_csv(work / "manifest.csv", dtype={"patient_id": str})
    assert manifest["patient_id"].tolist() == TCIA_PATIENTS
    qa = pd.read_csv(work / "qa" / "qa.csv", dtype={"patient_id": str})
    assert qa["patient_id"].tolist() == TCIA_PATIENTS and qa["usable"].all()
    spacing = np.array([[float(v) for v in text.split("x")] for text in qa["spacing_mm"]])
    np.testing.assert_allclose(spacing, [[0.977, 0.977, 3.27]] * 12, atol=1e-3)  # data README
    assert set(qa["orientation"]) == {"LPS"}
    assert "12 usable" in pipeline["output"]["check"]


def test_preprocess_geometry_matches_the_masks(pipeline, tcia_root):
    cache = pipeline["work"] / "cache"
    config = _json(cache / "config.json")
    assert (config["sequence"], config["n4"], config["size"]) == ("T1", True, 64)
    assert config["n4_grid_mm"] > 0
    index = pd.read_csv(cache / "index.csv", dtype={"patient_id": str})
    assert index["patient_id"].tolist() == TCIA_PATIENTS
    for row in index.itertuples():
        mask = sitk.ReadImage(str(tcia_root / "nifti" / row.patient_id / "MR_T1_mask.nii.gz"))
        voxels = sitk.GetArrayFromImage(mask) > 0  # (z, y, x); axial slices, LPS
        z = np.flatnonzero(voxels.any(axis=(1, 2)))
        extent_mm = (z.max() - z.min() + 1) * mask.GetSpacing()[2]
        # one 1 mm slice per mm of tumour extent along z (3.27 mm slices resampled)
        assert abs(row.n_slices - extent_mm) <= 2, row.patient_id
        volume_ml = voxels.sum() * np.prod(mask.GetSpacing()) / 1000
        assert row.tumour_volume_ml == pytest.approx(volume_ml, abs=1e-3), row.patient_id
        with np.load(cache / row.npz) as npz:
            assert npz["image"].shape == (row.n_slices, 64, 64)
            assert np.allclose(npz["spacing"], 1.0) and npz["mask"].any(axis=(1, 2)).all()
            assert np.isfinite(npz["image"]).all()


def test_train_says_how_the_folds_were_adapted(pipeline, spreadsheet):
    run = pipeline["work"] / "run"
    folds = _json(run / "folds.json")
    graded = spreadsheet[spreadsheet["label"].notna()]
    n_low = int((graded["label"] == 0).sum())
    assert n_low == 2
    assert (folds["folds_requested"], folds["folds"], folds["repeats"]) == (5, n_low, 1)
    assert folds["adaptation"].startswith(f"only {n_low} low-grade patients: stratified 5-fold")
    assert folds["adaptation"] in pipeline["output"]["train"]  # said on the console too
    validated = sorted(pid for split in folds["splits"] for pid in split["val"])
    assert validated == sorted(graded.index)  # each graded patient validated once
    for split in folds["splits"]:
        assert not set(split["train"]) & set(split["val"])
        assert {graded.loc[pid, "label"] for pid in split["val"]} == {0, 1}  # stratified
        assert (run / split["name"] / "model.pt").is_file()
    assert "STS_047" in pipeline["output"]["train"]  # the ungraded patient, left out, named


def test_predict_grades_all_twelve(pipeline):
    work = pipeline["work"]
    predictions = pd.read_csv(work / "predictions.csv", dtype={"patient_id": str})
    index = pd.read_csv(work / "cache" / "index.csv", dtype={"patient_id": str})
    assert predictions["patient_id"].tolist() == TCIA_PATIENTS  # STS_047 (grade N/A) included
    assert predictions["n_slices"].tolist() == index["n_slices"].tolist()
    assert predictions["p_high"].between(0, 1).all()
    assert (predictions["predicted"] == (predictions["p_high"] > 0.5)).all()
    assert sorted(c for c in predictions if c.startswith("p_fold_")) == ["p_fold_00", "p_fold_01"]


def test_evaluate_out_of_fold_with_survival(pipeline, spreadsheet):
    work = pipeline["work"]
    cv = pd.read_csv(work / "run" / "cv_predictions.csv", dtype={"patient_id": str})
    p = cv.groupby("patient_id")["p_high"].mean()
    graded = spreadsheet[spreadsheet["label"].notna()]
    assert sorted(p.index) == sorted(graded.index)
    metrics = _json(work / "eval" / "metrics.json")
    assert metrics["source"] == "out-of-fold cross-validation (mean over 1 repeat)"
    assert "out-of-fold cross-validation" in pipeline["output"]["evaluate"]
    assert (metrics["n"], metrics["n_low"], metrics["n_high"]) == (11, 2, 9)
    y = graded.loc[p.index, "label"].astype(int)
    auc = roc_auc_score(y, p)
    print(f"out-of-fold AUC on the 11 graded TCIA patients: {metrics['auc']['value']:.3f} "
          f"(95% CI {metrics['auc']['ci95']}); not a measure of the method (plain T1, 2 G1)")
    assert metrics["auc"]["value"] == pytest.approx(auc)
    assert metrics["bootstrap"]["skipped_single_class"] > 0  # 2 low-grade patients in 11
    assert "caution" in metrics["youden"]  # threshold chosen on the same patients: said

    flow = _json(work / "eval" / "patient_flow.json")
    assert flow["excluded"] == [{"patient_id": "STS_047", "reason": "grade unknown"}]
    assert sorted(flow["included"]) == sorted(graded.index)

    # overall survival from the spreadsheet (Status D = death), log-rank by lifelines
    survival = _json(work / "eval" / "survival.json")
    died = graded["status"] == "D"
    months = graded["days"].astype(float) / DAYS_PER_MONTH
    assert (survival["n"], survival["deaths"]) == (11, int(died.sum()))
    groupings = {"grade": graded["label"] == 1, "dl": p.reindex(graded.index) > 0.5}
    for key, high in groupings.items():
        entry = survival["models"][key]
        assert sum(g["n"] for g in entry["groups"].values()) == 11
        if high.all() or not high.any():
            assert "note" in entry["logrank"]
            continue
        reference = logrank_test(months[high], months[~high], died[high], died[~high])
        assert entry["logrank"]["p"] == pytest.approx(reference.p_value, rel=1e-6), key
        assert (work / "eval" / entry["figure"]).read_bytes()[:8] == PNG
    for png in ("roc.png", "calibration.png"):
        assert (work / "eval" / png).read_bytes()[:8] == PNG


def test_explain_attention_is_consistent(pipeline):
    work = pipeline["work"]
    attention = pd.read_csv(work / "explain" / "attention.csv", dtype={"patient_id": str})
    predictions = pd.read_csv(work / "predictions.csv", dtype={"patient_id": str})
    assert attention["patient_id"].tolist() == TCIA_PATIENTS
    shares = attention[["inside", "ring", "elsewhere"]]
    assert shares.notna().all().all() and (shares >= 0).all().all()
    np.testing.assert_allclose(shares.sum(axis=1), 1, atol=1e-6)
    # the same ensemble rule as predict, on the same cached slices
    np.testing.assert_allclose(attention["p_high"], predictions["p_high"], atol=1e-4)
    assert (attention["predicted"] == predictions["predicted"]).all()
    assert attention.set_index("patient_id")["label"].isna().tolist() == [
        pid == "STS_047" for pid in TCIA_PATIENTS]
    for pid in TCIA_PATIENTS:
        assert (work / "explain" / f"{pid}.png").read_bytes()[:8] == PNG


def test_report_shows_the_evaluation(pipeline):
    work = pipeline["work"]
    page = (work / "report.html").read_text(encoding="utf-8")
    metrics = _json(work / "eval" / "metrics.json")
    card = re.search(r'data-metric="auc"><div class="label">AUC</div><div class="value">([^<]+)<',
                     page)
    assert card and card.group(1) == f"{metrics['auc']['value']:.2f}"
    assert _json(work / "run" / "folds.json")["adaptation"] in page
    assert "STS_047" in page  # the patient flow names the ungraded patient
    assert 'src="http' not in page  # self-contained


def test_every_stage_recorded_its_run(pipeline):
    work = pipeline["work"]
    records = [work / "qa" / "qa.run.json", work / "cache" / "run.json",
               work / "run" / "run.json", work / "predictions.run.json",
               work / "eval" / "run.json", work / "explain" / "run.json"]
    for path in records:
        assert _json(path)["status"] == "finished", path
