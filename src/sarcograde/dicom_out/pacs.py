"""`grade --pacs URL --study UID [--store]`: the exam retrieved from a PACS over DICOMweb
(WADO-RS, with dicomweb-client) into a temporary folder that is deleted after grading, graded as
`--exam` would grade it, and with `--store` the DICOM objects of `--dicom-out` sent back
(STOW-RS), one at a time so that a PACS that goes down or refuses one leaves a one-line error
naming what was stored and what was not."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..errors import SarcogradeError
from ..formats.dicom_out import dicom_folder

TIMEOUT_S = 60  # per DICOMweb request


def _client(url: str):
    from dicomweb_client import DICOMwebClient

    return DICOMwebClient(url, timeout=TIMEOUT_S)


def _reason(exc: Exception) -> str:
    """An HTTP or connection failure in a few words (requests' messages run to several lines)."""
    response = getattr(exc, "response", None)
    if response is not None:
        return f"HTTP {response.status_code} {response.reason}"
    return type(exc).__name__


def retrieve_study(url: str, study_uid: str, folder: Path) -> int:
    """Every instance of the study saved into `folder`; how many."""
    import requests

    try:
        instances = _client(url).retrieve_study(study_uid)
    except (requests.RequestException, OSError) as exc:
        raise SarcogradeError(f"cannot retrieve study {study_uid} from the PACS {url} "
                              f"({_reason(exc)})") from None
    if not instances:
        raise SarcogradeError(f"the PACS {url} holds no instance of study {study_uid}")
    for dataset in instances:
        dataset.save_as(folder / f"{dataset.SOPInstanceUID}.dcm", enforce_file_format=True)
    return len(instances)


def store(url: str, paths: list[Path]) -> None:
    """Each file sent by STOW-RS in turn; the first failure stops with one line naming the
    objects stored before it and those not stored."""
    import pydicom
    import requests

    client = _client(url)
    stored = []
    for position, path in enumerate(paths):
        try:
            client.store_instances([pydicom.dcmread(path)])
        except (requests.RequestException, OSError) as exc:
            left = ", ".join(p.name for p in paths[position:])
            raise SarcogradeError(f"the PACS {url} did not take {path.name} ({_reason(exc)}); "
                                  f"stored: {', '.join(stored) or 'nothing'}; not stored: "
                                  f"{left}") from None
        stored.append(path.name)


def grade_from_pacs(args: argparse.Namespace, grade) -> int:
    """`grade(args)` on the study retrieved into a temporary exam folder, with --dicom-out; then
    with --store the objects written sent back to the PACS."""
    from ..console import info

    given = [flag for flag, value in (("--exam", args.exam), ("--image", args.image),
                                      ("--manifest", args.manifest)) if value]
    if given or not args.study:
        raise SarcogradeError("--pacs URL takes the exam from --study UID, not "
                              + (" or ".join(given) if given else "nothing"))
    with tempfile.TemporaryDirectory(prefix="sarcograde-pacs-") as exam:
        count = retrieve_study(args.pacs, args.study, Path(exam))
        info(f"grade: {count} instance(s) of study {args.study} retrieved from {args.pacs}")
        graded = argparse.Namespace(**{**vars(args), "pacs": None, "study": None,
                                       "store": False, "exam": Path(exam), "dicom_out": True})
        status = grade(graded)
    if status == 0 and args.store:
        paths = sorted(dicom_folder(args.out, args.id).iterdir())
        store(args.pacs, paths)
        info(f"grade: {len(paths)} object(s) stored in {args.pacs}: "
             + ", ".join(p.name for p in paths))
    return status
