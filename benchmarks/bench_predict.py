"""Speed of `predict` and `explain` against naive baselines measured in the same run.

- predict: slices of several patients batched together through each model (batch 64, inference
  mode) against one slice at a time per model (`torch.no_grad`); bf16 autocast on the CPU; a
  rerun served from the per-slice logits (`predictions.slices/`).
- explain: Grad-CAM on batches of 16 slices against one slice at a time.

- stacked (issue 15): the ensemble's forward model by model (`slice_logits(stacked=False)`)
  against all models as one `StackedDenseNet` (`stacked=True`), N fresh networks whose batch-norm
  statistics were estimated on the slices; autocast bf16 on CUDA, fp32 on the CPU; logits
  compared with fp32 model by model; on CUDA the share of peak (forward FLOPs from torch's
  flop counter, times slices/s, over `--peak-tflops`).

- engines (issue 24, `--engines`): `predict_cache` of whole patients (reading, batching, every
  model) with torch eager fp32 against ONNX Runtime and OpenVINO (graphs exported beforehand, as
  a package made with `export --onnx` holds them), interleaved, with 1 and 2 threads; the quick
  network and DenseNet-161; slices/s, the ratio against torch, the share of the CPU's fp32 peak
  (cores x 2 FMA units x 8 fp32 lanes x 2 flops x clock, printed with the CPU model) and the
  process's peak resident memory.

Quick-preset DenseNets (3 models, 64 x 64) on a synthetic cache; one torch thread, so that the
ratios do not depend on what else the machine runs. Run from the repository root:
`.venv/bin/python benchmarks/bench_predict.py [--device cuda] [--n-models 15]`, or
`.venv/bin/python benchmarks/bench_predict.py --engines [--engine-models quick,densenet161]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sarcograde import model as model_lib
from sarcograde.artifacts import write_json
from sarcograde.attention import cam_explainers, ensemble_cam
from sarcograde.config import load_preset
from sarcograde.ensemble import Ensemble, load_ensemble, slice_logits
from sarcograde.formats.cache import CacheIndex, write_index, write_patient
from sarcograde.predict import predict_cache

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
        write_patient(cache / "patients" / f"{pid}.npz", {
            "image": rng.normal(size=(SLICES, size, size)).astype(np.float16),
            "mask": np.zeros((SLICES, size, size), np.uint8), "z_mm": np.arange(SLICES, dtype=float),
            "area_mm2": np.ones(SLICES), "pixel_mm": np.ones(SLICES), "spacing": np.ones(3),
            "origin": np.zeros(3), "direction": np.eye(3).ravel(),
            "crop_index": np.zeros(2, np.int64), "tumour_volume_ml": np.float64(1.0),
            "key": np.array(pid)})
        rows.append({"patient_id": pid, "sequence": "T1", "site": "A", "grade": 2, "label": 1,
                     "n_slices": SLICES, "tumour_volume_ml": 1.0, "npz": f"patients/{pid}.npz",
                     "key": pid})
    write_index(cache, rows)
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
                np.concatenate([net(model_lib.prepare_input(
                    torch.from_numpy(images[[i]]).to(ensemble.device), ensemble.input_meta))
                    .cpu().numpy() for i in range(len(images))])
                for net in ensemble.models])
    return out


def calibrated(cfg: dict, seed: int, images: torch.Tensor, meta: dict,
               device: torch.device) -> torch.nn.Module:
    """A fresh network whose batch-norm statistics are those of `images` (one pass in training
    mode with a cumulative average), so that its activations are those of a trained one."""
    torch.manual_seed(seed)
    net = model_lib.build_model(cfg).to(device)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(model_lib.prepare_input(images, meta))
    return net.eval()


def stacked_row(cfg: dict, name: str, size: int, n_models: int, n_slices: int,
                device: torch.device, peak_tflops: float | None, reps: int) -> None:
    """Plain (model by model) against stacked ensemble forward, in the same run."""
    from torch.utils.flop_counter import FlopCounterMode

    cuda = device.type == "cuda"
    meta = model_lib.input_meta(size, pretrained=False)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n_slices, size, size)).astype(np.float16)
    calib = torch.from_numpy(images[:32]).to(device)
    models = [calibrated(cfg, k, calib, meta, device) for k in range(n_models)]
    ensemble = Ensemble(run_dir=Path("."), names=[f"fold_{k:02d}" for k in range(n_models)],
                        models=models, metas=[{"input": meta}] * n_models, device=device,
                        key="bench")
    precision = torch.bfloat16 if cuda else None
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        models[0](model_lib.prepare_input(calib[:1], meta))
    flops = counter.get_total_flops()  # one slice through one network

    def timed_logits(stacked: bool, dtype) -> tuple[float, np.ndarray]:
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = slice_logits(ensemble, images, precision=dtype, stacked=stacked)
        return time.perf_counter() - start, out

    reference = slice_logits(ensemble, images, stacked=False)  # fp32, model by model
    timed_logits(False, precision)  # warm-up (cuDNN, oneDNN)
    timed_logits(True, precision)
    plain_s, stacked_s = [], []
    for _ in range(reps):
        seconds, plain = timed_logits(False, precision)
        plain_s.append(seconds)
        seconds, stacked = timed_logits(True, precision)
        stacked_s.append(seconds)
    p, s = statistics.median(plain_s), statistics.median(stacked_s)
    rate_p, rate_s = n_slices / p, n_slices / s

    def share(rate):
        return f"{100 * flops * n_models * rate / (peak_tflops * 1e12):.1f} %" if peak_tflops else "-"

    dtype = "bf16" if cuda else "fp32"
    print(f"| ensemble forward, {n_slices} slices x {n_models} {name} ({size} px, {dtype}) | "
          f"model by model: {rate_p:.1f} slices/s ({share(rate_p)} of peak) | stacked: "
          f"{rate_s:.1f} slices/s ({share(rate_s)} of peak) | {p / s:.2f}x | logits vs fp32 "
          f"model by model: plain within {np.abs(plain - reference).max():.1e}, stacked within "
          f"{np.abs(stacked - reference).max():.1e} |", flush=True)
    print(f"({flops / 1e9:.3g} GFLOP per slice per network, forward, torch flop counter; "
          f"a slice counts once for all {n_models} networks; median of {reps})", flush=True)


def cpu_peak_gflops(cores: int) -> tuple[float, str]:
    """The fp32 FMA peak of `cores` cores and how it was computed."""
    info = Path("/proc/cpuinfo").read_text()
    model = next(line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name"))
    mhz = float(next(line.split(":", 1)[1] for line in info.splitlines()
                     if line.startswith("cpu MHz")))
    peak = cores * 2 * 8 * 2 * mhz / 1e3
    return peak, (f"{model}: {cores} cores x 2 FMA units x 8 fp32 lanes (256 bit) x 2 flops x "
                  f"{mhz / 1e3:.2f} GHz = {peak:.0f} GFLOP/s")


def engine_rows(models_wanted: list[str], reps: int) -> None:
    """predict_cache of whole patients per engine and thread count, interleaved."""
    import os
    import resource

    from torch.utils.flop_counter import FlopCounterMode

    from sarcograde.engines import OnnxEngine, TorchEngine, available, onnx_graph

    engines = ["torch"] + [e for e in ("onnxruntime", "openvino") if available(e)]
    print(f"load average at start: {' '.join(map(str, os.getloadavg()))}")
    for which in models_wanted:
        cfg = {"architecture": "densenet161"} if which == "densenet161" else \
            load_preset("quick")["model"]
        size, n_models, patients, slices = (224, 1, 2, 12) if which == "densenet161" else \
            (64, 3, 4, 30)
        meta = model_lib.input_meta(size, pretrained=False)
        rng = np.random.default_rng(0)
        images = {f"P{i}": rng.normal(size=(slices, size, size)).astype(np.float16)
                  for i in range(patients)}
        calib = torch.from_numpy(images["P0"][:12])
        models = [calibrated(cfg, k, calib, meta, torch.device("cpu")) for k in range(n_models)]
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            models[0](model_lib.prepare_input(calib[:1], meta))
        flops = counter.get_total_flops() * n_models   # one slice through every network
        graphs = [onnx_graph(net, size) for net in models]
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            rows = []
            for pid, image in images.items():
                write_patient(cache / "patients" / f"{pid}.npz", {
                    "image": image, "mask": np.zeros(image.shape, np.uint8),
                    "z_mm": np.arange(slices, dtype=float), "area_mm2": np.ones(slices),
                    "pixel_mm": np.ones(slices), "spacing": np.ones(3), "origin": np.zeros(3),
                    "direction": np.eye(3).ravel(), "crop_index": np.zeros(2, np.int64),
                    "tumour_volume_ml": np.float64(1.0), "key": np.array(pid)})
                rows.append({"patient_id": pid, "sequence": "T1", "site": "A", "grade": 2,
                             "label": 1, "n_slices": slices, "tumour_volume_ml": 1.0,
                             "npz": f"patients/{pid}.npz", "key": pid})
            write_index(cache, rows)
            index = CacheIndex.read(cache).rows(drop_empty=True)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                ensemble = Ensemble(run_dir=Path("."), names=[f"fold_{k:02d}" for k in
                                                               range(n_models)],
                                    models=models, metas=[{"input": meta}] * n_models,
                                    device=torch.device("cpu"), key="bench")
                built = {"torch": None, **{e: OnnxEngine(e, graphs, threads)
                                           for e in engines[1:]}}
                seconds = {e: [] for e in engines}
                logits = {}
                for rep in range(reps + 1):   # the first round warms up
                    for engine in engines:
                        ensemble.engine = built[engine]
                        ensemble.forget_pass()
                        start = time.perf_counter()
                        logits[engine] = predict_cache(ensemble, cache, index,
                                                       Path(tmp) / f"{engine}-{threads}-{rep}")
                        if rep:
                            seconds[engine].append(time.perf_counter() - start)
                peak, formula = cpu_peak_gflops(threads)
                n = patients * slices
                base = statistics.median(seconds["torch"])
                name = "DenseNet-161" if which == "densenet161" else "quick DenseNet"
                print(f"\n{name} x {n_models} ({size} px, {flops / n_models / 1e9:.3g} GFLOP "
                      f"per slice per network), predict of {patients} patients x {slices} "
                      f"slices, {threads} thread(s), median of {reps}; peak {formula}")
                print("| engine | slices/s | vs torch eager | share of fp32 peak | "
                      "logits vs torch |")
                print("| --- | ---: | ---: | ---: | ---: |")
                for engine in engines:
                    rate = n / statistics.median(seconds[engine])
                    diff = max(np.abs(logits[engine][p] - logits["torch"][p]).max()
                               for p in images)
                    print(f"| {engine} | {rate:.1f} | {base / statistics.median(seconds[engine]):.2f}x"
                          f" | {100 * flops * rate / (peak * 1e9):.1f} % | {diff:.1e} |",
                          flush=True)
    print(f"peak resident memory of the process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"load average at end: {' '.join(map(str, os.getloadavg()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--n-models", type=int,
                        help="networks of the stacked row (default 15 on cuda, 3 on cpu)")
    parser.add_argument("--model", choices=["quick", "densenet161"],
                        help="network of the stacked row (default densenet161 on cuda, quick "
                             "on cpu)")
    parser.add_argument("--size", type=int, help="slice size (default 224 / 64)")
    parser.add_argument("--slices", type=int, help="slices of the stacked row (default 960 on "
                                                   "cuda, 360 on cpu)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--stacked-only", action="store_true", help="only the stacked row")
    parser.add_argument("--engines", action="store_true",
                        help="only the engines' rows (issue 24)")
    parser.add_argument("--engine-models", default="quick,densenet161",
                        help="networks of the engines' rows (quick, densenet161)")
    parser.add_argument("--peak-tflops", type=float, help="peak for the share of peak "
                                                          "(default from the GPU's name)")
    args = parser.parse_args()
    if args.engines:
        engine_rows(args.engine_models.split(","), args.reps)
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not args.stacked_only:
        fixed_rows(device)
    model = args.model or ("densenet161" if cuda else "quick")
    quick = load_preset("quick")["model"]
    cfg = {"architecture": "densenet161"} if model == "densenet161" else quick
    name = "DenseNet-161" if model == "densenet161" else "quick DenseNets"
    from bench_train import peak_of

    peak, source = peak_of(device, args.peak_tflops)
    print(f"\nStacked ensemble (issue 15), {torch.get_num_threads()} torch thread(s), {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if cuda else "")
          + f"; share of peak: {f'{peak:g} TFLOP/s, ' if peak else ''}{source}")
    print("| step | baseline | sarcograde | speed-up | agreement |")
    print("| --- | ---: | ---: | ---: | --- |")
    stacked_row(cfg, name, args.size or (224 if model == "densenet161" else 64),
                args.n_models or (15 if cuda else 3), args.slices or (960 if cuda else 360),
                device, peak, args.reps)


def fixed_rows(device: torch.device) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run, cache = build(root)
        ensemble = load_ensemble(run, device)
        index = CacheIndex.read(cache).rows(drop_empty=True)
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
                                                  device, batch_size=1))
        cam16_s, cam16 = timed(lambda: ensemble_cam(explainers, images, 1, ensemble.input_meta,
                                                    device, batch_size=16))

    print(f"{N_MODELS} quick-preset models, {N_PATIENTS} patients x {SLICES} slices, "
          f"{torch.get_num_threads()} torch thread(s), {device}")
    print("| step | baseline | sarcograde | speed-up | agreement |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| predict, {n} slices x {N_MODELS} models | one slice at a time: {base_s:.2f} s | "
          f"batch 64, inference mode: {ours_s:.2f} s | {base_s / ours_s:.1f}x | "
          f"logits within {agree:.1e} |")
    print(f"| predict rerun | computed: {ours_s:.2f} s | from predictions.slices: {rerun_s:.3f} s "
          f"| {ours_s / rerun_s:.0f}x | {'identical' if same else 'DIFFERENT'} |")
    print(f"| predict, bf16 autocast on the {device.type.upper()} | fp32: {ours_s:.2f} s | bf16: {bf16_s:.2f} s | "
          f"{ours_s / bf16_s:.2f}x | logits within {bf16_diff:.1e} |")
    print(f"| Grad-CAM, {SLICES} slices x {N_MODELS} models | one slice at a time: {cam1_s:.2f} s "
          f"| batch 16: {cam16_s:.2f} s | {cam1_s / cam16_s:.1f}x | maps within "
          f"{np.abs(cam1 - cam16).max():.1e} |")


if __name__ == "__main__":
    main()
