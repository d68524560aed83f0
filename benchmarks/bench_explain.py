"""Speed of explain's Grad-CAM: MONAI per model, per model with the short backward, and stacked.

The three modes of `attention.ensemble_cam`, same run, interleaved:
- monai: MONAI's Grad-CAM, a forward and a full backward pass (every parameter's gradient) per
  model; the reference.
- per-model: each model alone as a stack of one (`attention.stacked_cam`): the forward without
  autograd up to Grad-CAM's layer, the backward through the layers after it only (explain's
  default on CPU cores).
- stacked: all models as one `StackedDenseNet`, one such forward and backward for all
  (explain's default on a GPU).
Quick-preset DenseNets (3 models, 64 x 64), 30 random slices, batch 16, Grad-CAM and Grad-CAM++,
one torch thread; the median of `REPEATS` interleaved runs, maps compared with MONAI's.
`--memory` adds each mode's peak resident memory above the loaded models, each in a fresh
process (CPU only).

`--engines` (issue 24): Grad-CAM from the forward pass (`ensemble.forward_pass` and
`attention.forward_cam`, explain's default for Grad-CAM) per engine (torch, ONNX Runtime,
OpenVINO) against MONAI's backward pass and against the same engine's predict (`slice_logits`)
on the same slices: explain's time over predict's, and the maps' difference from MONAI's.
Run from the repository root:
`.venv/bin/python benchmarks/bench_explain.py [--models 1] [--memory] [--device cuda] [--engines]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sarcograde import model as model_lib
from sarcograde.attention import CAM_MODES, METHODS, cam_explainers, ensemble_cam
from sarcograde.config import load_preset

N_MODELS, SLICES, BATCH, REPEATS = 3, 30, 16, 5


def setup(n_models: int, device: str) -> tuple[list, np.ndarray, dict]:
    quick = load_preset("quick")
    size = quick["preprocess"]["size"]
    models = []
    for k in range(n_models):
        torch.manual_seed(k)
        models.append(model_lib.build_model(quick["model"]).eval().to(device))
    images = np.random.default_rng(0).normal(size=(SLICES, size, size)).astype(np.float32)
    return models, images, model_lib.input_meta(size, pretrained=False)


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def one_mode(mode: str, method: str, n_models: int) -> None:
    """Print the peak resident memory (MiB) that one `ensemble_cam` adds to the loaded models
    (Linux: the peak is reset first through /proc/self/clear_refs)."""
    models, images, meta = setup(n_models, "cpu")
    explainers = cam_explainers(models, method)
    ensemble_cam(explainers, images[:1], 1, meta, "cpu", BATCH, mode=mode)   # lazy setup
    Path("/proc/self/clear_refs").write_text("5")
    before = status_mib("VmRSS")
    ensemble_cam(explainers, images, 1, meta, "cpu", BATCH, mode=mode)
    print(f"{status_mib('VmHWM') - before:.1f}")


def engine_rows(models: list, images: np.ndarray, meta: dict, repeats: int) -> None:
    from sarcograde.attention import forward_cam
    from sarcograde.engines import OnnxEngine, available, onnx_graph
    from sarcograde.ensemble import Ensemble, forward_pass, slice_logits

    size = images.shape[-1]
    graphs = [onnx_graph(net, size) for net in models]
    engines = {"torch": None, **{e: OnnxEngine(e, graphs, 1) for e in ("onnxruntime", "openvino")
                                 if available(e)}}
    ensemble = Ensemble(run_dir=Path("."), names=[str(k) for k in range(len(models))],
                        models=models, metas=[{"input": meta}] * len(models),
                        device=torch.device("cpu"), key="bench")
    explainers = cam_explainers(models, "gradcam")
    seconds = {(e, step): [] for e in engines for step in ("predict", "explain")}
    seconds[("torch", "monai")] = []
    maps = {}
    for _ in range(repeats):
        start = time.perf_counter()
        maps["monai"] = ensemble_cam(explainers, images, 1, meta, "cpu", BATCH, mode="monai")
        seconds[("torch", "monai")].append(time.perf_counter() - start)
        for name, engine in engines.items():
            ensemble.engine = engine
            ensemble.forget_pass()
            start = time.perf_counter()
            slice_logits(ensemble, images, BATCH)
            seconds[(name, "predict")].append(time.perf_counter() - start)
            ensemble.forget_pass()   # predict's pass just ran on the same slices
            start = time.perf_counter()
            maps[name] = forward_cam(forward_pass(ensemble, images, BATCH)[1], 1, size)
            seconds[(name, "explain")].append(time.perf_counter() - start)
    median = {key: float(np.median(s)) for key, s in seconds.items()}
    scale = np.abs(maps["monai"]).max()
    print(f"\nGrad-CAM from the forward pass, {len(models)} models, {SLICES} slices, 1 thread; "
          f"MONAI's backward pass: {median[('torch', 'monai')]:.3f} s")
    print("| engine | predict (s) | explain, forward Grad-CAM (s) | explain / predict | "
          "MONAI / explain | maps vs MONAI (of scale) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in engines:
        p, e = median[(name, "predict")], median[(name, "explain")]
        print(f"| {name} | {p:.3f} | {e:.3f} | {e / p:.2f}x | "
              f"{median[('torch', 'monai')] / e:.1f}x | "
              f"{np.abs(maps[name] - maps['monai']).max() / scale:.1e} |")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", type=int, default=N_MODELS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--engines", action="store_true",
                        help="only forward Grad-CAM per engine against predict (issue 24)")
    parser.add_argument("--one-mode", nargs=2, metavar=("MODE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.one_mode:
        one_mode(*args.one_mode, args.models)
        return
    print(f"load average at start: {loadavg()}")
    models, images, meta = setup(args.models, args.device)
    if args.engines:
        engine_rows(models, images, meta, args.repeats)
        print(f"load average at end: {loadavg()}")
        return
    print(f"{args.models} quick-preset models, {SLICES} slices of {images.shape[-1]} px, "
          f"batch {BATCH}, {args.device}, 1 torch thread, median of {args.repeats} interleaved")
    print("| method | " + " | ".join(f"{m} (s)" for m in CAM_MODES)
          + " | monai / per-model | monai / stacked | maps within (of scale) |")
    print("| --- |" + " ---: |" * (len(CAM_MODES) + 3))
    for method in METHODS:
        explainers = cam_explainers(models, method)
        seconds = {mode: [] for mode in CAM_MODES}
        maps = {}
        for _ in range(args.repeats):
            for mode in CAM_MODES:
                if args.device != "cpu":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                maps[mode] = ensemble_cam(explainers, images, 1, meta, args.device, BATCH,
                                          mode=mode)
                seconds[mode].append(time.perf_counter() - start)
        median = {mode: float(np.median(s)) for mode, s in seconds.items()}
        diff = max(np.abs(maps[m] - maps["monai"]).max() for m in CAM_MODES)
        scale = np.abs(maps["monai"]).max()
        within = f"{diff / scale:.1e}" if scale > 0 else f"all zero (diff {diff:.0e})"
        print(f"| {method} | " + " | ".join(f"{median[m]:.3f}" for m in CAM_MODES)
              + f" | {median['monai'] / median['per-model']:.2f}x"
              f" | {median['monai'] / median['stacked']:.2f}x | {within} |")
    if args.memory and args.device == "cpu":
        print("\npeak resident memory added by one call (MiB, fresh process per mode):")
        for method in METHODS:
            row = []
            for mode in CAM_MODES:
                out = subprocess.run([sys.executable, __file__, "--models", str(args.models),
                                      "--one-mode", mode, method],
                                     capture_output=True, text=True, check=True).stdout
                row.append(f"{mode} {out.strip()}")
            print(f"{method}: " + ", ".join(row))
    print(f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
