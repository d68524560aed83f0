"""`sarcograde grade --dicom-out`: a synthetic two-sequence DICOM exam (the `new` site's patient of
test_grade, written as MR series with identifying attributes) graded with test_grade's package.
The SR read back with pydicom holds grade.json's numbers, codes and package, and refers to every
source SOP instance and to the SEG of each sequence's contour; the SEG of the drawn sequence is
its mask voxel for voxel; each sequence's attention map lies on its source series' slices;
patient and study are copied, no other identifying attribute, and no identifier leaks into the
other outputs; dciodvfy finds no error in any object; a NIfTI input is refused in one line; the
SEG written, put in the exam, is found as its contour and gives the same result.

The round trip through a real PACS: Orthanc with its DICOMweb plugin (Debian's packages, skipped
where absent), started here on a loopback port with a throw-away storage folder: the exam and its
SEG uploaded, `grade --pacs --study --store`, and the study then holds an SR equal to grade.json;
a PACS that is down is one line saying nothing was stored; one that refuses an object mid-store
is one line naming the objects it took, and it holds exactly those."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from sarcograde.cli import main
from sarcograde.formats.dicom_out import SR_NAME, dicom_folder, map_name, montage_name, seg_name
from sarcograde.formats.grade import grade_path, read_grade
from sarcograde.formats.package import MODEL_JSON
from sarcograde.io import read_image
from dicom_exam import INSTITUTION, PATIENT, STUDY, write_series
from test_grade import SEQUENCES, built, new_patient  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DESCRIPTIONS = {"T1FSGd": "T1 FS Gd axial", "T2FS": "T2 FS axial"}
IMAGING_MEASUREMENTS, REFERENCED_SEGMENT, SOURCE_IMAGE = "126010", "121191", "121233"
TRACKING_ID, DEVICE_SERIAL = "112039", "121016"
KNOWN_WARNINGS = ("<99SARCOGRADE>", "<QUANTITY>",
                  "Laterality(0020,0060)> - is only permitted to be empty when actually unknown")


@pytest.fixture(scope="module")
def graded(built, tmp_path_factory):
    """The exam, its series' UIDs and SOP instances, and the folder graded with --dicom-out."""
    root = tmp_path_factory.mktemp("dicom-out")
    row = new_patient(built)
    series = {seq: write_series(sitk.ReadImage(str(built / "new" / row[f"image_{seq}"])),
                                root / "exam", DESCRIPTIONS[seq], number)
              for number, seq in enumerate(SEQUENCES, start=1)}
    # the contour on the DICOM series' own geometry (NIfTI rounds it to float32, and
    # preprocessing's crop follows the mask's geometry to the micrometre)
    reference = read_image(root / "exam", series["T1FSGd"][0])
    mask = sitk.GetImageFromArray(sitk.GetArrayFromImage(
        sitk.ReadImage(str(built / "new" / row["mask_T1FSGd"]))))
    mask.CopyInformation(reference)
    sitk.WriteImage(mask, str(root / "mask.nrrd"))
    mask = root / "mask.nrrd"
    assert main(["grade", "--model", str(built / "pkg"), "--exam", str(root / "exam"),
                 "--mask", f"T1FSGd={mask}", "--out", str(root / "out"), "--id", "case-1",
                 "--device", "cpu", "--dicom-out"]) == 0
    return root / "out", series, mask


def _value(code) -> str:
    """A code's value (LongCodeValue where it is longer than 16 characters)."""
    return str(code.get("CodeValue") or code.LongCodeValue)


def _code(item) -> str:
    return _value(item.ConceptNameCodeSequence[0])


def _groups(sr) -> dict[str, dict]:
    """Each measurement group by tracking identifier: its numbers (FD), coded values (lists),
    referenced segment and source images, algorithm parameters."""
    container, = [item for item in sr.ContentSequence if _code(item) == IMAGING_MEASUREMENTS]
    groups = {}
    for group in container.ContentSequence:
        parsed = {"num": {}, "code": {}, "segment": None, "sources": [], "text": []}
        for item in group.ContentSequence:
            if item.ValueType == "NUM":
                parsed["num"][_code(item)] = float(item.MeasuredValueSequence[0]
                                                   .FloatingPointValue)
            elif item.ValueType == "CODE":
                parsed["code"].setdefault(_code(item), []).append(
                    (item.ConceptCodeSequence[0].CodingSchemeDesignator,
                     _value(item.ConceptCodeSequence[0])))
            elif item.ValueType == "IMAGE" and _code(item) == REFERENCED_SEGMENT:
                parsed["segment"] = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            elif item.ValueType == "IMAGE" and _code(item) == SOURCE_IMAGE:
                parsed["sources"].append(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            elif item.ValueType == "TEXT":
                parsed["text"].append(str(item.TextValue))
        identifier, = [str(i.TextValue) for i in group.ContentSequence
                       if _code(i) == TRACKING_ID]
        groups[identifier] = parsed
    return groups


def _flags(result: dict, sequence: str | None) -> list:
    return [("99SARCOGRADE", f["code"].upper()) for f in result["qa_flags"]
            if f["sequence"] == sequence]


def test_sr_holds_grade_json_and_refers_to_the_source_instances_and_contours(graded, built):
    out, series, _ = graded
    result = read_grade(grade_path(out, "case-1"))
    folder = dicom_folder(out, "case-1")
    sr = pydicom.dcmread(folder / SR_NAME)
    checksum = json.loads((built / "pkg" / MODEL_JSON).read_text())["checksum"]
    assert result["model"]["checksum"] == checksum
    device = {_code(i): str(i.TextValue) for i in sr.ContentSequence if i.ValueType == "TEXT"}
    assert device[DEVICE_SERIAL] == checksum
    groups = _groups(sr)
    assert sorted(groups) == sorted(["fused", *SEQUENCES])
    fused = groups["fused"]
    spread = result["spread"]
    assert fused["num"] == {"P_HIGH": result["p_high"], "THRESHOLD": result["threshold"],
                            "P_HIGH_SD": spread["sd"], "P_HIGH_MIN": spread["min"],
                            "P_HIGH_MAX": spread["max"]}
    assert fused["code"]["GRADE"] == [("99SARCOGRADE", result["grade"].upper())]
    assert fused["code"]["BORDERLINE"] == [("SCT", "373066001" if result["borderline"]
                                            else "373067005")]
    assert fused["code"].get("QA_FLAG", []) == _flags(result, None)
    assert f"checksum {checksum}" in fused["text"] and result["model"]["graded_model"] in \
        fused["text"]
    assert {s for g in groups.values() for s in g["sources"]} == {
        uid for _, sops in series.values() for uid in sops}
    for seq in SEQUENCES:
        graded_seq, attention = result["sequences"][seq], result["attention"][seq]
        group = groups[seq]
        assert group["num"] == {"P_HIGH": graded_seq["p_high"],
                                "P_HIGH_SD": graded_seq["spread"]["sd"],
                                "P_HIGH_MIN": graded_seq["spread"]["min"],
                                "P_HIGH_MAX": graded_seq["spread"]["max"],
                                "ATTN_INSIDE": attention["inside"],
                                "ATTN_ON_TUMOUR": attention["on_tumour"]}
        assert group["code"].get("QA_FLAG", []) == _flags(result, seq)
        assert group["code"]["ATTN_OFF_TUMOUR"] == [
            ("SCT", "373066001" if attention["off_tumour"] else "373067005")]
        assert group["sources"] == series[seq][1]
        seg = pydicom.dcmread(folder / seg_name(seq), stop_before_pixels=True)
        assert group["segment"] == seg.SOPInstanceUID
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series[seq][0]
    # the T2FS contour was carried (acquisition flags may join it: a tiny training cohort's
    # ranges are narrow), and every flag of grade.json is in the SR (checked above)
    assert ("99SARCOGRADE", "CONTOUR_CARRIED") in _flags(result, "T2FS")
    assert ("99SARCOGRADE", "CONTOUR_CARRIED") not in _flags(result, "T1FSGd")
    evidence = {ref.ReferencedSOPInstanceUID
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for s in study.ReferencedSeriesSequence for ref in s.ReferencedSOPSequence}
    assert evidence >= {uid for _, sops in series.values() for uid in sops}


def test_seg_of_the_drawn_sequence_is_its_mask_voxel_for_voxel(graded):
    out, series, mask = graded
    seg = pydicom.dcmread(dicom_folder(out, "case-1") / seg_name("T1FSGd"))
    frames = seg.pixel_array.astype(bool)
    order = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
             for f in seg.PerFrameFunctionalGroupsSequence]
    by_sop = dict(zip(order, frames))
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(mask))).astype(bool)
    rebuilt = np.stack([by_sop[uid] for uid in series["T1FSGd"][1]])
    assert expected.any() and np.array_equal(rebuilt, expected)


def test_attention_map_on_each_source_series(graded):
    out, series, _ = graded
    for seq in SEQUENCES:
        pm = pydicom.dcmread(dicom_folder(out, "case-1") / map_name(seq))
        assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == series[seq][0]
        sources = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                   for f in pm.PerFrameFunctionalGroupsSequence}
        assert sources == set(series[seq][1]) and pm.pixel_array.max() > 0
        montage = pydicom.dcmread(dicom_folder(out, "case-1") / montage_name(seq))
        assert montage.SamplesPerPixel == 3 and montage.StudyInstanceUID == STUDY[
            "StudyInstanceUID"]


def test_patient_and_study_copied_and_no_identifier_elsewhere(graded):
    out, _, _ = graded
    for path in sorted(dicom_folder(out, "case-1").iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for key, value in {**PATIENT, **STUDY}.items():
            assert str(ds.get(key)) == value, (path.name, key)
        assert "InstitutionName" not in ds
    shown = [PATIENT["PatientID"], PATIENT["PatientName"], STUDY["AccessionNumber"], INSTITUTION]
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".dcm" and path.parent.name != "cache":
            text = path.read_bytes().decode("utf-8", errors="replace")
            assert not [s for s in shown if s in text], path


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not installed (Debian package dicom3tools; .ci/run installs "
                           "it)")
def test_dciodvfy_finds_no_error_in_any_object(graded):
    out, _, _ = graded
    paths = sorted(dicom_folder(out, "case-1").iterdir())
    assert [p.name for p in paths] == sorted([SR_NAME, *(name(seq) for seq in SEQUENCES for name
                                                         in (seg_name, map_name, montage_name))])
    for path in paths:
        report = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True)
        lines = (report.stdout + report.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert errors == [], (path.name, errors)
        # the warnings docs/dicom.md explains: the private coding scheme, the parametric map's
        # QUANTITY (newer than dciodvfy's dictionary), a Laterality the source does not give
        assert all(any(known in line for known in KNOWN_WARNINGS)
                   for line in lines if line.startswith("Warning")), (path.name, lines)


def test_dicom_out_from_image_files_is_refused_in_one_line(built, tmp_path, capsys):
    row = new_patient(built)
    base = built / "new"
    argv = ["grade", "--model", str(built / "pkg"), "--out", str(tmp_path / "out"),
            "--image", f"T1FSGd={base / row['image_T1FSGd']}",
            "--mask", f"T1FSGd={base / row['mask_T1FSGd']}", "--device", "cpu", "--dicom-out"]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dicom-out needs DICOM inputs" in err
    assert not (tmp_path / "out" / "patient").exists()



def test_the_seg_written_is_the_contour_found_in_the_exam_when_graded_again(graded, built,
                                                                            tmp_path):
    """The exam with the T1FSGd SEG that --dicom-out wrote in place of --mask: grade finds the
    SEG as the contour of the series it references and gives the same result."""
    out, _, _ = graded
    exam = tmp_path / "exam"
    shutil.copytree(out.parent / "exam", exam)
    shutil.copy(dicom_folder(out, "case-1") / seg_name("T1FSGd"), exam / "contour.dcm")
    assert main(["grade", "--model", str(built / "pkg"), "--exam", str(exam), "--out",
                 str(tmp_path / "again"), "--id", "case-1", "--device", "cpu"]) == 0
    again, first = (read_grade(grade_path(folder, "case-1")) for folder in (tmp_path / "again",
                                                                            out))
    assert again["p_high"] == first["p_high"] and again["sequences"] == first["sequences"]


ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def orthanc(tmp_path):
    """An Orthanc of its own (loopback only, storage in tmp_path), stopped afterwards; its
    HTTP root URL."""
    if not (ORTHANC.exists() and DICOMWEB_PLUGIN.exists()):
        pytest.skip("Orthanc with its DICOMweb plugin not installed (Debian packages orthanc "
                    "and orthanc-dicomweb; .ci/run installs them)")
    import requests

    port = _free_port()
    config = tmp_path / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "sarcograde-test", "StorageDirectory": str(tmp_path / "storage"),
        "IndexDirectory": str(tmp_path / "storage"), "HttpPort": port,
        "DicomPort": _free_port(), "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}))
    log = (tmp_path / "orthanc.log").open("w")
    server = subprocess.Popen([str(ORTHANC), str(config)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{url}/system", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            pytest.fail(f"Orthanc did not start: {(tmp_path / 'orthanc.log').read_text()[-500:]}")
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_orthanc_round_trip(graded, built, orthanc, tmp_path):
    import requests
    from dicomweb_client import DICOMwebClient

    url, _ = orthanc
    out, _, _ = graded
    uploads = [*sorted((out.parent / "exam").iterdir()),
               dicom_folder(out, "case-1") / seg_name("T1FSGd")]
    for path in uploads:
        assert requests.post(f"{url}/instances", data=path.read_bytes(), timeout=30).ok
    started = time.perf_counter()
    assert main(["grade", "--model", str(built / "pkg"), "--pacs", f"{url}/dicom-web",
                 "--study", STUDY["StudyInstanceUID"], "--store", "--out",
                 str(tmp_path / "out"), "--id", "case-1", "--device", "cpu"]) == 0
    print(f"round trip of one patient: {time.perf_counter() - started:.1f} s")
    result = read_grade(grade_path(tmp_path / "out", "case-1"))
    client = DICOMwebClient(f"{url}/dicom-web")
    found = client.search_for_instances(study_instance_uid=STUDY["StudyInstanceUID"],
                                        search_filters={"Modality": "SR"})
    assert len(found) == 1
    series_uid, sop_uid = (found[0][tag]["Value"][0] for tag in ("0020000E", "00080018"))
    sr = client.retrieve_instance(STUDY["StudyInstanceUID"], series_uid, sop_uid)
    fused = _groups(sr)["fused"]
    assert fused["num"]["P_HIGH"] == result["p_high"]
    assert fused["code"]["GRADE"] == [("99SARCOGRADE", result["grade"].upper())]
    stored = client.search_for_instances(study_instance_uid=STUDY["StudyInstanceUID"])
    assert {i["00080018"]["Value"][0] for i in stored} >= {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
        for p in dicom_folder(tmp_path / "out", "case-1").iterdir()}


def test_a_pacs_that_is_down_is_one_line_saying_what_was_stored(graded, orthanc):
    from sarcograde.dicom_out.pacs import store
    from sarcograde.errors import SarcogradeError

    url, server = orthanc
    server.terminate()
    server.wait(timeout=30)
    out, _, _ = graded
    paths = sorted(dicom_folder(out, "case-1").iterdir())
    with pytest.raises(SarcogradeError) as refused:
        store(f"{url}/dicom-web", paths)
    line = str(refused.value)
    assert len(line.splitlines()) == 1 and "stored: nothing" in line
    assert all(p.name in line for p in paths)


def test_a_refusal_mid_store_is_one_line_naming_what_went_in(graded, orthanc, tmp_path):
    """Orthanc refuses an object without its UIDs (HTTP 400) between two good ones: the line
    names the one stored before it, and the PACS holds exactly that one."""
    from dicomweb_client import DICOMwebClient

    from sarcograde.dicom_out.pacs import store
    from sarcograde.errors import SarcogradeError

    url, _ = orthanc
    out, _, _ = graded
    folder = dicom_folder(out, "case-1")
    broken = pydicom.dcmread(folder / SR_NAME)
    del broken.SOPInstanceUID, broken.StudyInstanceUID
    broken.save_as(tmp_path / "broken.dcm", enforce_file_format=False)
    paths = [folder / seg_name("T1FSGd"), tmp_path / "broken.dcm", folder / SR_NAME]
    with pytest.raises(SarcogradeError) as refused:
        store(f"{url}/dicom-web", paths)
    line = str(refused.value)
    assert len(line.splitlines()) == 1 and "did not take broken.dcm (HTTP 400" in line
    assert f"stored: {seg_name('T1FSGd')}; not stored: broken.dcm, {SR_NAME}" in line
    held = DICOMwebClient(f"{url}/dicom-web").search_for_instances()
    assert [i["00080018"]["Value"][0] for i in held] == [
        pydicom.dcmread(paths[0], stop_before_pixels=True).SOPInstanceUID]


def test_orthanc_stopped_mid_store_is_one_line_naming_what_went_in(graded, orthanc,
                                                                   monkeypatch):
    """Orthanc is stopped right after it took the first object: the line names that one as
    stored and every other as not stored."""
    from dicomweb_client import DICOMwebClient

    from sarcograde.dicom_out.pacs import store
    from sarcograde.errors import SarcogradeError

    url, server = orthanc
    original = DICOMwebClient.store_instances

    def store_then_stop(self, *args, **kwargs):
        taken = original(self, *args, **kwargs)
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        return taken

    monkeypatch.setattr(DICOMwebClient, "store_instances", store_then_stop)
    out, _, _ = graded
    paths = sorted(dicom_folder(out, "case-1").iterdir())
    with pytest.raises(SarcogradeError) as refused:
        store(f"{url}/dicom-web", paths)
    line = str(refused.value)
    assert len(line.splitlines()) == 1
    assert (f"stored: {paths[0].name}; not stored: "
            f"{', '.join(p.name for p in paths[1:])}") in line
