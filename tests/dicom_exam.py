"""A synthetic DICOM exam written with pydicom: MR image series (one file per slice, MR Image
Storage) of one patient and study, with identifying attributes in every slice (name, birth date,
MRN, accession number, institution), so that tests can check what outputs copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "MRN-4711", "PatientBirthDate": "19600101",
           "PatientSex": "F"}
STUDY = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77001", "StudyDate": "20240102",
         "StudyTime": "101500", "StudyID": "S1", "AccessionNumber": "ACC-99",
         "ReferringPhysicianName": "Who^Doctor"}
INSTITUTION = "St Example Hospital"
FRAME_OF_REFERENCE = "1.2.826.0.1.3680043.8.498.77002"


def _slice(image: sitk.Image, z: int, series_uid: str, number: int, description: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE, meta.MediaStorageSOPInstanceUID
    for key, value in {**PATIENT, **STUDY}.items():
        setattr(ds, key, value)
    ds.Modality, ds.Manufacturer, ds.InstitutionName = "MR", "Synthetic", INSTITUTION
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, number, description
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = FRAME_OF_REFERENCE, ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
    ds.MRAcquisitionType, ds.EchoTrainLength = "2D", 1
    ds.RepetitionTime, ds.EchoTime, ds.MagneticFieldStrength = 500, 10, 1.5
    ds.InstanceNumber, ds.AcquisitionNumber = z + 1, 1
    ds.ContentDate, ds.ContentTime = STUDY["StudyDate"], STUDY["StudyTime"]
    ds.PatientPosition = "HFS"
    spacing, direction = image.GetSpacing(), image.GetDirection()
    ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]   # row spacing, column spacing
    ds.SliceThickness = f"{spacing[2]:.6g}"
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*direction[0::3], *direction[1::3])]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, z))]
    pixels = sitk.GetArrayFromImage(image)[z].astype(np.int16)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = pixels.tobytes()
    return ds


def write_series(image: sitk.Image, folder: Path, description: str, number: int
                 ) -> tuple[str, list[str]]:
    """`image` (integer voxels) as an MR series in `folder`; its SeriesInstanceUID and its
    SOPInstanceUIDs in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = str(generate_uid())
    sops = []
    for z in range(image.GetDepth()):
        ds = _slice(image, z, series_uid, number, description)
        ds.save_as(folder / f"{number}_{z:03d}.dcm", enforce_file_format=True)
        sops.append(str(ds.SOPInstanceUID))
    return series_uid, sops
