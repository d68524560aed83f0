"""Shared fixtures: the real TCIA data (skipped with a reason where absent) and headless plots."""

from __future__ import annotations

import locale
import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
TCIA_ROOT = REPO.parent / "shared" / "data" / "tcia-sts"
TCIA_PATIENTS = ["STS_002", "STS_003", "STS_004", "STS_008", "STS_012", "STS_015", "STS_024",
                 "STS_025", "STS_032", "STS_035", "STS_042", "STS_047"]


@pytest.fixture(autouse=True)
def keep_locale():
    """GDCM's DICOM writer (used by tests that build DICOM series) sets the C locale for the whole
    process, which would turn later text I/O in other tests to ASCII; put it back."""
    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: tiny networks on two cores run faster without OpenMP
    threads waiting on each other (a fold in training sets its own: train.threads_per_fold)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tcia_root() -> Path:
    """`../shared/data/tcia-sts` beside the clone; present in CI, absent in a user's clone."""
    if not (TCIA_ROOT / "nifti").is_dir():
        pytest.skip(f"real TCIA data not found at {TCIA_ROOT} (only present beside the CI clone)")
    return TCIA_ROOT


@pytest.fixture(scope="session")
def tcia_nifti_manifest(tcia_root, tmp_path_factory) -> Path:
    """A manifest of the 12 real patients' NIfTI T1 images and masks (sequence `T1`)."""
    out = tmp_path_factory.mktemp("tcia") / "manifest.csv"
    rows = ["patient_id,image_T1,mask_T1"]
    for pid in TCIA_PATIENTS:
        folder = tcia_root / "nifti" / pid
        rows.append(f"{pid},{folder / 'MR_T1_image.nii.gz'},{folder / 'MR_T1_mask.nii.gz'}")
    out.write_text("\n".join(rows) + "\n")
    return out


@pytest.fixture
def tcia_two_series(tcia_root, tmp_path) -> tuple[Path, str, str]:
    """STS_002's T1 series twice in one folder, as PACS exports a whole exam: the original and a
    copy with its own SeriesInstanceUID, SOPInstanceUIDs and SeriesDescription ('T1 copy').
    Returns the folder, the original's UID (the one its RTSTRUCT references) and the copy's."""
    import shutil

    import pydicom
    from pydicom.uid import generate_uid

    folder = tmp_path / "exam"
    folder.mkdir()
    copy_uid = generate_uid()
    for source in sorted((tcia_root / "dicom" / "STS_002" / "MR_T1" / "image").iterdir()):
        shutil.copy(source, folder / source.name)
        ds = pydicom.dcmread(source)
        original_uid = str(ds.SeriesInstanceUID)
        ds.SeriesInstanceUID, ds.SeriesDescription = copy_uid, "T1 copy"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"copy_{source.name}")
    return folder, original_uid, copy_uid
