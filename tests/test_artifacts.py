"""Atomic writes, content hashes and the run.json record."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from sarcograde.artifacts import (RunRecord, atomic_path, hash_config, hash_path, save_figure,
                                  write_csv, write_json, write_npz, write_text)
from sarcograde.formats.common import read_json_file


class Boom(Exception):
    pass


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "image.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz")  # format by name
        tmp.write_text("first")
    assert target.read_text(encoding="utf-8") == "first"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise Boom
    assert target.read_text(encoding="utf-8") == "first"                 # the old file is untouched
    assert [p.name for p in target.parent.iterdir()] == ["image.nii.gz"]   # no temp file


def test_written_files_get_the_usual_permissions(tmp_path):
    """Not mkstemp's 0600: a report or a CSV must be readable by the group like any other file."""
    umask = os.umask(0o022)
    os.umask(umask)
    write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask


def test_failed_writer_leaves_no_file(tmp_path):
    class Unserialisable:
        pass

    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(tmp_path / "x.json", {"a": Unserialisable()})
    assert list(tmp_path.iterdir()) == []


def test_writers_round_trip(tmp_path):
    write_json(tmp_path / "a.json", {"n": np.int64(3), "x": np.float32(0.5),
                                     "v": np.arange(3), "p": tmp_path})
    assert read_json_file(tmp_path / "a.json") == {"n": 3, "x": 0.5, "v": [0, 1, 2],
                                                    "p": str(tmp_path)}
    frame = pd.DataFrame({"patient_id": ["A", "B"], "p_high": [0.25, 0.75]})
    write_csv(tmp_path / "a.csv", frame)
    assert (tmp_path / "a.csv").read_text(encoding="utf-8") == "patient_id,p_high\nA,0.25\nB,0.75\n"
    write_npz(tmp_path / "a.npz", image=np.eye(3, dtype=np.float16), key=np.array("abc"))
    with np.load(tmp_path / "a.npz") as npz:
        assert npz["image"].dtype == np.float16 and np.array_equal(npz["image"], np.eye(3))
        assert str(npz["key"]) == "abc"
    write_text(tmp_path / "a.txt", "µ")
    assert (tmp_path / "a.txt").read_bytes() == "µ".encode("utf-8")


def test_save_figure_writes_png_and_closes(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)


def test_hash_path_of_files_and_folders(tmp_path):
    (tmp_path / "f.dcm").write_bytes(b"slice")
    assert hash_path(tmp_path / "f.dcm") == hashlib.sha256(b"slice").hexdigest()
    series = tmp_path / "series"
    series.mkdir()
    (series / "b.dcm").write_bytes(b"2")
    (series / "a.dcm").write_bytes(b"1")
    first = hash_path(series)
    expected = hashlib.sha256(b"a.dcm" + b"1" + b"b.dcm" + b"2").hexdigest()   # sorted by name
    assert first == expected
    (series / "a.dcm").rename(series / "c.dcm")
    assert hash_path(series) != first                  # names count, not only contents


def test_hash_config_ignores_key_order_only():
    assert hash_config({"a": 1, "b": {"c": 2, "d": 3}}) == hash_config({"b": {"d": 3, "c": 2},
                                                                        "a": 1})
    assert hash_config({"a": 1}) != hash_config({"a": 2})
    assert len(hash_config({})) == 16


def test_run_record_content(tmp_path, monkeypatch):
    (tmp_path / "manifest.csv").write_text("patient_id\nA\n")
    monkeypatch.setattr(sys, "argv", ["/venv/bin/sarcograde", "check", "manifest.csv"])
    with RunRecord(tmp_path / "out", config={"sequence": "T1"},
                   inputs={"manifest": tmp_path / "manifest.csv"}, seed=7):
        assert not (tmp_path / "out" / "run.json").exists()     # written when the work ends
    record = read_json_file(tmp_path / "out" / "run.json")
    assert record["command"] == "sarcograde check manifest.csv"
    assert record["config"] == {"sequence": "T1"} and record["seed"] == 7
    assert record["inputs"] == {"manifest": hashlib.sha256(b"patient_id\nA\n").hexdigest()}
    assert record["packages"]["numpy"] == np.__version__
    assert record["packages"]["python"] == ".".join(map(str, sys.version_info[:3]))
    start, end = (dt.datetime.fromisoformat(record[k]) for k in ("start", "end"))
    assert start <= end and start.tzinfo is not None
    assert record["status"] == "finished"


def test_run_record_marks_failure(tmp_path):
    with pytest.raises(Boom):
        with RunRecord(tmp_path):
            raise Boom
    assert json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))["status"] == "failed"
