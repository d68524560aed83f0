"""What every object `grade --dicom-out` writes shares: the equipment that made it (sarcograde,
the package by id, its checksum as the device serial number) and how it is saved."""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..artifacts import atomic_path

MANUFACTURER = "sarcograde"


def equipment(package_id: str, package_checksum: str) -> dict:
    """highdicom's General Equipment arguments: the model package is the device."""
    return {"manufacturer": MANUFACTURER, "manufacturer_model_name": f"package {package_id}",
            "software_versions": __version__, "device_serial_number": package_checksum}


def copy_laterality(series, dataset) -> None:
    """The source series' Laterality (empty where it has none): a new image series of the same
    body part must say it (General Series, Type 2C), and only the source knows."""
    dataset.Laterality = series.slices[0].get("Laterality", "")


def save(dataset, path: Path) -> Path:
    """Write a DICOM object atomically (a PACS upload of a half-written file would fail)."""
    with atomic_path(path) as temporary:
        dataset.save_as(temporary, enforce_file_format=True)
    return path
