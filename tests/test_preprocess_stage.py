"""`sarcograde preprocess` end to end: the cache format, reuse, invalidation, resume, failures,
parallel jobs, previews, and the 12 real TCIA patients."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from preprocess_phantom import phantom
from sarcograde import console
from sarcograde.cli import main
from sarcograde.formats.cache import INDEX_COLUMNS
from test_io import write_dicom_series

PATIENTS = {"P1": ("1", "siteA", 7.0, 0), "P2": ("G3", "siteA", 10.0, 1), "P3": ("", "siteB", 8.0, 2)}


def write_cohort(folder, extra_rows=()):
    rows = ["patient_id,grade,site,image_T2FS,mask_T2FS"]
    for pid, (grade, site, radius, seed) in PATIENTS.items():
        image, mask, _ = phantom(radius_mm=radius, bias=0.2, seed=seed)
        sitk.WriteImage(image, str(folder / f"{pid}_img.nii.gz"))
        sitk.WriteImage(mask, str(folder / f"{pid}_mask.nii.gz"))
        rows.append(f"{pid},{grade},{site},{pid}_img.nii.gz,{pid}_mask.nii.gz")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join([*rows, *extra_rows]) + "\n")
    return manifest


@pytest.fixture
def manifest(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    return write_cohort(data)


def preprocess(manifest, cache, *flags):
    return main(["preprocess", str(manifest), "--out", str(cache), "--preset", "quick",
                 "--size", "32", *flags])


def counts(cache):
    return json.loads((cache / "run.json").read_text(encoding="utf-8"))["patients"]


def mtimes(cache):
    return {p.name: p.stat().st_mtime_ns for p in (cache / "patients").glob("*.npz")}


def test_cache_holds_the_documented_format(manifest, tmp_path):
    cache = tmp_path / "cache"
    assert preprocess(manifest, cache, "--preview") == 0
    index = pd.read_csv(cache / "index.csv", dtype=str, keep_default_na=False)
    assert list(index.columns) == INDEX_COLUMNS
    assert list(index.patient_id) == ["P1", "P2", "P3"]
    assert list(index.sequence) == ["T2FS"] * 3
    assert list(index.site) == ["siteA", "siteA", "siteB"]
    assert list(index.grade) == ["1", "3", ""] and list(index.label) == ["0", "1", ""]
    config = json.loads((cache / "config.json").read_text(encoding="utf-8"))
    assert config["sequence"] == "T2FS" and config["size"] == 32 and config["n4"] is True
    assert config["n4_iterations"] == [20, 20] and config["manifest"] == str(manifest.resolve())
    run = json.loads((cache / "run.json").read_text(encoding="utf-8"))
    assert run["status"] == "finished" and run["patients"] == {"computed": 3, "reused": 0, "failed": 0}
    assert set(run["seconds"]) == {"P1", "P2", "P3"} and min(run["seconds"].values()) > 0
    for row in index.itertuples():
        with np.load(cache / row.npz) as npz:
            n = int(row.n_slices)
            assert npz["image"].dtype == np.float16 and npz["image"].shape == (n, 32, 32)
            assert npz["mask"].dtype == np.uint8 and npz["mask"].shape == (n, 32, 32)
            for name in ("z_mm", "area_mm2", "pixel_mm"):
                assert npz[name].dtype == np.float64 and npz[name].shape == (n,)
            assert npz["spacing"].tolist() == [1.0, 1.0, 1.0]
            assert npz["direction"].tolist() == np.eye(3).ravel().tolist()
            assert str(npz["key"]) == row.key
            assert float(row.tumour_volume_ml) == pytest.approx(float(npz["tumour_volume_ml"]),
                                                                abs=1e-3)
        png = cache / "preview" / f"{row.patient_id}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a larger tumour gives more slices and a larger volume
    assert int(index.n_slices[1]) > int(index.n_slices[0])
    assert float(index.tumour_volume_ml[1]) > float(index.tumour_volume_ml[0])


def test_rerun_reuses_a_changed_parameter_recomputes_and_a_lost_npz_is_resumed(manifest, tmp_path):
    cache = tmp_path / "cache"
    assert preprocess(manifest, cache) == 0
    first = mtimes(cache)
    keys = pd.read_csv(cache / "index.csv").set_index("patient_id").key

    assert preprocess(manifest, cache) == 0
    assert counts(cache) == {"computed": 0, "reused": 3, "failed": 0}
    assert mtimes(cache) == first

    # an interrupted run: one patient's NPZ never written, another left truncated
    (cache / "patients" / "P2.npz").unlink()
    (cache / "patients" / "P3.npz").write_bytes(b"PK\x03\x04 truncated")
    assert preprocess(manifest, cache) == 0
    assert counts(cache) == {"computed": 2, "reused": 1, "failed": 0}
    assert mtimes(cache)["P1.npz"] == first["P1.npz"]
    assert pd.read_csv(cache / "index.csv").set_index("patient_id").key.equals(keys)

    assert preprocess(manifest, cache, "--margin-mm", "4") == 0
    assert counts(cache) == {"computed": 3, "reused": 0, "failed": 0}
    new_keys = pd.read_csv(cache / "index.csv").set_index("patient_id").key
    assert not (new_keys == keys).any()
    assert json.loads((cache / "config.json").read_text(encoding="utf-8"))["margin_mm"] == 4.0

    # a changed input file recomputes that patient only
    image, _, _ = phantom(radius_mm=7.0, bias=0.25, seed=0)
    sitk.WriteImage(image, str(manifest.parent / "P1_img.nii.gz"))
    assert preprocess(manifest, cache, "--margin-mm", "4") == 0
    assert counts(cache) == {"computed": 1, "reused": 2, "failed": 0}


def test_n4_settings_do_not_invalidate_a_cache_built_without_n4(manifest, tmp_path):
    cache = tmp_path / "cache"
    assert preprocess(manifest, cache, "--no-n4") == 0
    assert preprocess(manifest, cache, "--no-n4", "--n4-grid-mm", "3") == 0
    assert counts(cache)["reused"] == 3
    assert preprocess(manifest, cache) == 0
    assert counts(cache)["computed"] == 3


def test_a_failing_patient_is_reported_and_the_others_go_on_in_parallel(tmp_path, capsys,
                                                                        monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    # BAD's mask is P1's, on another grid than P2's image
    manifest = write_cohort(data, ["BAD,2,siteA,P2_img.nii.gz,P1_mask_small.nii.gz"])
    image, mask, _ = phantom(shape_zyx=(12, 40, 40), radius_mm=6.0)
    sitk.WriteImage(mask, str(data / "P1_mask_small.nii.gz"))
    parallel, serial = tmp_path / "parallel", tmp_path / "serial"
    capsys.readouterr()
    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    assert preprocess(manifest, parallel, "--jobs", "2") == 1
    err = capsys.readouterr().err
    assert f"failed: BAD: {data / 'P1_mask_small.nii.gz'}: mask is not on the grid of the image" in err
    # off a terminal (LOG_EVERY_S 0 here): a line per finished patient instead of a bar
    assert re.findall(r"^preprocess: (\d)/4 \(\d+ s\)$", err, re.M) == ["1", "2", "3", "4"]
    index = pd.read_csv(parallel / "index.csv", dtype=str)
    assert list(index.patient_id) == ["P1", "P2", "P3"]
    assert not (parallel / "patients" / "BAD.npz").exists()
    run = json.loads((parallel / "run.json").read_text(encoding="utf-8"))
    assert run["patients"] == {"computed": 3, "reused": 0, "failed": 1}
    assert run["failed"][0].startswith("BAD: ")
    # the same numbers whatever the number of jobs
    assert preprocess(manifest, serial, "--jobs", "1") == 1
    for pid in ("P1", "P2", "P3"):
        with np.load(parallel / "patients" / f"{pid}.npz") as a, \
                np.load(serial / "patients" / f"{pid}.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for name in a.files:
                np.testing.assert_array_equal(a[name], b[name])


def test_dicom_folder_with_two_series_needs_series_column(tmp_path, capsys):
    """P1's image is a folder of two series: one line naming patient, column, folder and both;
    with `series_T2FS` it is preprocessed, and naming the other series recomputes it."""
    data = tmp_path / "data"
    data.mkdir()
    manifest = write_cohort(data)
    image, _, _ = phantom(radius_mm=7.0, bias=0.2, seed=0)
    exam = data / "P1_exam"
    fs = write_dicom_series(sitk.Cast(image, sitk.sitkInt16), exam, description="T2 FS")
    other = write_dicom_series(sitk.Cast(image * 2, sitk.sitkInt16), exam, description="T2")
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame.loc[0, "image_T2FS"] = "P1_exam"
    frame.to_csv(manifest, index=False)
    cache = tmp_path / "cache"
    capsys.readouterr()
    assert preprocess(manifest, cache, "--no-n4") == 1
    assert counts(cache) == {"computed": 2, "reused": 0, "failed": 1}
    assert [line for line in capsys.readouterr().err.splitlines() if "P1" in line] == [
        f"failed: P1: {exam}: column image_T2FS: 2 DICOM image series in the folder; name one in "
        f"column series_T2FS: 'T2' {other} (16 slices), 'T2 FS' {fs} (16 slices)"]

    frame["series_T2FS"] = [fs, "", ""]
    frame.to_csv(manifest, index=False)
    assert preprocess(manifest, cache, "--no-n4") == 0
    assert counts(cache) == {"computed": 1, "reused": 2, "failed": 0}
    first = pd.read_csv(cache / "index.csv").set_index("patient_id").key
    frame["series_T2FS"] = [other, "", ""]
    frame.to_csv(manifest, index=False)
    assert preprocess(manifest, cache, "--no-n4") == 0
    assert counts(cache) == {"computed": 1, "reused": 2, "failed": 0}
    assert pd.read_csv(cache / "index.csv").set_index("patient_id").key["P1"] != first["P1"]


def test_bad_command_line_values_are_one_line_errors(manifest, tmp_path, capsys):
    assert preprocess(manifest, tmp_path / "c", "--jobs", "0") == 1
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert preprocess(manifest, tmp_path / "c", "--sequence", "T1") == 1
    assert "no image_T1 column" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.mark.realdata
def test_the_12_real_tcia_patients_preprocess(tcia_nifti_manifest, tmp_path):
    cache = tmp_path / "cache"
    assert main(["preprocess", str(tcia_nifti_manifest), "--sequence", "T1", "--out", str(cache),
                 "--preset", "quick", "--n4-grid-mm", "6", "--jobs", "2"]) == 0
    index = pd.read_csv(cache / "index.csv", dtype={"patient_id": str})
    manifest = pd.read_csv(tcia_nifti_manifest)
    assert list(index.patient_id) == list(manifest.patient_id)
    for row, mask_path in zip(index.itertuples(), manifest.mask_T1):
        mask = sitk.ReadImage(mask_path)
        voxels = sitk.GetArrayFromImage(mask)
        native_ml = voxels.sum() * np.prod(mask.GetSpacing()) / 1000
        # thick slices cover half a slice beyond their centres; the 1 mm slices cover the same
        z_extent_mm = (np.ptp(np.flatnonzero(voxels.any(axis=(1, 2)))) + 1) * mask.GetSpacing()[2]
        assert row.tumour_volume_ml == pytest.approx(native_ml, abs=1e-3)
        with np.load(cache / row.npz) as npz:
            assert npz["image"].shape == (row.n_slices, 64, 64)
            assert np.isfinite(npz["image"].astype(np.float32)).all()
            assert npz["area_mm2"].sum() / 1000 == pytest.approx(native_ml, rel=0.03)
            assert abs(row.n_slices - z_extent_mm) <= 2


def test_mask_pieces_small_are_dropped_large_are_kept_with_warnings(manifest, tmp_path, capsys):
    from scipy import ndimage

    mask_path = manifest.parent / "P1_mask.nii.gz"
    mask = sitk.ReadImage(str(mask_path))
    array = sitk.GetArrayFromImage(mask)
    array[2:4, 21:23, 25:27] = 1      # a 2 x 2 x 2 piece below the tumour: kept (> 1%)
    array[14, 22, 25] = 1             # one stray voxel above it: dropped (< 1%)
    pieces = sitk.GetImageFromArray(array)
    pieces.CopyInformation(mask)
    sitk.WriteImage(pieces, str(mask_path))
    labels, n = ndimage.label(array, structure=np.ones((3, 3, 3)))
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
    assert n == 3 and sizes[1] == 8 and sizes[2] == 1
    cache = tmp_path / "cache"
    capsys.readouterr()
    assert preprocess(manifest, cache) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        f"warning: P1: {mask_path}: dropped 1 mask piece(s) under 1% of the largest "
        f"(1 of {sizes.sum()} voxels)",
        f"warning: P1: {mask_path}: kept 2 separate mask pieces (the largest holds "
        f"{sizes[0] / (sizes[0] + 8):.1%} of the voxels); one crop spans them all"]
    spacing = np.array(mask.GetSpacing())
    z_of = lambda k: mask.TransformIndexToPhysicalPoint((0, 0, k))[2]  # noqa: E731
    with np.load(cache / "patients" / "P1.npz") as npz:
        assert float(npz["tumour_volume_ml"]) == pytest.approx(
            (sizes[0] + 8) * np.prod(spacing) / 1000)
        assert npz["z_mm"].min() <= z_of(3)                   # the kept piece's slices
        assert npz["z_mm"].max() < z_of(14) - spacing[2]      # none of the stray voxel's


def _alive_in_session(session: int) -> list[int]:
    """Processes (not zombies) of a session, read from /proc: they outlive a killed parent."""
    from pathlib import Path

    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_9_of_preprocess_leaves_no_worker_running(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "data"
    data.mkdir()
    rows = ["patient_id,image_T2FS,mask_T2FS"]
    for k in range(6):   # enough that the workers are still busy when the parent dies
        image, mask, _ = phantom(shape_zyx=(32, 128, 128), spacing=(0.6, 0.6, 1.5),
                                 radius_mm=15.0, seed=k)
        sitk.WriteImage(image, str(data / f"P{k}_img.nii.gz"))
        sitk.WriteImage(mask, str(data / f"P{k}_mask.nii.gz"))
        rows.append(f"P{k},P{k}_img.nii.gz,P{k}_mask.nii.gz")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen(
        [sys.executable, "-m", "sarcograde.cli", "preprocess", str(data / "manifest.csv"),
         "--out", str(tmp_path / "cache"), "--jobs", "2", "--preset", "quick"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill once a worker has finished a patient: both are then past their start-up and
        # computing the next ones.
        deadline = time.monotonic() + 240
        while not list((tmp_path / "cache" / "patients").glob("*.npz")):
            assert parent.poll() is None and time.monotonic() < deadline, "no patient finished"
            time.sleep(0.1)
        assert len(_alive_in_session(parent.pid)) >= 3   # the parent and its two workers
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        time.sleep(5.0)
        assert _alive_in_session(parent.pid) == []
    finally:
        for pid in _alive_in_session(parent.pid):   # never leave an orphan behind a failed test
            os.kill(pid, signal.SIGKILL)
