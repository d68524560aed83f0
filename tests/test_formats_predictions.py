"""sarcograde.formats.predictions and the resume files of predict and explain: a damaged saved
file is recomputed on rerun with a warning naming the patient; explain reuses predict's logits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fakes import calibrated_model, synthetic_slices, write_cache, write_run
from sarcograde.cli import main
from sarcograde.ensemble import aggregate, load_ensemble
from sarcograde.errors import SarcogradeError
from sarcograde.formats.cache import CacheIndex, patient_key
from sarcograde.formats.evaluation import read_metrics
from sarcograde.formats.predictions import (read_maps, read_slice_logits, slice_logits_key,
                                            write_maps, write_slice_logits)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def words(text: str) -> str:
    """stderr with the console's line wrapping undone: the message, not the terminal, counts."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(3)
    patients = {}
    for pid, (n, grade, brightness) in {"A1": (3, 1, 0.0), "B2": (4, 3, 2.0)}.items():
        image, mask = synthetic_slices(rng, n, brightness=brightness)
        patients[pid] = {"image": image, "mask": mask, "grade": grade}
    return {"cache": write_cache(root / "cache", patients),
            "run": write_run(root / "run", [calibrated_model(1), calibrated_model(2)])}


def test_saved_logits_are_read_only_with_their_key(tmp_path, capsys):
    path = tmp_path / "A1.npz"
    logits = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    write_slice_logits(path, logits, ["fold_00", "fold_01"], "k1")
    np.testing.assert_array_equal(read_slice_logits(path, "A1", "k1", n_models=2), logits)
    assert read_slice_logits(path, "A1", "other") is None
    assert read_slice_logits(path, "A1", "k1", n_models=3) is None       # another ensemble
    assert "A1: " in words(capsys.readouterr().err)
    path.write_bytes(path.read_bytes()[:40])
    assert read_slice_logits(path, "A1", "k1") is None
    err = words(capsys.readouterr().err)
    assert "A1: " in err and "damaged saved logits" in err and "recomputed" in err
    with pytest.raises(SarcogradeError, match="cannot be a file name"):
        read_slice_logits(path, "../A1", "k1")


def test_saved_maps_are_checked(tmp_path, capsys):
    path = tmp_path / "B2.npz"
    write_maps(path, np.ones((3, 8, 8), np.float16), np.zeros((1, 3, 2)), "k")
    assert read_maps(path, "B2", "k")["cam"].shape == (3, 8, 8)
    write_maps(path, np.ones((2, 8, 8), np.float16), np.zeros((1, 3, 2)), "k")
    assert read_maps(path, "B2", "k") is None
    assert "B2: " in words(capsys.readouterr().err)
    path.write_bytes(b"PK\x03\x04 not really")
    assert read_maps(path, "B2", "k") is None
    assert "damaged saved maps" in words(capsys.readouterr().err)


def predict_after_damaging_b2(study, folder, capsys, *flags) -> str:
    """predict, then B2's saved logits cut short, then predict again with `flags`: the same
    predictions and a fresh B2 file; the second run's stderr."""
    out = folder / "predictions.csv"
    args = ["predict", str(study["run"]), str(study["cache"]), "--out", str(out)]
    assert main(args) == 0
    first = pd.read_csv(out)
    saved = folder / "predictions.slices" / "B2.npz"
    saved.write_bytes(saved.read_bytes()[:50])
    capsys.readouterr()
    assert main([*args, *flags]) == 0
    err = capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(out), first)
    assert read_slice_logits(saved, "B2", {str(np.load(saved)["key"])}) is not None
    return err


def test_predict_recomputes_a_damaged_slices_file(study, tmp_path, capsys):
    err = words(predict_after_damaging_b2(study, tmp_path, capsys))
    assert "B2: " in err and "damaged saved logits" in err and "recomputed" in err


# predict's output named by its CSV or its folder of slice logits, or with the deprecated spelling
GIVEN = {"csv": ("--slice-logits", "predictions.csv"),
         "folder": ("--slice-logits", "predictions.slices"),
         "deprecated": ("--predictions", "predictions.csv")}


@pytest.mark.parametrize("given", GIVEN)
def test_explain_reuses_predict_logits_and_recomputes_damaged_maps(study, tmp_path, capsys,
                                                                   given):
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(study["run"]), str(study["cache"]), "--out",
                 str(predictions)]) == 0
    # Plant logits that only predict's file holds: explain must report exactly these.
    ensemble = load_ensemble(study["run"])
    row = CacheIndex.read(study["cache"]).rows(patients=["A1"]).iloc[0]
    key = slice_logits_key(ensemble.key, patient_key(study["cache"], row), "fp32", "cpu")
    planted = np.array([[[0.0, 3.0]] * 3, [[1.0, 2.0]] * 3], np.float32)
    write_slice_logits(tmp_path / "predictions.slices" / "A1.npz", planted, ensemble.names, key)
    out = tmp_path / "explain"
    flag, name = GIVEN[given]
    args = ["explain", str(study["run"]), str(study["cache"]), "--out", str(out),
            flag, str(tmp_path / name), "--montage-slices", "2"]
    capsys.readouterr()
    assert main(args) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes == (["sarcograde explain: note: --predictions is deprecated; use --slice-logits "
                      "(the old spelling goes in the next version)"] if flag == "--predictions"
                     else [])
    table = pd.read_csv(out / "attention.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert table.loc["A1", "p_high"] == pytest.approx(aggregate(planted)[0])
    assert table.loc["B2", "p_high"] == pytest.approx(
        pd.read_csv(predictions, dtype={"patient_id": str}).set_index("patient_id").loc[
            "B2", "p_high"], abs=1e-6)

    maps = out / "maps" / "B2.npz"
    maps.write_bytes(maps.read_bytes()[:60])
    capsys.readouterr()
    assert main(args) == 0
    err = words(capsys.readouterr().err)
    assert "B2: " in err and "damaged saved maps" in err
    assert read_maps(maps, "B2", str(np.load(maps)["key"])) is not None


def test_a_corrupt_metrics_json_says_to_rerun_evaluate(tmp_path):
    with pytest.raises(SarcogradeError, match="no metrics.json"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text('{"auc": ')
    with pytest.raises(SarcogradeError, match=r"metrics.json: corrupt JSON .*rerun `sarcograde "
                                              r"evaluate`$"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text('{"n": 3}')
    with pytest.raises(SarcogradeError, match="no 'auc'"):
        read_metrics(tmp_path)
