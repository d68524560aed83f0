"""Speed of `preprocess`: N4 fitted on a coarse grid (the preset's `n4_grid_mm`) against N4 at
full resolution and against the former settings, and a 20-patient synthetic cohort on the local
executor (1 and 2 jobs) and on Ray (1 and 2 workers).

    .venv/bin/python benchmarks/bench_preprocess.py [--n4 synthetic,tcia] [--tcia-patients 12]
        [--synthetic-patients 8] [--patients 20] [--no-cohort] [--work DIR]

N4: the same filter, body mask and iterations (the paper preset's) fitted at full resolution
(`n4_grid_mm` 0), with the two former settings (each axis shrunk to about 4 x the finest
spacing; a 6 mm grid) and with the preset's grid; one thread, as in `preprocess`.
Agreement is the correlation of the corrected images inside the body with full resolution.
Volumes: synthetic patients of 0.78 x 0.78 x 4.2 mm voxels (`sarcograde.synth`, seed 0: the
first and the largest of --synthetic-patients) and the TCIA T1 images of
../shared/data/tcia-sts, smallest first. The cohort is `sarcograde.synth.make_cohort`
(site `siteA`, T2FS), preprocessed with the `quick` preset into a fresh cache per run; every
speed-up is against the local executor with 1 job, measured in the same run.
Prints Markdown tables for README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarcograde.cli import main
from sarcograde.cohort import load_manifest
from sarcograde.config import load_preset
from sarcograde.io import read_image
from sarcograde.preprocess.bias import divide_by_bias, grid_factors, n4_correct, n4_log_bias
from sarcograde.preprocess.body import body_mask
from sarcograde.preprocess.geometry import to_canonical
from sarcograde.synth import make_cohort

SEQUENCE = "T2FS"
FORMER_GRID_MM = 6.0  # the presets' n4_grid_mm before `auto`
TCIA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tcia-sts" / "nifti"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def n4_row(name: str, image: sitk.Image, grid_mm: float, iterations: list[int]) -> str:
    image = to_canonical(sitk.Cast(image, sitk.sitkFloat32))
    body = body_mask(image)
    inside = sitk.GetArrayFromImage(body).astype(bool)
    # the first former setting: every axis shrunk to about 4 x the finest spacing
    former = [max(1, round(4 * min(image.GetSpacing()) / s)) for s in image.GetSpacing()]
    fits = {"grid": lambda: n4_correct(image, body, grid_mm, iterations),
            "6 mm": lambda: n4_correct(image, body, FORMER_GRID_MM, iterations),
            "former": lambda: divide_by_bias(image, n4_log_bias(image, body, former, iterations)),
            "full": lambda: n4_correct(image, body, 0.0, iterations)}
    runs = {}
    for label, fit in fits.items():
        seconds, corrected = timed(fit)
        runs[label] = seconds, sitk.GetArrayFromImage(corrected)[inside]
    full_s, full = runs["full"]

    def r(label):
        return np.corrcoef(runs[label][1], full)[0, 1]

    size = "x".join(str(n) for n in image.GetSize())
    spacing = "x".join(f"{s:.2f}" for s in image.GetSpacing())
    def shrink(grid):
        factors = grid_factors(image.GetSpacing(), image.GetSize(), grid, len(iterations))
        return "x".join(str(f) for f in factors)

    grid_s = runs["grid"][0]
    return (f"| {name} | {size} @ {spacing} | {shrink(FORMER_GRID_MM)} | {shrink(grid_mm)} "
            f"| {full_s:.1f} | {runs['former'][0]:.1f} | {runs['6 mm'][0]:.2f} | {grid_s:.2f} "
            f"| {full_s / grid_s:.0f}x | {runs['former'][0] / grid_s:.1f}x "
            f"| {runs['6 mm'][0] / grid_s:.2f}x | {r('former'):.4f} | {r('6 mm'):.4f} "
            f"| {r('grid'):.4f} |")


def n4_table(volumes: dict[str, sitk.Image], grid_mm: float | str,
             iterations: list[int]) -> None:
    print(f"\nN4, paper iterations {iterations}, one thread: full resolution, former settings "
          f"(4 x finest spacing; {FORMER_GRID_MM} mm grid), preset grid ({grid_mm})\n")
    print("| image | voxels @ mm | 6 mm shrink | preset shrink | full (s) | 4x finest (s) "
          "| 6 mm (s) | preset (s) | vs full | vs 4x finest | vs 6 mm | r 4x finest | r 6 mm "
          "| r preset |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: |", flush=True)
    for name, image in volumes.items():
        print(n4_row(name, image, grid_mm, iterations), flush=True)


def quietly(fn):
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return fn()


def cohort_seconds(manifest: Path, cache: Path, *flags: str) -> float:
    argv = ["preprocess", str(manifest), "--sequence", SEQUENCE, "--out", str(cache),
            "--preset", "quick", *flags]
    seconds, code = timed(lambda: quietly(lambda: main(argv)))
    if code != 0:
        raise SystemExit(f"preprocess {' '.join(flags)} exited {code}")
    return seconds


def cohort_table(work: Path, patients: int) -> None:
    import ray

    manifest = quietly(lambda: make_cohort(work / "cohort", patients, "siteA", seed=0,
                                           sequences=(SEQUENCE,)))
    print(f"\n{patients}-patient cohort, quick preset\n")
    print("| executor | total (s) | per patient (s) | speed-up vs local, 1 job |")
    print("| --- | ---: | ---: | ---: |")
    base = cohort_seconds(manifest, work / "local1", "--jobs", "1")
    print(f"| local, 1 job | {base:.1f} | {base / patients:.2f} | 1.00x |", flush=True)
    local2 = cohort_seconds(manifest, work / "local2", "--jobs", "2")
    print(f"| local, 2 jobs | {local2:.1f} | {local2 / patients:.2f} | {base / local2:.2f}x |",
          flush=True)
    for workers in (1, 2):
        # The Ray start is part of what a user waits for, so it is inside the timing.
        start = time.perf_counter()
        quietly(lambda: ray.init(num_cpus=workers, include_dashboard=False,
                                 logging_level="ERROR", log_to_driver=False))
        cohort_seconds(manifest, work / f"ray{workers}", "--executor", "ray")
        total = time.perf_counter() - start
        ray.shutdown()
        print(f"| Ray, {workers} worker(s) | {total:.1f} | {total / patients:.2f} "
              f"| {base / total:.2f}x |", flush=True)
    rerun = cohort_seconds(manifest, work / "local1", "--jobs", "1")
    print(f"\nrerun on the finished cache (every patient reused): {rerun:.2f} s")


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n4", default="synthetic,tcia",
                        help="N4 volumes: synthetic, tcia, both (comma) or none")
    parser.add_argument("--tcia-patients", type=int, default=12)
    parser.add_argument("--synthetic-patients", type=int, default=8,
                        help="N4 on the first and the largest of this many synthetic patients")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--no-cohort", action="store_true")
    parser.add_argument("--work", type=Path, help="folder for the cohorts and caches (kept)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    print(f"load average at start: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs; work {work}")

    paper = load_preset("paper")["preprocess"]
    volumes: dict[str, sitk.Image] = {}
    if "synthetic" in args.n4:
        manifest = quietly(lambda: make_cohort(work / "n4", args.synthetic_patients, "siteA",
                                               seed=0, sequences=(SEQUENCE,), pixel_mm=0.78,
                                               slice_mm=4.2))
        synthetic = {p.patient_id: read_image(p.images[SEQUENCE])
                     for p in load_manifest(manifest)}
        first = next(iter(synthetic))
        largest = max(synthetic, key=lambda pid: np.prod(synthetic[pid].GetSize()))
        for pid in dict.fromkeys((first, largest)):
            volumes[f"synthetic {pid}"] = synthetic[pid]
    if "tcia" in args.n4 and TCIA.is_dir():
        images = {p.name: read_image(p / "MR_T1_image.nii.gz") for p in sorted(TCIA.iterdir())}
        smallest = sorted(images, key=lambda pid: np.prod(images[pid].GetSize()))
        volumes.update({f"TCIA {pid}": images[pid] for pid in smallest[:args.tcia_patients]})
    if volumes:
        n4_table(volumes, paper["n4_grid_mm"], paper["n4_iterations"])
    if not args.no_cohort:
        cohort_table(work, args.patients)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main_benchmark()
