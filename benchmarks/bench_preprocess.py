"""Speed of `preprocess`: N4 estimated on a shrunk image against N4 at full resolution, and a
20-patient synthetic cohort with 1 and 2 jobs.

    .venv/bin/python benchmarks/bench_preprocess.py [--n4-patients 1] [--patients 20] [--work DIR]

N4 baseline: the same filter, same body mask and same iterations (the paper preset's) fitted on
the full-resolution image, in the same run on the cohort's smallest images; agreement is the correlation of
the two corrected images inside the body. The cohort is `sarcograde.synth.make_cohort` (site
`siteA`, T2FS), preprocessed with the `quick` preset into a fresh cache per job count.
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
from sarcograde.preprocess.bias import n4_correct
from sarcograde.preprocess.body import body_mask
from sarcograde.preprocess.geometry import to_canonical
from sarcograde.synth import make_cohort

SEQUENCE = "T2FS"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def n4_rows(manifest: Path, n_patients: int, shrink: int, iterations: list[int]) -> list[str]:
    """The `n_patients` smallest images (full-resolution N4 takes minutes on the larger ones)."""
    images = {p.patient_id: read_image(p.images[SEQUENCE]) for p in load_manifest(manifest)}
    smallest = sorted(images, key=lambda pid: np.prod(images[pid].GetSize()))[:n_patients]
    rows = []
    for pid in smallest:
        image = to_canonical(sitk.Cast(images[pid], sitk.sitkFloat32))
        body = body_mask(image)
        inside = sitk.GetArrayFromImage(body).astype(bool)
        fast_s, fast = timed(lambda: n4_correct(image, body, shrink, iterations))
        full_s, full = timed(lambda: n4_correct(image, body, 1, iterations))
        r = np.corrcoef(sitk.GetArrayFromImage(fast)[inside], sitk.GetArrayFromImage(full)[inside])[0, 1]
        size = "x".join(str(n) for n in image.GetSize())
        spacing = "x".join(f"{s:.2f}" for s in image.GetSpacing())
        rows.append(f"| {pid} | {size} @ {spacing} mm | {full_s:.1f} | {fast_s:.1f} "
                    f"| {full_s / fast_s:.1f}x | {r:.6f} |")
        print(rows[-1], flush=True)
    return rows


def cohort_seconds(manifest: Path, cache: Path, jobs: int) -> float:
    argv = ["preprocess", str(manifest), "--sequence", SEQUENCE, "--out", str(cache),
            "--preset", "quick", "--jobs", str(jobs)]
    with contextlib.redirect_stderr(io.StringIO()):
        seconds, code = timed(lambda: main(argv))
    if code != 0:
        raise SystemExit(f"preprocess --jobs {jobs} exited {code}")
    return seconds


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n4-patients", type=int, default=1)
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--work", type=Path, help="folder for the cohort and caches (kept)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    print(f"load average at start: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs; work {work}")
    with contextlib.redirect_stderr(io.StringIO()):
        manifest = make_cohort(work / "cohort", args.patients, "siteA", seed=0,
                               sequences=(SEQUENCE,))

    paper = load_preset("paper")["preprocess"]
    print(f"\nN4, paper iterations {paper['n4_iterations']}, shrink {paper['n4_shrink']} "
          "against full resolution\n")
    print("| patient | image | full resolution (s) | shrunk (s) | speed-up | correlation in body |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    n4_rows(manifest, args.n4_patients, paper["n4_shrink"], paper["n4_iterations"])

    print(f"\n{args.patients}-patient cohort, quick preset\n")
    print("| jobs | total (s) | per patient (s) | speed-up |")
    print("| ---: | ---: | ---: | ---: |")
    base = None
    for jobs in (1, 2):
        total = cohort_seconds(manifest, work / f"cache_jobs{jobs}", jobs)
        base = base or total
        print(f"| {jobs} | {total:.1f} | {total / args.patients:.2f} | {base / total:.2f}x |",
              flush=True)
    rerun = cohort_seconds(manifest, work / "cache_jobs1", 1)
    print(f"\nrerun on the finished cache (every patient reused): {rerun:.2f} s")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main_benchmark()
