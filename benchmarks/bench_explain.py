"""Speed of explain's Grad-CAM: the models stacked against MONAI per model, same run.

MONAI's Grad-CAM (explain's path on the CPU, the reference) runs a forward and a full backward
pass per model; the stacked path (explain's default on a GPU, `attention.stacked_cam`) runs one
forward of all models as one `StackedDenseNet` and one backward through the layers after
Grad-CAM's layer only. Quick-preset DenseNets (3 models, 64 x 64), 30 random slices, batch 16,
Grad-CAM and Grad-CAM++, one torch thread; the median of `REPEATS` interleaved runs. Run from the
repository root: `.venv/bin/python benchmarks/bench_explain.py [--device cuda]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sarcograde import model as model_lib
from sarcograde.attention import METHODS, cam_explainers, ensemble_cam
from sarcograde.config import load_preset

N_MODELS, SLICES, BATCH, REPEATS = 3, 30, 16, 5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", type=int, default=N_MODELS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    quick = load_preset("quick")
    size = quick["preprocess"]["size"]
    meta = model_lib.input_meta(size, pretrained=False)
    models = []
    for k in range(args.models):
        torch.manual_seed(k)
        models.append(model_lib.build_model(quick["model"]).eval().to(args.device))
    images = np.random.default_rng(0).normal(size=(SLICES, size, size)).astype(np.float32)
    print(f"{args.models} quick-preset models, {SLICES} slices of {size} px, batch {BATCH}, "
          f"{args.device}, 1 torch thread, median of {REPEATS}")
    print("| method | MONAI per model (s) | stacked (s) | speed-up | maps within (of scale) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for method in METHODS:
        explainers = cam_explainers(models, method)
        seconds = {False: [], True: []}
        maps = {}
        for _ in range(REPEATS):
            for stacked in (False, True):
                if args.device != "cpu":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                maps[stacked] = ensemble_cam(explainers, images, 1, meta, args.device, BATCH,
                                             stacked=stacked)
                seconds[stacked].append(time.perf_counter() - start)
        per_model, stacked = np.median(seconds[False]), np.median(seconds[True])
        diff = np.abs(maps[True] - maps[False]).max() / np.abs(maps[False]).max()
        print(f"| {method} | {per_model:.3f} | {stacked:.3f} | {per_model / stacked:.2f}x "
              f"| {diff:.1e} |")


if __name__ == "__main__":
    main()
