"""sarcograde.formats.cache: each malformed cache file is refused in one line naming patient and
file; a swapped or stale patient NPZ never reaches a model."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from fakes import cohort, graded_cache
from sarcograde.cli import main
from sarcograde.errors import SarcogradeError
from sarcograde.formats.cache import (CacheIndex, check_patient_id, read_cache_config,
                                      read_patient)


@pytest.fixture
def cache(tmp_path):
    return graded_cache(tmp_path / "cache", cohort(2, 2, 1))


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_a_cache_written_by_the_builder_reads_back(cache):
    index = CacheIndex.read(cache)
    rows = index.rows()
    assert rows["patient_id"].tolist() == ["L00", "L01", "H00", "H01", "U00"]
    assert rows["label"].tolist()[:4] == [0, 0, 1, 1] and pd.isna(rows["label"].iloc[4])
    assert rows["grade"].tolist()[:4] == [1, 1, 2, 3]
    arrays = read_patient(cache, rows.iloc[2])
    with np.load(cache / "patients" / "H00.npz") as npz:
        np.testing.assert_array_equal(arrays["image"], npz["image"])
    assert read_cache_config(cache)["size"] == 32


@pytest.mark.parametrize("text, problem", [
    ("{not json", "corrupt JSON"), ("[1, 2]", "expected an object"), ("", "corrupt JSON")])
def test_a_corrupt_config_json_says_to_rerun_preprocess(cache, text, problem):
    (cache / "config.json").write_text(text)
    with pytest.raises(SarcogradeError) as exc:
        read_cache_config(cache)
    message = one_line(exc)
    assert "config.json: " in message and problem in message
    assert message.endswith("rerun `sarcograde preprocess`")


def test_a_missing_config_json(tmp_path, cache):
    (cache / "config.json").unlink()
    with pytest.raises(SarcogradeError, match="config.json missing"):
        read_cache_config(cache)
    assert read_cache_config(cache, required=False) == {}


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop(columns="npz"), r"missing column\(s\) npz"),
    (lambda t: t.assign(label=["0", "0", "1", "0.5", ""]), "H01: .*label '0.5' is not 0, 1"),
    (lambda t: t.assign(n_slices=["4", "x", "4", "4", "4"]), "L01: .*n_slices 'x' is not a count"),
    (lambda t: pd.concat([t, t.iloc[[0]]]), "L00: .*listed twice"),
    (lambda t: t.assign(patient_id=["L00", "../evil", "H00", "H01", "U00"]),
     "'../evil' cannot be a file name"),
])
def test_a_malformed_index_is_refused(cache, change, message):
    text = pd.read_csv(cache / "index.csv", dtype=str, keep_default_na=False)
    change(text).to_csv(cache / "index.csv", index=False)
    with pytest.raises(SarcogradeError, match=message) as exc:
        CacheIndex.read(cache)
    assert "index.csv" in one_line(exc)


def test_index_rows_by_sequence_and_patient(cache, capsys):
    index = CacheIndex.read(cache)
    with pytest.raises(SarcogradeError, match="no patients with sequence 'T2'"):
        index.rows("T2")
    with pytest.raises(SarcogradeError, match="not in the cache: NOBODY"):
        index.rows(patients=["H00", "NOBODY"])
    assert index.rows(patients=["H01", "L00"])["patient_id"].tolist() == ["L00", "H01"]
    with pytest.raises(SarcogradeError, match="no index.csv"):
        CacheIndex.read(cache / "nowhere")


def _row(cache, patient):
    rows = CacheIndex.read(cache).rows()
    return rows[rows["patient_id"] == patient].iloc[0]


def test_a_swapped_npz_is_refused_naming_the_patient(cache):
    shutil.copy(cache / "patients" / "L00.npz", cache / "patients" / "H00.npz")
    with pytest.raises(SarcogradeError) as exc:
        read_patient(cache, _row(cache, "H00"))
    message = one_line(exc)
    assert message.startswith("H00: ") and "H00.npz" in message
    assert "stale or swapped" in message


def test_a_truncated_npz_is_refused(cache):
    path = cache / "patients" / "H01.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(SarcogradeError, match=r"^H01: .*H01\.npz: cannot read cached slices") as exc:
        read_patient(cache, _row(cache, "H01"))
    one_line(exc)


def test_slice_count_shape_nan_and_path_are_checked(cache):
    row = _row(cache, "L01")
    stale = row.copy()
    stale["n_slices"] = 99
    with pytest.raises(SarcogradeError, match=r"^L01: .*slices, index.csv says 99"):
        read_patient(cache, stale)
    with pytest.raises(SarcogradeError, match="the models take 16x16"):
        read_patient(cache, row, size=16)
    outside = row.copy()
    outside["npz"] = "../elsewhere.npz"
    with pytest.raises(SarcogradeError, match="not a path inside the cache"):
        read_patient(cache, outside)
    with np.load(cache / "patients" / "L01.npz") as npz:
        arrays = dict(npz)
    arrays["image"][0, 0, 0] = np.inf
    np.savez(cache / "patients" / "L01.npz", **arrays)
    with pytest.raises(SarcogradeError, match=r"^L01: .*NaN or infinite"):
        read_patient(cache, row)


def test_patient_ids_follow_the_preprocess_rule():
    assert check_patient_id("STS_001 a.b+c-d") == "STS_001 a.b+c-d"
    for bad in ("../x", "a/b", "", ".hidden", "a\\b"):
        with pytest.raises(SarcogradeError, match="cannot be a file name"):
            check_patient_id(bad)


def test_predict_refuses_a_swapped_npz_through_the_command_line(cache, tmp_path, capsys):
    from fakes import calibrated_model, write_run

    run = write_run(tmp_path / "run", [calibrated_model(1)],
                    preprocess=read_cache_config(cache))
    shutil.copy(cache / "patients" / "L00.npz", cache / "patients" / "H00.npz")
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run), str(cache), "--out", str(out)]) == 1
    err = " ".join(capsys.readouterr().err.split())  # the console may wrap; the words count
    assert "H00: " in err and "stale or swapped file" in err
    assert not out.exists()
