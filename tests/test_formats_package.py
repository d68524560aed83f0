"""The model package's one reader and writer (`sarcograde.formats.package`): what it verifies and
refuses, each in one line naming the file; a folder and its zip read alike.

Packages are exported from fake runs of tests/fakes.py (tiny DenseNets, no training)."""

from __future__ import annotations

import json
import shutil
import struct
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from sarcograde.cli import main
from sarcograde.errors import SarcogradeError
from sarcograde.formats import package as package_format
from sarcograde.formats.package import (FORMAT, MODEL_CARD, MODEL_JSON, content_checksum,
                                        is_package, read_package, write_package)
from sarcograde.formats.run import CV_PREDICTIONS, write_cv_predictions
from fakes import calibrated_model, write_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WEIGHTS = "T1/fold_01.safetensors"


def fake_run(root, sequence_models=2, seed=0):
    """A RUN of calibrated tiny models with out-of-fold predictions of 10 patients."""
    run = write_run(root, [calibrated_model(seed + k) for k in range(sequence_models)])
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * 5)
    write_cv_predictions(run / CV_PREDICTIONS, pd.DataFrame({
        "patient_id": [f"P{i:02d}" for i in range(10)], "repeat": 0,
        "fold": np.arange(10) % sequence_models, "label": labels,
        "p_high": np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, 10), 0.01, 0.99)}))
    return run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("package")
    run = fake_run(root / "run")
    for out, extra in ((root / "pkg", []), (root / "pkg.zip", ["--zip"])):
        assert main(["export", "--run", f"T1={run}", "--out", str(out), *extra]) == 0
    return root


@pytest.fixture
def folder(exported, tmp_path):
    return shutil.copytree(exported / "pkg", tmp_path / "pkg")


@pytest.fixture
def zipped(exported, tmp_path):
    return shutil.copy(exported / "pkg.zip", tmp_path / "pkg.zip")


def refused(path) -> str:
    with pytest.raises(SarcogradeError) as info:
        read_package(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def rewrite_json(path, change) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")


def rewrite_zip(path, name, change) -> None:
    """The zip with entry `name`'s bytes passed through `change`."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    entries[name] = change(entries[name])
    with zipfile.ZipFile(path, "w") as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


# ---------------------------------------------------------------------------------------------

def test_folder_and_zip_hold_the_same_verified_package(exported):
    from_folder, from_zip = read_package(exported / "pkg"), read_package(exported / "pkg.zip")
    assert from_folder.document == from_zip.document
    assert from_folder.id == from_zip.id and len(from_folder.id) == 16
    document = from_folder.document
    assert document["format"] == FORMAT and document["format_version"] == 1
    assert document["checksum"] == content_checksum(document)
    assert sorted(document["files"]) == [MODEL_CARD, "T1/fold_00.safetensors", WEIGHTS]
    assert from_folder.sequences == ["T1"]
    assert [f.name for f in from_folder.models["T1"].folds] == ["fold_00", "fold_01"]
    assert from_zip.card == (exported / "pkg" / MODEL_CARD).read_text(encoding="utf-8")
    with zipfile.ZipFile(exported / "pkg.zip") as archive:  # the same bytes, at the zip's top
        for name in [MODEL_JSON, *document["files"]]:
            assert archive.read(name) == (exported / "pkg" / name).read_bytes()


def test_weights_are_fp32_safetensors_the_fold_models_state(exported):
    data = (exported / "pkg" / WEIGHTS).read_bytes()
    header_size = struct.unpack("<Q", data[:8])[0]  # safetensors: a length, a JSON header, data
    header = json.loads(data[8:8 + header_size])
    floats = {k: v["dtype"] for k, v in header.items() if k != "__metadata__"
              and not k.endswith("num_batches_tracked")}
    assert set(floats.values()) == {"F32"}
    state = dict(read_package(exported / "pkg").state_dicts("T1"))
    expected = torch.load(exported / "run" / "fold_01" / "model.pt", weights_only=True)
    fold = next(f for f in state if f.name == "fold_01")
    assert set(state[fold]) == set(expected["state_dict"])
    for key, tensor in expected["state_dict"].items():
        assert torch.equal(state[fold][key], tensor), key


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_a_changed_weight_file_is_refused_naming_it(form, folder, zipped):
    if form == "folder":
        path = folder / WEIGHTS
        path.write_bytes(flip_last_byte(path.read_bytes()))
        package = folder
    else:
        rewrite_zip(zipped, WEIGHTS, flip_last_byte)
        package = zipped
    assert refused(package) == (f"{package / WEIGHTS}: SHA-256 differs from model.json's: the "
                                "file was changed or damaged after export; use the package as "
                                "exported")


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_a_changed_model_json_is_refused_naming_it(form, folder, zipped):
    def lower_threshold(document):
        document["threshold"]["value"] = 0.01

    if form == "folder":
        rewrite_json(folder / MODEL_JSON, lower_threshold)
        package = folder
    else:
        def change(data):
            document = json.loads(data)
            lower_threshold(document)
            return json.dumps(document).encode()

        rewrite_zip(zipped, MODEL_JSON, change)
        package = zipped
    assert refused(package) == (f"{package / MODEL_JSON}: model.json was changed after export "
                                "(its checksum does not match its content); use the package as "
                                "exported")


def test_a_changed_card_is_refused_but_not_reformatted_json(folder):
    rewrite_json(folder / MODEL_JSON, lambda document: None)  # indentation changed only
    read_package(folder)
    (folder / MODEL_CARD).write_text("# a better model\n", encoding="utf-8")
    assert refused(folder).startswith(f"{folder / MODEL_CARD}: SHA-256 differs")


def test_an_unknown_format_version_is_refused_naming_model_json(folder):
    def newer(document):
        document["format_version"] = 2
        document["checksum"] = content_checksum(document)

    rewrite_json(folder / MODEL_JSON, newer)
    message = refused(folder)
    assert message.startswith(f"{folder / MODEL_JSON}: model package format version 2 is "
                              "unknown to sarcograde")
    assert "reads version 1" in message


def test_missing_unlisted_and_foreign_files_are_refused(folder, tmp_path):
    extra = folder / "T1" / "fold_02.pt"
    extra.write_bytes(b"not listed")
    assert refused(folder).startswith(f"{extra}: file not part of the package")
    extra.unlink()
    (folder / WEIGHTS).unlink()
    assert refused(folder) == f"{folder / WEIGHTS}: missing from the package (model.json lists it)"
    assert refused(tmp_path / "nothing") == f"{tmp_path / 'nothing'}: model package not found"
    (tmp_path / "empty").mkdir()
    assert refused(tmp_path / "empty").startswith(f"{tmp_path / 'empty'}: not a model package")
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert "neither a folder nor a zip file" in refused(other)


def test_garbled_model_json_is_one_line(folder):
    (folder / MODEL_JSON).write_text("{not json", encoding="utf-8")
    assert refused(folder).startswith(f"{folder / MODEL_JSON}: corrupt JSON")
    (folder / MODEL_JSON).write_text(json.dumps({"format": "something else"}), encoding="utf-8")
    assert "not a sarcograde model package" in refused(folder)


def test_the_writer_refuses_a_path_of_this_machine_and_writes_nothing(tmp_path):
    with pytest.raises(SarcogradeError, match="would hold the path '/home/me/cohort.csv'"):
        write_package(tmp_path / "pkg", {"format": FORMAT, "source": "/home/me/cohort.csv"}, [],
                      lambda document: "")
    assert not (tmp_path / "pkg").exists()
    assert package_format.absolute_paths({"a": ["x", "C:\\data"], "~/m": 1}) == ["~/m", "C:\\data"]


def test_is_package_tells_a_package_from_anything_else(exported, tmp_path):
    assert is_package(exported / "pkg") and is_package(exported / "pkg.zip")
    assert not is_package(exported / "run") and not is_package(tmp_path / "absent")
    (tmp_path / "x.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    assert not is_package(tmp_path / "x.zip")
