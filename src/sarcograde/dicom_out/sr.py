"""grade.json as a DICOM Comprehensive 3D SR holding a TID 1500 Measurement Report (highdicom's
`MeasurementReport`): the device observer is sarcograde with the model package; one measurement
group (TID 1501) holds the patient's result (p_high, threshold, grade, borderline, spread, the
QA flags not tied to a sequence) and one volumetric ROI group (TID 1411) per graded sequence
refers to that sequence's tumour segment (the SEG written beside it, on the source series' SOP
instances) and holds its p_high, spread, attention shares and its own QA flags.
docs/dicom.md draws the content tree."""

from __future__ import annotations

from pydicom.sr.codedict import codes

from . import codes as sg
from .common import MANUFACTURER
from .sources import derived_uid

SERIES_NUMBER = 9900


def _measurements(values: dict, keys: tuple[str, ...]) -> list:
    from highdicom.sr import Measurement

    named = sg.measurement_codes()
    return [Measurement(name=named[key], value=float(values[key]), unit=sg.no_units())
            for key in keys if values.get(key) is not None]


def _evaluation(name: tuple[str, str], value) -> object:
    from highdicom.sr import QualitativeEvaluation

    return QualitativeEvaluation(name=sg.private(*name), value=value)


def _flags(result: dict, sequence: str | None) -> list:
    return [_evaluation(sg.QA_FLAG, sg.qa_flag_value(flag["code"]))
            for flag in result["qa_flags"] if flag.get("sequence") == sequence]


def _algorithm(name: str, result: dict, checksum: str):
    from highdicom.sr import AlgorithmIdentification

    return AlgorithmIdentification(name=name, version=result["model"]["version"] or "unknown",
                                   parameters=[f"package {result['model']['id']}",
                                               f"checksum {checksum}"])


def _tracking(identifier: str, *sources: str):
    from highdicom.sr import TrackingIdentifier

    return TrackingIdentifier(uid=derived_uid(*sources, identifier), identifier=identifier)


def result_group(result: dict, checksum: str):
    """The patient's result: fused (or the one sequence's) p_high, grade and spread."""
    from highdicom.sr import MeasurementsAndQualitativeEvaluations

    values = {"p_high": result["p_high"], "threshold": result["threshold"],
              **(result.get("spread") or {})}
    evaluations = [_evaluation(sg.GRADE, sg.private(*sg.GRADES[result["grade"]])),
                   _evaluation(sg.BORDERLINE, sg.yes_no(result["borderline"])),
                   *_flags(result, None)]
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(sg.FUSED, checksum, result["patient_id"]),
        finding_type=codes.SCT.Neoplasm,
        algorithm_id=_algorithm(result["model"]["graded_model"], result, checksum),
        measurements=_measurements(values, ("p_high", "threshold", "sd", "min", "max")),
        qualitative_evaluations=evaluations)


def sequence_group(result: dict, sequence: str, model_name: str, seg, series, checksum: str):
    """One sequence's p_high, spread and attention, on its tumour segment."""
    from highdicom.sr import (ReferencedSegment, SourceImageForSegmentation,
                              VolumetricROIMeasurementsAndQualitativeEvaluations)

    graded = result["sequences"][sequence]
    attention = result["attention"].get(sequence, {})
    values = {"p_high": graded["p_high"], **graded["spread"], **attention}
    segment = ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=1,
        source_images=[SourceImageForSegmentation(s.SOPClassUID, s.SOPInstanceUID)
                       for s in series.slices])
    evaluations = [*([_evaluation(sg.OFF_TUMOUR, sg.yes_no(attention["off_tumour"]))]
                     if attention else []), *_flags(result, sequence)]
    return VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(sequence, checksum, series.series_uid),
        referenced_segment=segment, finding_type=codes.SCT.Neoplasm,
        algorithm_id=_algorithm(model_name, result, checksum),
        measurements=_measurements(values, ("p_high", "sd", "min", "max", "inside",
                                            "on_tumour")),
        qualitative_evaluations=evaluations)


def structured_report(result: dict, model_names: dict[str, str], sources: dict, segs: dict,
                      checksum: str):
    """The SR of one patient's grade.json; `sources` and `segs` by sequence (`SourceSeries`,
    the SEG of its contour); the patient and study come from the first source series."""
    from highdicom.sr import (Comprehensive3DSR, DeviceObserverIdentifyingAttributes,
                              MeasurementReport, ObservationContext, ObserverContext)

    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=derived_uid(checksum, "device"), name="sarcograde",
            manufacturer_name=MANUFACTURER, model_name=result["model"]["graded_model"][:64],
            serial_number=checksum))
    groups = [result_group(result, checksum),
              *(sequence_group(result, seq, model_names[seq], segs[seq], sources[seq], checksum)
                for seq in sources)]
    report = MeasurementReport(observation_context=ObservationContext(
        observer_device_context=observer), procedure_reported=codes.LN.MRIUnspecifiedBodyRegion,
        imaging_measurements=groups)
    first = next(iter(sources.values()))
    evidence = [*(s for series in sources.values() for s in series.slices), *segs.values()]
    sr = Comprehensive3DSR(
        evidence=evidence, content=report,
        series_instance_uid=derived_uid(checksum, first.study_uid, result["patient_id"],
                                        "sr-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=derived_uid(checksum, first.study_uid, result["patient_id"], "sr"),
        instance_number=1, manufacturer=MANUFACTURER, is_complete=True)
    sr.CodingSchemeIdentificationSequence = sg.coding_scheme_identification()
    return sr
