"""Issue 15's GPU figures in one run (started by `benchmarks/gpu_check.sh`, which picks Python).

From the repository root, in this order, each part timed and cut short to fit `--budget-s`
(default 480 s: the 8 minutes the issue allows on an H100):

1. the machine: `nvidia-smi`, torch and CUDA versions;
2. `bench_train.py --device cuda`: DenseNet-161, 224 px, batch 30, bf16, channels_last, plain
   against stacked at K = 5 and K = 15 (K = 15 skipped when K = 5 is too slow or out of memory),
   then the same bare steps eager against captured in a CUDA graph;
3. `bench_predict.py --device cuda`: its rows, and 15 DenseNet-161s stacked against model by model;
4. a synthetic paper-size cache (5,000 slices of 224 px, 100 patients, written directly with
   `sarcograde.formats.cache`), then `sarcograde train --preset paper --pretrained none`, 5 folds
   x 1 repeat, 2 epochs, with `train.concurrent_folds: 1`, with `auto`, and with `auto` and
   `cuda_graphs: true`: seconds per epoch from each fold's history.csv and
   `gpu_memory_peak_gib` from run.json.

`$OUT` (else `bench-out/`) receives text alone, each part's output in `<part>.txt` and the
summary in `summary.txt`: the device machine sends back at most 8 files. The cache and the runs
go to `$GPU_CHECK_SCRATCH`, else to a temporary folder removed at the end. `--tiny` runs the
same parts on the CPU at toy sizes (quick network, 32 px, a 200-slice cache): the check that the
script itself works.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def run_part(name: str, cmd: list[str], out: Path, budget: Budget, cap: float,
             summary: list[str], env: dict | None = None) -> bool:
    """Run `cmd`, its output teed to OUT/name.txt, within min(cap, what is left)."""
    limit = min(cap, budget.left() - 5)
    if limit < 20:
        summary.append(f"{name}: SKIPPED, {budget.left():.0f} s of the budget left")
        print(summary[-1], flush=True)
        return False
    print(f"\n=== {name} (at most {limit:.0f} s): {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    with open(out / f"{name}.txt", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, **(env or {})})
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                log.write(line)
                if time.monotonic() - start > limit:
                    proc.kill()
                    break
            proc.wait(timeout=max(1.0, limit - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - start
    ok = proc.returncode == 0
    status = "ok" if ok else ("CUT at its time limit" if seconds >= limit else
                              f"FAILED (exit {proc.returncode})")
    summary.append(f"{name}: {status}, {seconds:.0f} s")
    print(summary[-1], flush=True)
    return ok


def write_synthetic_cache(root: Path, patients: int, slices: int, size: int) -> None:
    """A cache as `sarcograde preprocess` writes it: z-scored noise slices with a disc whose
    brightness follows the grade (so training has something to learn)."""
    from sarcograde.formats.cache import write_cache_config, write_index, write_patient

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2)
    write_cache_config(root, {"sequence": "T1", "spacing_mm": 1.0, "size": size,
                              "margin_mm": 10.0})
    rows = []
    for i in range(patients):
        pid, grade = f"S{i:03d}", 1 + i % 3
        image = (rng.standard_normal((slices, size, size), np.float32)
                 + (0.5 * grade) * disc).astype(np.float16)
        mask = np.repeat(disc[None].astype(np.uint8), slices, axis=0)
        area = mask.sum(axis=(1, 2)).astype(float)
        write_patient(root / "patients" / f"{pid}.npz", {
            "image": image, "mask": mask, "z_mm": np.arange(slices, dtype=float),
            "area_mm2": area, "pixel_mm": np.ones(slices), "spacing": np.ones(3),
            "origin": np.zeros(3), "direction": np.eye(3).ravel(),
            "crop_index": np.zeros(2, np.int64), "tumour_volume_ml": np.float64(area.sum() / 1e3),
            "key": np.array(pid)})
        rows.append({"patient_id": pid, "sequence": "T1", "site": "A", "grade": grade,
                     "label": int(grade >= 2), "n_slices": slices,
                     "tumour_volume_ml": area.sum() / 1e3, "npz": f"patients/{pid}.npz",
                     "key": pid})
    write_index(root, rows)


def train_figures(run: Path) -> str:
    """Seconds per epoch (history.csv of every fold) and the GPU memory peak (run.json)."""
    import pandas as pd

    seconds = [pd.read_csv(h)["seconds"].tolist() for h in sorted(run.glob("fold_*/history.csv"))]
    record = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    return (f"{len(seconds)} folds finished; seconds per epoch, fold by fold (history.csv; "
            f"folds trained side by side share their epochs' seconds): "
            f"{[[round(s, 1) for s in fold] for fold in seconds]}; gpu_memory_peak_gib: "
            f"{record.get('gpu_memory_peak_gib')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run at toy sizes")
    parser.add_argument("--budget-s", type=float, help="total seconds (default 480; tiny 300)")
    args = parser.parse_args()
    tiny = args.tiny or os.environ.get("GPU_CHECK_TINY") == "1"
    budget = Budget(args.budget_s or (300 if tiny else 480))
    out = Path(os.environ.get("OUT") or ROOT / "bench-out")
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    summary: list[str] = []

    import torch

    lines = [f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA "
             f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
             f"cuda available: {torch.cuda.is_available()}"]
    if torch.cuda.is_available():
        lines.append(f"device: {torch.cuda.get_device_name(0)}")
    try:
        lines.append(subprocess.run(["nvidia-smi"], capture_output=True, text=True,
                                    timeout=30).stdout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        lines.append(f"nvidia-smi: {exc}")
    (out / "machine.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    if not tiny and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --tiny for the CPU smoke run")

    if tiny:
        device, train_args = "cpu", ["--model", "quick", "--size", "32", "--batch", "8",
                                     "--k", "2", "3", "--steps", "2", "--reps", "1",
                                     "--stacked-only", "--threads", "1"]
        predict_args = ["--stacked-only", "--model", "quick", "--size", "32", "--slices", "32",
                        "--n-models", "3", "--reps", "1"]
        patients, slices, size, preset = 20, 10, 32, "quick"
    else:
        device = "cuda"
        train_args = ["--model", "densenet161", "--size", "224", "--batch", "30",
                      "--k", "5", "15", "--steps", "10", "--reps", "3", "--precision", "bf16",
                      "--channels-last", "--step-budget-s", "60"]
        predict_args = ["--n-models", "15", "--model", "densenet161", "--size", "224",
                        "--slices", "960", "--reps", "3"]
        patients, slices, size, preset = 100, 50, 224, "paper"
    bench = ROOT / "benchmarks"
    run_part("bench_train", [py, str(bench / "bench_train.py"), "--device", device, *train_args],
             out, budget, 0.4 * budget.left(), summary, env)
    run_part("bench_predict", [py, str(bench / "bench_predict.py"), "--device", device,
                               *predict_args], out, budget, 0.3 * budget.left(), summary, env)

    given = os.environ.get("GPU_CHECK_SCRATCH")
    with (contextlib.nullcontext(given) if given else
          tempfile.TemporaryDirectory(prefix="gpu_check-")) as scratch:
        train_parts(Path(scratch), out, py, env, device, patients, slices, size, preset, budget,
                    summary)
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n=== summary\n" + "\n".join(summary), flush=True)


def train_parts(scratch: Path, out: Path, py: str, env: dict, device: str, patients: int,
                slices: int, size: int, preset: str, budget: Budget, summary: list[str]) -> None:
    """Part 4: the synthetic cache, then `sarcograde train` in three settings."""
    start = time.monotonic()
    cache = scratch / "cache"
    if not (cache / "index.csv").is_file():
        sys.path.insert(0, str(ROOT / "src"))
        write_synthetic_cache(cache, patients, slices, size)
    summary.append(f"synthetic cache: {patients} patients x {slices} slices of {size} px, "
                   f"{time.monotonic() - start:.0f} s")
    print(summary[-1], flush=True)
    # (name, train settings, share of the time left): the plain loop (the baseline), the folds
    # side by side, and side by side with each step replayed from a CUDA graph.
    for name, settings, share in (("concurrent_1", {"concurrent_folds": 1}, 0.3),
                                  ("concurrent_auto", {"concurrent_folds": "auto"}, 0.5),
                                  ("concurrent_auto_graphs", {"concurrent_folds": "auto",
                                                              "cuda_graphs": True}, 1.0)):
        config = scratch / f"{name}.yaml"
        config.write_text(json.dumps({"train": {"max_epochs": 2, "patience": 2, **settings}}))
        run = scratch / f"run_{name}"
        ok = run_part(f"train_{name}", [
            py, "-c", "import sys; from sarcograde.cli import main; sys.exit(main())", "train",
            str(cache), "--out", str(run), "--preset", preset, "--pretrained", "none",
            "--config", str(config), "--folds", "5", "--repeats", "1", "--device", device],
            out, budget, share * budget.left(), summary, env)
        if run.is_dir():
            summary.append(f"train {name}: " + ("" if ok else "(incomplete) ")
                           + train_figures(run))
            print(summary[-1], flush=True)

if __name__ == "__main__":
    main()
