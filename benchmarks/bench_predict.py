"""Speed of `predict` and `explain` against naive baselines measured in the same run.

- predict: slices of several patients batched together through each model (batch 64, inference
  mode) against one slice at a time per model (`torch.no_grad`); bf16 autocast on the CPU; a
  rerun served from the per-slice logits (`predictions.slices/`).
- explain: Grad-CAM on batches of 16 slices against one slice at a time.

Quick-preset DenseNets (3 models, 64 x 64) on a synthetic cache; one torch thread, so that the
ratios do not depend on what else the machine runs. Run from the repository root:
`.venv/bin/python benchmarks/bench_predict.py`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sarcograde import model as model_lib
from sarcograde.artifacts import write_json, write_npz
from sarcograde.attention import cam_explainers, ensemble_cam
from sarcograde.config import load_preset
from sarcograde.predict import load_ensemble, predict_cache, read_index

N_MODELS, N_PATIENTS, SLICES = 3, 12, 30


def build(root: Path) -> tuple[Path, Path]:
    quick = load_preset("quick")
    size = quick["preprocess"]["size"]
    preprocess = {"sequence": "T1", **quick["preprocess"]}
    run, cache = root / "run", root / "cache"
    splits = []
    for k in range(N_MODELS):
        torch.manual_seed(k)
        name = f"fold_{k:02d}"
        model_lib.save_fold_model(run / name / "model.pt", model_lib.build_model(quick["model"]),
                                  model_cfg=quick["model"],
                                  input_meta=model_lib.input_meta(size, pretrained=False),
                                  preprocess_cfg=preprocess, best_epoch=1, repeat=0, fold=k)
        splits.append({"name": name, "repeat": 0, "fold": k, "train": [], "val": []})
    write_json(run / "folds.json", {"folds": N_MODELS, "repeats": 1, "splits": splits})
    write_json(cache / "config.json", preprocess)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_PATIENTS):
        pid = f"P{i:02d}"
        write_npz(cache / "patients" / f"{pid}.npz",
                  image=rng.normal(size=(SLICES, size, size)).astype(np.float16),
                  mask=np.zeros((SLICES, size, size), np.uint8), pixel_mm=np.ones(SLICES),
                  key=np.array(pid))
        rows.append({"patient_id": pid, "grade": 2, "label": 1, "n_slices": SLICES,
                     "npz": f"patients/{pid}.npz", "key": pid})
    pd.DataFrame(rows).to_csv(cache / "index.csv", index=False)
    return run, cache


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def one_at_a_time(ensemble, cache, index) -> dict[str, np.ndarray]:
    out = {}
    with torch.no_grad():
        for row in index.itertuples(index=False):
            images = np.load(Path(cache) / row.npz)["image"]
            out[row.patient_id] = np.stack([
                np.concatenate([net(model_lib.prepare_input(images[[i]], ensemble.input_meta))
                                .numpy() for i in range(len(images))])
                for net in ensemble.models])
    return out


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run, cache = build(root)
        ensemble = load_ensemble(run)
        index = read_index(cache)
        n = N_PATIENTS * SLICES

        base_s, base = timed(lambda: one_at_a_time(ensemble, cache, index))
        ours_s, ours = timed(lambda: predict_cache(ensemble, cache, index, root / "a.slices"))
        rerun_s, rerun = timed(lambda: predict_cache(ensemble, cache, index, root / "a.slices"))
        bf16_s, bf16 = timed(lambda: predict_cache(ensemble, cache, index, root / "b.slices",
                                                   precision=torch.bfloat16))
        agree = max(np.abs(base[p] - ours[p]).max() for p in base)
        same = all(np.array_equal(rerun[p], ours[p]) for p in ours)
        bf16_diff = max(np.abs(bf16[p] - ours[p]).max() for p in ours)

        images = np.load(cache / "patients" / "P00.npz")["image"]
        explainers = cam_explainers(ensemble.models)
        cam1_s, cam1 = timed(lambda: ensemble_cam(explainers, images, 1, ensemble.input_meta,
                                                  batch_size=1))
        cam16_s, cam16 = timed(lambda: ensemble_cam(explainers, images, 1, ensemble.input_meta,
                                                    batch_size=16))

    print(f"{N_MODELS} quick-preset models, {N_PATIENTS} patients x {SLICES} slices, "
          f"1 torch thread")
    print("| step | baseline | sarcograde | speed-up | agreement |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| predict, {n} slices x {N_MODELS} models | one slice at a time: {base_s:.2f} s | "
          f"batch 64, inference mode: {ours_s:.2f} s | {base_s / ours_s:.1f}x | "
          f"logits within {agree:.1e} |")
    print(f"| predict rerun | computed: {ours_s:.2f} s | from predictions.slices: {rerun_s:.3f} s "
          f"| {ours_s / rerun_s:.0f}x | {'identical' if same else 'DIFFERENT'} |")
    print(f"| predict, bf16 autocast on the CPU | fp32: {ours_s:.2f} s | bf16: {bf16_s:.2f} s | "
          f"{ours_s / bf16_s:.2f}x | logits within {bf16_diff:.1e} |")
    print(f"| Grad-CAM, {SLICES} slices x {N_MODELS} models | one slice at a time: {cam1_s:.2f} s "
          f"| batch 16: {cam16_s:.2f} s | {cam1_s / cam16_s:.1f}x | maps within "
          f"{np.abs(cam1 - cam16).max():.1e} |")


if __name__ == "__main__":
    main()
