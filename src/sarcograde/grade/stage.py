"""Grade new patients with a model package (`sarcograde export`): one patient from its files
(`--image SEQ=PATH --mask SEQ=PATH`) or its whole DICOM exam (`--exam FOLDER`), or a batch from
a manifest (`--manifest CSV`).

Each patient is preprocessed exactly with the package's settings into `DIR/<id>/cache/<SEQ>/`
(the preprocess stage's own pipeline; a contour drawn on one sequence is carried to the others),
each sequence's p_high is `predict`'s (the package's fold models, the paper's mean-logit rule,
fp32 unless `--precision` says otherwise), fused with the package's fusion where it has one, and
graded at its threshold; each sequence's attention on the tumour is `explain`'s (its defaults).
Writes `DIR/<id>/grade.json` and `DIR/<id>/case-report.html`, and for a batch `DIR/grades.csv`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import acquisition
from ..artifacts import RunRecord
from ..cohort import Patient
from ..console import info, warn
from ..engines import ENGINES, engine_for_precision, engine_record
from ..errors import SarcogradeError
from ..formats.cache import CacheIndex, write_cache_config, write_index
from ..formats.grade import (ATTENTION, CACHE, GRADES, SLICE_LOGITS, case_report_path,
                             failure_row, grades_row, patient_folder, remove_patient_outputs,
                             write_grade, write_grades)
from ..formats.package import Package, package_file, read_package
from ..masks import mask_source
from ..sequence_image import sequence_image
from . import result as rules
from .inputs import DEFAULT_ID, patients_of

PRECISIONS = ("fp32", "bf16")
# Options whose values are the patient's files: run.json shows them as <PATH> unless --identify
# (a folder or file name may be the patient's name).
INPUT_OPTIONS = ("--image", "--mask", "--exam", "--manifest")


def recorded_argv(argv: list[str]) -> list[str]:
    """The command line with the patient's file names replaced by <PATH> (SEQ= kept)."""
    shown, hide = [], False
    for arg in argv:
        option, equals, _ = arg.partition("=")
        if hide:
            sequence, _, path = arg.partition("=")
            shown.append(f"{sequence}=<PATH>" if path and "/" not in sequence else "<PATH>")
        elif option in INPUT_OPTIONS and equals:
            shown.append(f"{option}=<PATH>")
        else:
            shown.append(arg)
        hide = arg in INPUT_OPTIONS
    return shown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, metavar="PKG",
                        help="model package (folder or zip) written by `sarcograde export`")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder: DIR/<id>/grade.json and case-report.html")
    parser.add_argument("--image", action="append", default=[], metavar="SEQ=PATH",
                        help="one patient's image of a sequence (repeat per sequence)")
    parser.add_argument("--mask", action="append", default=[], metavar="SEQ=PATH",
                        help="its tumour mask, RTSTRUCT or DICOM SEG; one drawn on one "
                             "sequence is carried to the others")
    parser.add_argument("--id", default=DEFAULT_ID, metavar="PSEUDONYM",
                        help=f"the patient's pseudonymous id in the outputs (default: {DEFAULT_ID})")
    parser.add_argument("--manifest", type=Path, metavar="CSV",
                        help="a batch: a manifest (docs/manifest.md) with image_<SEQ> and "
                             "mask_<SEQ> columns; also writes DIR/grades.csv")
    parser.add_argument("--exam", type=Path, metavar="FOLDER",
                        help="one patient's whole DICOM exam: each sequence's series found by "
                             "the package's SeriesDescription rules, the contour an RTSTRUCT in "
                             "the folder (or --mask SEQ=PATH)")
    parser.add_argument("--series", action="append", default=[], metavar="SEQ=UID",
                        help="with --exam: the SeriesInstanceUID of SEQ's series, instead of "
                             "the rules")
    parser.add_argument("--identify", action="store_true",
                        help="show the input files (which may name the patient) in the case "
                             "report; by default it shows only the pseudonymous id")
    parser.add_argument("--dicom-out", action="store_true",
                        help="DICOM inputs only: also write DIR/<id>/dicom/ with a DICOM SR of "
                             "the result and, per sequence, its contour (SEG), attention map "
                             "(Parametric Map) and montage (Secondary Capture), for the "
                             "patient's exam in PACS")
    parser.add_argument("--pacs", metavar="URL",
                        help="a DICOMweb service (e.g. http://localhost:8042/dicom-web): "
                             "retrieve the exam --study from it and grade it as --exam, with "
                             "--dicom-out")
    parser.add_argument("--study", metavar="UID", help="with --pacs: the StudyInstanceUID")
    parser.add_argument("--store", action="store_true",
                        help="with --pacs: send the DICOM objects written back to the PACS")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (default, the same numbers on every device) or bf16")
    parser.add_argument("--batch-size", type=int, default=64, help="slices per forward pass")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference engine (default auto: ONNX Runtime, else OpenVINO, "
                             "else torch on the CPU; torch on a GPU or in bf16)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for the engine (default: all)")


def preprocess_sequence(package: Package, patient: Patient, sequence: str, cache: Path):
    """The patient's sequence preprocessed with the package's settings into its own cache;
    the cache's index rows and config (for `predict_cache`)."""
    from ..preprocess.stage import Task, index_row, package_params, process_patient

    params = package_params(package, sequence)
    source = mask_source(patient, sequence)
    outcome = process_patient(Task(patient.patient_id, sequence_image(patient, sequence), source,
                                   cache, params, preview=False))
    if outcome.status == "failed":
        raise SarcogradeError(outcome.error)
    write_index(cache, [index_row(patient, sequence, outcome)])
    config = {"sequence": sequence, **params.as_dict()}
    write_cache_config(cache, config)
    return CacheIndex.read(cache).rows(drop_empty=True), config


def explain_settings() -> dict:
    """explain's default method, batch size, ring, attention floor and montage size, as
    `sarcograde explain` takes
    them without options (read from its parser, so the two cannot drift apart)."""
    from .. import explain

    parser = argparse.ArgumentParser()
    explain.add_arguments(parser)
    return {name: parser.get_default(name) for name in ("method", "batch_size", "ring_mm",
                                                         "min_attention", "montage_slices")}


def attention(ensemble, sequence: str, cache: Path, index, folder: Path) -> dict:
    """explain's attention on one sequence (Grad-CAM of the predicted class, reusing the slice
    logits just computed): the shares inside the tumour, in the ring and elsewhere, the
    off-tumour flag, and the montage's file name under DIR/<id>/."""
    from ..explain import ExplainJob, explain_patients
    from ..formats.predictions import montage_path

    out = folder / ATTENTION / sequence
    job = ExplainJob(run=ensemble.run_dir, cache=cache, out=out, device=ensemble.device.type,
                     slice_logits=cache / SLICE_LOGITS, **explain_settings())
    (summary, _), = explain_patients(job, ensemble, index)
    return {"inside": summary["inside"], "ring": summary["ring"],
            "elsewhere": summary["elsewhere"], "on_tumour": summary["inside"] + summary["ring"],
            "off_tumour": summary["off_tumour"], "ring_mm": job.ring_mm,
            "min_attention": job.min_attention, "method": job.method,
            "montage": montage_path(out, summary["patient_id"]).relative_to(folder).as_posix()}


def grade_patient(package: Package, patient: Patient, out: Path, ensembles: dict,
                  precision, batch_size: int) -> dict:
    """Preprocess, predict, fuse and grade one patient; grade.json's content."""
    from ..ensemble import check_cache_fits
    from ..predict import predict_cache, prediction_row

    folder = patient_folder(out, patient.patient_id)
    predictions, per_model, flags, attended, compared = {}, {}, [], {}, {}
    for sequence in package.sequences:
        if sequence not in patient.images:
            flags.append(rules.flag("sequence_missing", f"no {sequence} image: graded without "
                                    "it", sequence))
            continue
        source = mask_source(patient, sequence)
        if source is None:
            raise SarcogradeError("no tumour contour on any sequence", patient=patient.patient_id)
        if source.carried:
            flags.append(rules.flag("contour_carried", f"the {sequence} contour was carried "
                                    f"from the one drawn on {source.sequence}", sequence))
        cache = folder / CACHE / sequence
        index, config = preprocess_sequence(package, patient, sequence, cache)
        compared[sequence] = acquisition.compare(
            sequence, acquisition.patient_values(index.iloc[0]),
            package.models[sequence].settings.get("acquisition_range"))
        ensemble = ensembles[sequence]
        check_cache_fits(ensemble, config, cache)
        logits = predict_cache(ensemble, cache, index, cache / SLICE_LOGITS,
                               batch_size=batch_size, precision=precision)[patient.patient_id]
        predictions[sequence] = prediction_row(patient.patient_id, logits, ensemble.names)
        per_model[sequence] = {name: predictions[sequence][f"p_{name}"]
                               for name in ensemble.names}
        attended[sequence] = attention(ensemble, sequence, cache, index, folder)
        if attended[sequence]["off_tumour"]:
            flags.append(rules.flag("attention_off_tumour", f"the {sequence} models looked "
                                    "mostly outside the tumour and its ring", sequence))
    engine = engine_record(next(iter(ensembles.values())).engine)
    return {**rules.result(patient.patient_id, package, predictions, per_model, flags, compared),
            "attention": attended, **engine}


def run(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..dicom_out import check_dicom_input, write_dicom
    from ..ensemble import package_ensemble, resolve_precision
    from .report import write_case_report

    import torch

    if args.batch_size < 1:
        raise SarcogradeError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pacs is not None:
        from ..dicom_out.pacs import grade_from_pacs

        return grade_from_pacs(args, run)
    if args.study or args.store:
        raise SarcogradeError("--study and --store go with --pacs URL")
    package = read_package(args.model)
    patients = patients_of(args, package)
    if args.dicom_out:
        for patient in patients:
            check_dicom_input(patient)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    engine = engine_for_precision(args.engine, precision)
    ensembles = {seq: package_ensemble(package, seq, device, engine)
                 for seq in package.sequences}
    rows, failed = [], []
    with RunRecord(args.out, config={"precision": args.precision, "device": device.type,
                                     "model_id": package.id, "identify": args.identify,
                                     **engine_record(ensembles[package.sequences[0]].engine)},
                   inputs={"model": package_file(args.model)},
                   argv=None if args.identify else recorded_argv(sys.argv[1:])):
        for patient in patients:
            try:
                result = grade_patient(package, patient, args.out, ensembles, precision,
                                       args.batch_size)
            except SarcogradeError as exc:
                if args.manifest is None:
                    raise
                # one patient's bad input must not cost the batch the others' grades; what
                # grade began (or wrote earlier) for the patient goes
                remove_patient_outputs(args.out, patient.patient_id)
                warn(f"grade: not graded: {exc}")
                failed.append(patient.patient_id)
                rows.append(failure_row(patient.patient_id, package.id, exc.problem))
                continue
            write_grade(args.out, result)
            if args.dicom_out:
                write_dicom(args.out, result, patient, package)
            write_case_report(case_report_path(args.out, patient.patient_id), result, package,
                              patient if args.identify else None)
            rows.append(grades_row(result))
            info(f"grade: {patient.patient_id}: p_high {result['p_high']:.3f}, "
                 f"{result['grade']} grade (threshold {result['threshold']:.3f})"
                 + (", borderline" if result["borderline"] else "")
                 + f" -> {patient_folder(args.out, patient.patient_id)}")
        if args.manifest is not None:
            info(f"grade: {len(rows) - len(failed)} patient(s) graded -> "
                 f"{write_grades(args.out, rows)}")
    if failed:
        raise SarcogradeError(f"{len(failed)} of {len(rows)} patient(s) not graded "
                              f"({', '.join(failed)}): the problems are above and in "
                              f"{GRADES}'s error column")
    return 0
