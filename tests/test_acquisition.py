"""The acquisition of an image: its header read as written (a DICOM series against pydicom, a
NIfTI file against SimpleITK), the tumour's intensity after the z-score, the training range of
each value (minimum and maximum, no patient id) and a new patient's values against it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from sarcograde.acquisition import (FLAG, VALUES, compare, index_values, patient_values,
                                    read_header, training_ranges, tumour_intensity)
from sarcograde.formats.acquisition import INDEX_COLUMNS
from sarcograde.grade.result import acquisition_range
from sarcograde.sequence_image import SequenceImage


def nifti(path: Path, spacing=(3.0, 3.0, 5.0), size=(20, 16, 6)) -> Path:
    image = sitk.Image(list(size), sitk.sitkInt16)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def training_rows(spacings=(0.9, 1.0, 1.1)) -> pd.DataFrame:
    rows = [{"patient_id": f"SECRET{i}", "pixel_spacing_mm": s, "slice_spacing_mm": 4.0,
             "slice_thickness_mm": 4.0, "field_strength_t": "", "tumour_z_mean": 0.5 + i,
             "tumour_z_sd": 1.0, "slice_thickness_from": "slice spacing"}
            for i, s in enumerate(spacings)]
    return pd.DataFrame(rows).astype(str).replace("", "")


def test_a_nifti_header_gives_its_spacing_and_matrix_and_no_field_strength(tmp_path):
    header = read_header(SequenceImage("T1", nifti(tmp_path / "a.nii.gz", (0.8, 0.7, 4.5))))
    assert header.format == "NIfTI"
    assert header.pixel_spacing_mm == pytest.approx((0.7, 0.8))  # between rows, between columns
    assert header.slice_spacing_mm == pytest.approx(4.5)
    assert header.matrix == (16, 20) and header.n_slices == 6
    values = index_values(header, np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
    assert values["pixel_spacing_mm"] == 0.8 and values["slice_thickness_mm"] == 4.5
    assert values["slice_thickness_from"] == "slice spacing"
    assert values["field_strength_t"] == "" and values["tumour_z_mean"] == ""
    assert list(values) == INDEX_COLUMNS


def test_a_dicom_header_gives_its_tags(tcia_root):
    import pydicom

    folder = tcia_root / "dicom" / "STS_002" / "MR_T1" / "image"
    files = sorted(folder.glob("*.dcm"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    header = read_header(SequenceImage("T1", folder))
    assert header.format == "DICOM" and header.n_slices == len(files)
    assert header.pixel_spacing_mm == pytest.approx([float(v) for v in first.PixelSpacing])
    assert header.matrix == (first.Rows, first.Columns)
    assert header.dicom["SliceThickness"] == float(first.SliceThickness)
    assert header.dicom["Manufacturer"] == first.Manufacturer
    z = sorted(float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
               for f in files)  # an axial series: slices stacked along z
    assert header.slice_spacing_mm == pytest.approx(np.median(np.diff(z)))
    values = index_values(header, np.ones((1, 2, 2)), np.ones((1, 2, 2)))
    assert values["slice_thickness_from"] == "SliceThickness"
    assert values["slice_thickness_mm"] == round(float(first.SliceThickness), 4)


def test_the_tumour_intensity_is_over_the_tumour_voxels_only():
    image = np.arange(32, dtype=np.float16).reshape(2, 4, 4)
    mask = np.zeros((2, 4, 4), np.uint8)
    mask[1, 1:3, 1:3] = 1
    inside = image[1, 1:3, 1:3].astype(float)
    assert tumour_intensity(image, mask) == (pytest.approx(inside.mean()),
                                             pytest.approx(inside.std()))
    assert tumour_intensity(image, np.zeros_like(mask)) == (None, None)


def test_the_training_range_is_min_and_max_and_holds_no_id():
    rows = training_rows()
    block = training_ranges(rows)
    assert block["known"] and block["n_patients"] == 3
    assert block["values"]["pixel_spacing_mm"] == {"min": 0.9, "max": 1.1, "n": 3}
    assert block["values"]["tumour_z_mean"] == {"min": 0.5, "max": 2.5, "n": 3}
    assert block["values"]["field_strength_t"] is None  # unknown for every patient
    assert "SECRET" not in json.dumps(block)


def test_a_cache_without_the_columns_gives_no_range():
    rows = training_rows().drop(columns=list(VALUES))
    block = training_ranges(rows)
    assert block["known"] is False and "did not record the acquisition" in block["reason"]


def test_a_patient_outside_the_range_is_flagged_in_words_and_one_inside_is_not():
    block = training_ranges(training_rows())
    inside = patient_values({"pixel_spacing_mm": "1.0", "slice_spacing_mm": "4",
                             "slice_thickness_mm": "4", "field_strength_t": "1.5",
                             "tumour_z_mean": "1", "tumour_z_sd": "1"})
    compared = compare("T1", inside, block)
    assert compared["checked"] and compared["outside"] == []
    assert compared["unknown"] == ["field_strength_t"]  # the training cohort's is unknown
    coarse = {**inside, "pixel_spacing_mm": 3.0}
    compared = compare("T1", coarse, block)
    (outside,) = compared["outside"]
    assert (outside["value"], outside["patient"], outside["min"], outside["max"]) == (
        "pixel_spacing_mm", 3.0, 0.9, 1.1)
    assert outside["message"] == ("T1: in-plane pixel spacing 3 mm is outside the training "
                                  "range 0.9–1.1 mm (3 patients)")
    result, flags = acquisition_range({"T1": compared})
    assert result["checked"] and flags == [{"code": FLAG, "sequence": "T1",
                                            "message": outside["message"]}]


def test_a_package_without_ranges_is_not_checked_and_says_why():
    values = patient_values({"pixel_spacing_mm": "3"})
    compared = compare("T1", values, None)
    assert compared["checked"] is False and "exported before" in compared["reason"]
    result, flags = acquisition_range({"T1": compared})
    assert result == {"checked": False, "sequences": {"T1": compared}, "outside": [],
                      "reason": compared["reason"]} and flags == []


# --- check's acquisition table ---------------------------------------------------------------

def test_check_writes_the_dicom_tags_of_the_tcia_patients_and_a_summary(tcia_root, tmp_path):
    import pydicom

    from sarcograde.cli import main
    from sarcograde.formats.acquisition import (ACQUISITION_SUMMARY, PROTOCOL_COLUMNS,
                                                AcquisitionTable)

    series = tcia_root / "dicom" / "STS_002" / "MR_T1"
    nifti_image = tcia_root / "nifti" / "STS_003" / "MR_T1_image.nii.gz"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "patient_id,site,grade,image_T1,mask_T1\n"
        f"STS_002,tcia,3,{series / 'image'},{series / 'mask' / 'RS.dcm'}\n"
        f"STS_003,tcia,1,{nifti_image},{nifti_image.parent / 'MR_T1_mask.nii.gz'}\n")
    assert main(["check", str(manifest), "--out", str(tmp_path / "qa")]) == 0
    table = AcquisitionTable.read(tmp_path / "qa").frame.set_index("patient_id")
    assert list(table.reset_index().columns) == PROTOCOL_COLUMNS

    files = sorted((series / "image").glob("*.dcm"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    dicom = table.loc["STS_002"]
    assert dicom["format"] == "DICOM" and dicom["n_slices"] == len(files)
    for keyword, column in (("Manufacturer", "manufacturer"),
                            ("ManufacturerModelName", "model"), ("SequenceName", "sequence_name")):
        assert dicom[column] == str(first.get(keyword, "") or ""), column
    for keyword, column in (("MagneticFieldStrength", "field_strength_t"),
                            ("RepetitionTime", "repetition_time_ms"),
                            ("EchoTime", "echo_time_ms"), ("FlipAngle", "flip_angle_deg"),
                            ("SliceThickness", "slice_thickness_mm")):
        expected = first.get(keyword)
        if expected is None:  # not in this export's headers: empty, never guessed
            assert pd.isna(pd.to_numeric(dicom[column])), column
        else:
            assert float(dicom[column]) == pytest.approx(float(expected)), column
    assert (dicom["pixel_spacing_row_mm"], dicom["pixel_spacing_column_mm"]) == pytest.approx(
        [float(v) for v in first.PixelSpacing])
    assert (dicom["matrix_rows"], dicom["matrix_columns"]) == (first.Rows, first.Columns)
    z = sorted(float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
               for f in files)
    assert dicom["slice_spacing_mm"] == pytest.approx(np.median(np.diff(z)), abs=1e-6)

    image = sitk.ReadImage(str(nifti_image))  # a NIfTI gives what its header holds
    nifti_row = table.loc["STS_003"]
    assert nifti_row["format"] == "NIfTI" and nifti_row["manufacturer"] == ""
    assert (nifti_row["matrix_columns"], nifti_row["matrix_rows"], nifti_row["n_slices"]) == \
        image.GetSize()
    assert nifti_row["slice_spacing_mm"] == pytest.approx(image.GetSpacing()[2], abs=1e-6)

    text = (tmp_path / "qa" / "acquisition.csv").read_text()
    # no identifying tag's value (the TCIA export's PatientName is the pseudonym, the id here)
    for tag in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName",
                "AccessionNumber", "ReferringPhysicianName"):
        value = str(first.get(tag, "") or "")
        if value and value != "STS_002":
            assert value not in text, tag
    summary = pd.read_csv(tmp_path / "qa" / ACQUISITION_SUMMARY, dtype=str)
    (row,) = summary.itertuples(index=False)
    assert (row.site, row.sequence, row.n) == ("tcia", "T1", "2")
    assert row.format == "DICOM (1), NIfTI (1)"
    rows = sorted([int(dicom["matrix_rows"]), int(nifti_row["matrix_rows"])])
    assert row.matrix_rows == f"{np.median(rows):.4g} ({rows[0]}–{rows[1]})"
