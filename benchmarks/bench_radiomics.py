"""Speed of `radiomics extract`'s features per patient: MIRP fed arrays, Moran's I and Geary's C
over every voxel pair by FFT (`radiomics.features.compute_features`), against the former path.

    .venv/bin/python benchmarks/bench_radiomics.py [--patients STS_002,STS_047,STS_004]
        [--repeats 1] [--tcia ../shared/data/tcia-sts]

Former path (the baseline, measured in the same process): the tumour's box written as NIfTI
files that MIRP reads through ITK, and MIRP's own Moran's I and Geary's C (for more than 999
voxels, the mean over random subsets of 100 voxels until its standard error is under 0.002).
Both paths get the same volume: each TCIA T1 image and mask prepared as `radiomics extract` does
(`preprocess.normalise_volume`: N4, 1 mm, z-score; its seconds printed too, unchanged by this
work). One core: BLAS/OpenMP pools are set to one thread before numpy loads. Start-up: the
first call of each path in this process, on a 4 x 4 x 4 tumour (the former path's includes
ITK loading its modules, paid once per worker process); `import mirp`, common to both, apart.
Wall and CPU seconds (this process's, `time.process_time`) are printed: on a shared machine
the wall time is inflated by other jobs, the CPU time much less. No share of hardware peak:
MIRP's features are pandas/numpy bookkeeping and table lookups, not arithmetic a peak bounds.
Agreement: largest relative difference over all features but Moran's I and Geary's C (which
change, printed apart). Prints Markdown tables for README.md.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402  (after the thread settings, which numpy reads when loaded)
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from sarcograde.preprocess.pipeline import drop_stray_pieces, normalise_volume  # noqa: E402
from sarcograde.radiomics.features import (_bounding_box, _mirp_settings,  # noqa: E402
                                           _quiet_mirp, compute_features)
from sarcograde.radiomics.settings import FAMILIES, load_settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPATIAL = ("morph_moran_i", "morph_geary_c")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def former_features(image: np.ndarray, mask: np.ndarray, spacing_mm: float,
                    settings: dict) -> dict[str, float]:
    """The features as computed before: NIfTI files of the box, MIRP's spatial estimate."""
    from mirp import extract_features

    box = _bounding_box(mask)
    with tempfile.TemporaryDirectory(prefix="bench-radiomics-") as tmp, _quiet_mirp():
        files = {}
        for name, array in (("image", image[box].astype(np.float32)),
                            ("mask", (mask[box] > 0).astype(np.uint8))):
            volume = sitk.GetImageFromArray(np.ascontiguousarray(array))
            volume.SetSpacing([float(spacing_mm)] * 3)
            files[name] = str(Path(tmp) / f"{name}.nii")
            sitk.WriteImage(volume, files[name])
        table = extract_features(**files, **_mirp_settings(settings))[0]
    prefixes = tuple(FAMILIES[f] for f in settings["families"])
    return {name: float(table[name].iloc[0]) for name in table.columns
            if name.startswith(prefixes)}


def current_features(image: np.ndarray, mask: np.ndarray, spacing_mm: float,
                     settings: dict) -> dict[str, float]:
    return compute_features(image, mask, spacing_mm, settings).values


PATHS = {"former": former_features, "current": current_features}


def timed(fn, *args) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds of this process, result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def prepared_volume(folder: Path, preprocess) -> tuple[tuple[float, float], np.ndarray,
                                                          np.ndarray]:
    """(wall, CPU) seconds of `normalise_volume`, the z-scored 1 mm image and its mask."""
    image = sitk.ReadImage(str(folder / "MR_T1_image.nii.gz"))
    mask = sitk.Cast(sitk.ReadImage(str(folder / "MR_T1_mask.nii.gz")) > 0, sitk.sitkUInt8)
    mask, _ = drop_stray_pieces(mask)
    wall, cpu, volume = timed(normalise_volume, image, mask, preprocess)
    return (wall, cpu), volume.image, volume.mask


def largest_relative_difference(former: dict, current: dict) -> float:
    worst = 0.0
    for name, value in former.items():
        if name in SPATIAL or (np.isnan(value) and np.isnan(current[name])):
            continue
        worst = max(worst, abs(current[name] - value) / max(abs(value), 1e-300))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", default="STS_002,STS_047,STS_004",
                        help="TCIA patients, comma-separated (default: a small, a middle-sized "
                             "and the largest tumour of the 12)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each path per patient, interleaved; the median is shown")
    parser.add_argument("--tcia", type=Path, default=REPO.parent / "shared" / "data" / "tcia-sts")
    args = parser.parse_args()
    settings = load_settings()
    features = settings.features
    print(f"{cpu_model()}; one thread; load average at start: {loadavg()}")

    wall, cpu, _ = timed(__import__, "mirp")
    print(f"import mirp (both paths): {wall:.2f} s wall, {cpu:.2f} s CPU")
    rng = np.random.default_rng(0)
    cube = rng.normal(size=(8, 8, 8)).astype(np.float32)
    cube_mask = np.zeros(cube.shape, np.uint8)
    cube_mask[2:6, 2:6, 2:6] = 1
    for label, path in PATHS.items():
        wall, cpu, _ = timed(path, cube, cube_mask, 1.0, features)
        print(f"start-up, {label} path (first call, 4^3 voxels): {wall:.2f} s wall, "
              f"{cpu:.2f} s CPU")

    rows = []
    for pid in args.patients.split(","):
        prep_s, image, mask = prepared_volume(args.tcia / "nifti" / pid, settings.preprocess)
        spacing = settings.preprocess.spacing_mm
        runs = {label: [] for label in PATHS}
        for _ in range(args.repeats):
            for label, path in PATHS.items():
                runs[label].append(timed(path, image, mask, spacing, features))
        median = {label: tuple(float(np.median([r[i] for r in rs])) for i in (0, 1))
                  for label, rs in runs.items()}
        former, current = runs["former"][-1][2], runs["current"][-1][2]
        rows.append((pid, int(mask.sum()), prep_s, median, largest_relative_difference(
            former, current), {n: (former[n], current[n]) for n in SPATIAL}))
        print(f"{pid} done; load average {loadavg()}", flush=True)

    print("\n| patient | tumour voxels (1 mm) | preprocess: wall s (CPU s) "
          "| former: wall s (CPU s) | current: wall s (CPU s) | speed-up (wall, CPU) "
          "| other features within |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for pid, voxels, prep_s, median, worst, _ in rows:
        (fw, fc), (cw, cc) = median["former"], median["current"]
        print(f"| {pid} | {voxels} | {prep_s[0]:.1f} ({prep_s[1]:.1f}) | {fw:.2f} ({fc:.2f}) "
              f"| {cw:.2f} ({cc:.2f}) | {fw / cw:.1f}x, {fc / cc:.1f}x | {worst:.1e} |")
    print("\n| patient | Moran's I former (estimate) | current (all pairs) | Geary's C former "
          "| current |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for pid, _, _, _, _, spatial in rows:
        (mf, mc), (gf, gc) = spatial["morph_moran_i"], spatial["morph_geary_c"]
        print(f"| {pid} | {mf:.5f} | {mc:.5f} | {gf:.5f} | {gc:.5f} |")
    print(f"\nload average at end: {loadavg()}")


if __name__ == "__main__":
    main()
