"""Training throughput of `sarcograde train`'s loop against the bare network, in one process.

"loop" is the real `train.train_epoch`: gather a batch from the in-memory slices, augment it
(flips, rotation, zoom, elastic, crop-resize in one resampling), map it to network input, then
forward, class-weighted loss, backward and Adam step. "bare" is the same forward/loss/backward/
step on one batch already in memory in its final form. Their ratio is the share of the time the
network, not the input pipeline, sets the pace (target >= 0.9). The two are interleaved and the
median of the repetitions is kept, because this machine is shared.

A second table times augmentation alone: the batched `data.augment_batch` against MONAI's
per-slice array transforms (RandFlip x2, RandRotate, RandZoom, Rand2DElastic, RandScaleCrop +
Resize) with metadata tracking off.

    python benchmarks/bench_train.py [--threads 1] [--reps 3] [--skip-161]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from sarcograde import model as model_lib
from sarcograde.data import AugmentParams, augment_batch, epoch_generator
from sarcograde.train import FoldData, Settings, train_epoch

QUICK = {"architecture": "densenet", "init_features": 16, "growth_rate": 8,
         "block_config": [2, 4, 4]}
DENSENET161 = {"architecture": "densenet161"}


def settings_for(batch: int, amp: str, channels_last: bool) -> Settings:
    return Settings.from_config({"batch_size": batch, "learning_rate": 1e-4, "max_epochs": 1,
                                 "patience": 1, "augment": True, "amp": amp,
                                 "channels_last": channels_last}, torch.device("cpu"))


def bare_steps(model, optimizer, settings: Settings, size: int, steps: int) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(settings.batch_size, 3, size, size, generator=g)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (settings.batch_size,), generator=g)
    weights = torch.tensor([1.5, 0.75])
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        with settings.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def loop_steps(model, optimizer, settings: Settings, size: int, steps: int, epoch: int) -> float:
    n = settings.batch_size * steps
    rng = np.random.default_rng(epoch)
    images = torch.from_numpy(rng.normal(size=(n, size, size)).astype(np.float16))
    labels = torch.from_numpy(rng.integers(0, 2, n))
    data = FoldData(images=images, slice_labels=labels, train=torch.arange(n),
                    val=torch.arange(0), val_owner=torch.arange(0), val_patients=[],
                    val_labels=np.zeros(0))
    meta = model_lib.input_meta(size, pretrained=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    start = time.perf_counter()
    train_epoch(model, optimizer, scaler, data, torch.tensor([1.5, 0.75]), meta, settings,
                epoch_generator(0, epoch))
    return time.perf_counter() - start


def throughput(name: str, model_cfg: dict, size: int, batch: int, steps: int, reps: int,
               amp: str = "none", channels_last: bool = False) -> None:
    settings = settings_for(batch, amp, channels_last)
    torch.manual_seed(0)
    model = model_lib.build_model(model_cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    bare_steps(model, optimizer, settings, size, 1)  # warm-up: oneDNN builds its kernels
    loop_steps(model, optimizer, settings, size, 1, epoch=0)
    bare, loop = [], []
    for rep in range(reps):
        bare.append(batch * steps / bare_steps(model, optimizer, settings, size, steps))
        loop.append(batch * steps / loop_steps(model, optimizer, settings, size, steps, rep + 1))
    b, lo = statistics.median(bare), statistics.median(loop)
    print(f"| {name} | {size} | {batch} | {amp} | {'yes' if channels_last else 'no'} | "
          f"{b:.1f} | {lo:.1f} | {lo / b:.2f} |", flush=True)


def augmentation(size: int, batch: int, reps: int) -> None:
    from monai.data import set_track_meta
    from monai.transforms import (Compose, Rand2DElastic, RandFlip, RandRotate, RandScaleCrop,
                                  RandZoom, Resize)

    p = AugmentParams()
    monai = Compose([
        RandFlip(p.flip_p, spatial_axis=0), RandFlip(p.flip_p, spatial_axis=1),
        RandRotate(range_x=math.radians(p.rotate_deg), prob=p.rotate_p, padding_mode="reflection"),
        RandZoom(prob=p.zoom_p, min_zoom=p.zoom[0], max_zoom=p.zoom[1], padding_mode="reflect"),
        Rand2DElastic(spacing=size // (p.elastic_grid - 1), magnitude_range=(0, 2 * p.elastic_sd * size),
                      prob=p.elastic_p, padding_mode="reflection"),
        RandScaleCrop(p.crop_min, max_roi_scale=1.0, random_size=True), Resize((size, size))])
    monai.set_random_state(0)
    x = torch.randn(batch, size, size)
    set_track_meta(False)
    try:
        monai(x[:1])
        ours, theirs = [], []
        for rep in range(reps):
            start = time.perf_counter()
            augment_batch(x, p, epoch_generator(0, rep))
            ours.append((time.perf_counter() - start) / batch)
            start = time.perf_counter()
            for i in range(batch):
                monai(x[i:i + 1])
            theirs.append((time.perf_counter() - start) / batch)
    finally:
        set_track_meta(True)
    a, m = statistics.median(ours), statistics.median(theirs)
    print(f"| {size} | {batch} | {a * 1e3:.3f} | {m * 1e3:.2f} | {m / a:.0f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-161", action="store_true", help="quick model only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| model | size | batch | autocast | channels_last | bare slices/s | loop slices/s "
          "| loop/bare |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    throughput("quick DenseNet", QUICK, 64, 32, 20, args.reps)
    throughput("quick DenseNet", QUICK, 64, 32, 20, args.reps, amp="bf16")
    if not args.skip_161:
        throughput("DenseNet-161", DENSENET161, 224, 8, 2, args.reps)
        throughput("DenseNet-161", DENSENET161, 224, 8, 2, args.reps, amp="bf16")
        throughput("DenseNet-161", DENSENET161, 224, 8, 2, args.reps, channels_last=True)
    print("\n| size | batch | augment_batch ms/slice | MONAI per-slice ms/slice | ratio |\n"
          "| --- | --- | --- | --- | --- |")
    augmentation(64, 32, args.reps)
    augmentation(224, 30, args.reps)


if __name__ == "__main__":
    main()
