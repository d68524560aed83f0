"""`sarcograde predict`: ensemble aggregation, per-model spread, precision, cache checks, resume.

Runs (tiny quick-preset DenseNets at 32 x 32) and caches come from tests/fakes.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from sarcograde import console
from sarcograde import model as model_lib
from sarcograde.cli import main
from fakes import PREPROCESS, SIZE, calibrated_model, synthetic_slices, write_cache, write_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models():
    return [calibrated_model(seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, models):
    return write_run(tmp_path_factory.mktemp("run"), models)


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(7)
    spec = {"P01": (5, 1, 0.0), "P02": (12, 2, 3.0), "P03": (1, 3, 1.0), "P04": (7, None, 2.0),
            "P05": (40, 1, -1.0)}
    patients = {}
    for pid, (n, grade, brightness) in spec.items():
        image, mask = synthetic_slices(rng, n, brightness=brightness)
        patients[pid] = {"image": image, "mask": mask, "grade": grade}
    return patients


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, cohort):
    return write_cache(tmp_path_factory.mktemp("cache"), cohort)


def predict(run_dir, cache_dir, out, *extra) -> pd.DataFrame:
    assert main(["predict", str(run_dir), str(cache_dir), "--out", str(out),
                 "--batch-size", "8", *extra]) == 0
    return pd.read_csv(out, dtype={"patient_id": str}).set_index("patient_id")


def reference_logits(models, image) -> np.ndarray:
    """(models, n, 2) logits computed one model and one whole patient at a time."""
    meta = model_lib.input_meta(SIZE, pretrained=False)
    with torch.no_grad():
        return np.stack([m(model_lib.prepare_input(image, meta)).numpy() for m in models])


def np_softmax_high(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e[..., 1] / e.sum(axis=-1)


@pytest.mark.parametrize("mode", ["logits", "probabilities"])
def test_aggregation_equals_independent_computation(run_dir, cache_dir, cohort, models, mode,
                                                    tmp_path):
    table = predict(run_dir, cache_dir, tmp_path / "predictions.csv", "--aggregate", mode)
    assert list(table.index) == list(cohort)          # every patient, the unknown grade too
    fold_columns = ["p_fold_00", "p_fold_01", "p_fold_02"]
    assert list(table.columns) == ["p_high", "predicted", "n_slices", "p_high_sd", "p_high_min",
                                   "p_high_max", *fold_columns]
    for pid, patient in cohort.items():
        z = reference_logits(models, patient["image"])
        if mode == "logits":
            expected = np_softmax_high(z.mean(axis=(0, 1)))
            per_model = np_softmax_high(z.mean(axis=1))
        else:
            expected = np_softmax_high(z).mean()
            per_model = np_softmax_high(z).mean(axis=1)
        row = table.loc[pid]
        assert row["p_high"] == pytest.approx(expected, abs=1e-5)
        assert row["predicted"] == int(expected > 0.5)
        assert row["n_slices"] == len(patient["image"])
        np.testing.assert_allclose(row[fold_columns].to_numpy(float), per_model, atol=1e-5)
        assert row["p_high_sd"] == pytest.approx(np.std(per_model, ddof=1), abs=1e-5)
        assert row["p_high_min"] == pytest.approx(per_model.min(), abs=1e-5)
        assert row["p_high_max"] == pytest.approx(per_model.max(), abs=1e-5)
    # The models disagree, so the spread is informative and the two rules differ.
    assert (table["p_high_sd"] > 1e-4).all()
    assert (table["p_high"].max() - table["p_high"].min()) > 0.01


def test_rules_differ_and_run_record(run_dir, cache_dir, tmp_path):
    by_logits = predict(run_dir, cache_dir, tmp_path / "a.csv")
    by_probs = predict(run_dir, cache_dir, tmp_path / "b.csv", "--aggregate", "probabilities")
    assert np.abs(by_logits["p_high"] - by_probs["p_high"]).max() > 1e-4
    record = json.loads((tmp_path / "a.run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished" and record["config"]["aggregate"] == "logits"
    assert record["config"]["models"] == ["fold_00", "fold_01", "fold_02"]
    assert not (tmp_path / "run.json").exists()     # the folder's run.json is left alone


def test_bf16_agrees_with_fp32(run_dir, cache_dir, tmp_path):
    fp32 = predict(run_dir, cache_dir, tmp_path / "fp32.csv", "--precision", "fp32")
    bf16 = predict(run_dir, cache_dir, tmp_path / "bf16.csv", "--precision", "bf16")
    difference = np.abs(fp32["p_high"] - bf16["p_high"])
    assert difference.max() < 0.02
    assert difference.max() > 0  # bf16 really ran: it rounds differently
    assert json.loads((tmp_path / "bf16.run.json").read_text(encoding="utf-8"))["config"]["precision"] == "bf16"


def test_same_input_same_output_and_resume(run_dir, cache_dir, cohort, tmp_path):
    first = tmp_path / "first" / "predictions.csv"
    second = tmp_path / "second" / "predictions.csv"
    predict(run_dir, cache_dir, first)
    predict(run_dir, cache_dir, second)
    assert first.read_bytes() == second.read_bytes()

    # A rerun reuses the per-slice logits saved under the same key...
    slices = first.with_name("predictions.slices")
    assert sorted(p.stem for p in slices.glob("*.npz")) == sorted(cohort)
    with np.load(slices / "P02.npz") as npz:
        saved = dict(npz)
    np.savez(slices / "P02.npz", **{**saved, "logits": np.zeros_like(saved["logits"])})
    assert predict(run_dir, cache_dir, first).loc["P02", "p_high"] == pytest.approx(0.5)


def test_off_a_terminal_each_batch_of_patients_is_a_line(run_dir, cache_dir, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)  # every batch, however fast
    capsys.readouterr()
    predict(run_dir, cache_dir, tmp_path / "predictions.csv")
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("predict (slices): ")]
    # batches of whole patients of at least 8 slices: P01 + P02, P03 + P04, P05
    assert [line.split()[2] for line in lines] == ["17/65", "25/65", "65/65"]


def test_changed_model_is_not_served_from_stale_logits(cache_dir, tmp_path):
    out = tmp_path / "predictions.csv"
    run = write_run(tmp_path / "run", [calibrated_model(1), calibrated_model(2)])
    before = predict(run, cache_dir, out)
    write_run(run, [calibrated_model(1), calibrated_model(5)])
    after = predict(run, cache_dir, out)
    fresh = predict(run, cache_dir, tmp_path / "fresh" / "predictions.csv")
    assert (before["p_fold_01"] != after["p_fold_01"]).all()
    pd.testing.assert_frame_equal(after, fresh)


def test_wrong_cache_for_the_run(run_dir, cohort, tmp_path, capsys):
    cache = write_cache(tmp_path / "cache", {"P01": cohort["P01"]},
                        preprocess={**PREPROCESS, "spacing_mm": 2.0})
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run_dir), str(cache), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "config.json: wrong cache for this run" in err and "spacing_mm 1.0" in err
    assert not out.exists()


def test_slices_of_the_wrong_size(run_dir, tmp_path, capsys):
    image, mask = synthetic_slices(np.random.default_rng(0), 3, size=16)
    cache = write_cache(tmp_path / "cache", {"P09": {"image": image, "mask": mask, "grade": 2}})
    assert main(["predict", str(run_dir), str(cache), "--out", str(tmp_path / "p.csv")]) == 1
    err = capsys.readouterr().err
    assert "P09: " in err and "16x16" in err and "32x32" in err


def test_models_must_share_their_input(cache_dir, tmp_path, capsys):
    run = write_run(tmp_path / "run", [calibrated_model(1), calibrated_model(2)], sizes=[32, 64])
    assert main(["predict", str(run), str(cache_dir), "--out", str(tmp_path / "p.csv")]) == 1
    assert "fold models disagree on their input" in capsys.readouterr().err


def test_unfinished_run(cache_dir, tmp_path, capsys):
    run = write_run(tmp_path / "run", [calibrated_model(1), calibrated_model(2)])
    (run / "fold_01" / "model.pt").unlink()
    assert main(["predict", str(run), str(cache_dir), "--out", str(tmp_path / "p.csv")]) == 1
    err = capsys.readouterr().err
    assert "fold_01/model.pt: model missing" in err


def test_patient_without_slices_is_left_out_and_nan_is_refused(run_dir, cohort, tmp_path,
                                                               capsys):
    empty = {"image": np.zeros((0, SIZE, SIZE), np.float16),
             "mask": np.zeros((0, SIZE, SIZE), np.uint8), "grade": 2}
    cache = write_cache(tmp_path / "cache", {"P01": cohort["P01"], "P00": empty})
    table = predict(run_dir, cache, tmp_path / "predictions.csv")
    assert list(table.index) == ["P01"]
    assert "no tumour slices, left out: P00" in capsys.readouterr().err

    broken = {**cohort["P01"], "image": cohort["P01"]["image"].copy()}
    broken["image"][0, 3, 3] = np.nan
    cache = write_cache(tmp_path / "broken", {"P07": broken})
    assert main(["predict", str(run_dir), str(cache), "--out", str(tmp_path / "x.csv")]) == 1
    assert "P07: " in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("command", ["predict", "grade"])
def test_fp32_by_default_on_every_device(command):
    """A patient's grade must not depend on the machine: no option means fp32 on a GPU too."""
    import argparse
    import importlib

    from sarcograde.ensemble import resolve_precision

    module = importlib.import_module(f"sarcograde.{command}" if command == "predict"
                                     else "sarcograde.grade.stage")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    default = parser.get_default("precision")
    assert default == "fp32"
    assert resolve_precision(default, torch.device("cuda")) is None      # None = full fp32
