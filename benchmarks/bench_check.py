"""Speed of `check`: the longest-diameter measurement against all pairs of voxels, and the stage.

    .venv/bin/python benchmarks/bench_check.py [--tcia ../shared/data/tcia-sts]

Baseline: the max distance over all pairs of tumour voxel centres (chunked, so memory stays
small), measured in the same run on the same masks. Prints a Markdown table for README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.distance import cdist

from sarcograde.check import longest_diameter_mm, physical_points
from sarcograde.cli import main

REPO = Path(__file__).resolve().parents[1]


def all_pairs_mm(mask: sitk.Image, chunk: int = 2048) -> float:
    index = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1].astype(float)
    points = physical_points(mask, index)
    return max(float(cdist(points[i:i + chunk], points[i:]).max())
               for i in range(0, len(points), chunk))


def seconds(fn, repeats: int) -> tuple[float, float]:
    """Best of `repeats` wall times and the result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def spheroid(radii_mm=(20.0, 25.0, 30.0)) -> sitk.Image:
    shape = [int(2 * r + 3) for r in radii_mm[::-1]]
    grid = np.indices(shape).astype(float)
    inside = sum(((g - (n - 1) / 2) / r) ** 2 for g, n, r in zip(grid, shape, radii_mm[::-1])) <= 1
    return sitk.GetImageFromArray(inside.astype(np.uint8))   # 1 mm isotropic


def main_(tcia: Path) -> None:
    masks = {"synthetic spheroid 40x50x60 mm, 1 mm": spheroid()}
    nifti = tcia / "nifti"
    if nifti.is_dir():
        for folder in sorted(nifti.iterdir()):
            masks[f"TCIA {folder.name}"] = sitk.ReadImage(str(folder / "MR_T1_mask.nii.gz"))
    print("| mask | voxels | all pairs (s) | check (s) | speed-up | same value |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    total_base = total_new = 0.0
    for name, mask in masks.items():
        t_base, base = seconds(lambda: all_pairs_mm(mask), 1)
        t_new, new = seconds(lambda: longest_diameter_mm(mask), 3)
        total_base, total_new = total_base + t_base, total_new + t_new
        voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
        print(f"| {name} | {voxels} | {t_base:.3f} | {t_new:.4f} | {t_base / t_new:.0f}x | "
              f"{abs(base - new) < 1e-9} |")
    print(f"| all | | {total_base:.2f} | {total_new:.3f} | {total_base / total_new:.0f}x | |")

    if nifti.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            manifest = Path(tmp) / "manifest.csv"
            rows = ["patient_id,image_T1,mask_T1"] + [
                f"{f.name},{f / 'MR_T1_image.nii.gz'},{f / 'MR_T1_mask.nii.gz'}"
                for f in sorted(nifti.iterdir())]
            manifest.write_text("\n".join(rows) + "\n")
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                main(["check", str(manifest)])              # warm: imports, file cache
                t_check, rc = seconds(lambda: main(["check", str(manifest)]), 3)
        print(f"\n`sarcograde check` on the {len(rows) - 1} TCIA patients (in process, after a "
              f"warm-up run): {t_check:.2f} s, exit {rc}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tcia", type=Path, default=REPO.parent / "shared" / "data" / "tcia-sts")
    main_(parser.parse_args().tcia)
