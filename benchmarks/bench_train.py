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

A third table (issue 15) sets the plain path, one network, against the stacked one, K networks
run as one `StackedDenseNet` (`train.concurrent_folds`), in the same run: bare steps (one batch
in memory; stacked: K batches, per-network loss, backward, `member_grads()`, each network's Adam
step) and the real loops (`train.train_epoch` of one `FoldRun`; `train.stacked_epoch` of K
`FoldRun`s built in memory on a synthetic slice set). A stacked step counts K x B slices. On
CUDA it also gives the GPU memory peak per configuration, how often per step the loop makes
the host wait for the GPU (synchronisations counted by torch's profiler), and the share of the
peak arithmetic rate: FLOPs per slice (forward + backward, counted once by torch's `FlopCounterMode`) times
slices/s over `--peak-tflops`. After it, the augmentation of one stacked step alone: K
`augment_batch` calls (as `stacked_epoch` did) against K `draw_augmentation`s and one batched
`apply_augmentation` (as it does now), at 64 and 224 px. On CUDA a last table sets the
training step itself (`train.StackedStep`, one network as a stack of one and K stacked) run
eagerly against replayed from its CUDA graph (`train.cuda_graphs`). The third and last tables
run under `train.deterministic()`, as `sarcograde train` does (deterministic kernels, no cuDNN
autotuning), so that they time the kernels training uses.

    python benchmarks/bench_train.py [--threads 1] [--reps 3] [--skip-161]
    python benchmarks/bench_train.py --device cuda [--k 5 15] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sarcograde import model as model_lib
from sarcograde.data import (AugmentDraws, AugmentParams, SliceSet, apply_augmentation,
                             augment_batch, draw_augmentation, epoch_generator)
from sarcograde.splits import Split
from sarcograde.train import (FoldData, FoldRun, Settings, StackedDenseNet, StackedStep,
                              deterministic, epoch_batches, stacked_epoch, train_epoch,
                              train_step)

QUICK = {"architecture": "densenet", "init_features": 16, "growth_rate": 8,
         "block_config": [2, 4, 4]}
DENSENET161 = {"architecture": "densenet161"}


def settings_for(batch: int, precision: str, channels_last: bool,
                 device: torch.device = torch.device("cpu")) -> Settings:
    return Settings.from_config({"batch_size": batch, "learning_rate": 1e-4, "max_epochs": 1,
                                 "patience": 1, "augment": True, "precision": precision,
                                 "channels_last": channels_last}, device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_batch(settings: Settings, size: int, k: int | None = None):
    """Network input, labels and class weights of one batch (K batches side by side if k)."""
    g = torch.Generator().manual_seed(0)
    lead = (settings.batch_size,) if k is None else (settings.batch_size, k)
    x = torch.randn(*lead, 3, size, size, generator=g).to(settings.device)
    if settings.channels_last and k is None:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, lead, generator=g).to(settings.device)
    weights = torch.tensor([1.5, 0.75], device=settings.device)
    return x, y, weights if k is None else weights.expand(k, 2)


def timed(device: torch.device, fn, times: int = 1) -> float:
    """Seconds of `times` calls of `fn`, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    for _ in range(times):
        fn()
    sync(device)
    return time.perf_counter() - start


def bare_steps(model, optimizer, settings: Settings, size: int, steps: int) -> float:
    """`train.train_step` on one batch already in memory in its final form."""
    x, y, weights = bare_batch(settings, size)
    scaler = torch.amp.GradScaler(settings.device.type, enabled=False)
    model.train()
    return timed(settings.device,
                 lambda: train_step(model, optimizer, scaler, x, y, weights, settings), steps)


def bare_stacked_steps(step: StackedStep, settings: Settings, size: int, steps: int) -> float:
    """`StackedStep.update` on K batches already in memory (the stacked step after its
    gathering and augmentation); the class weights are the folds' own."""
    x, y, _ = bare_batch(settings, size, step.stack.k)
    step.stack.train()
    return timed(settings.device, lambda: step.update(x, y), steps)


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
               precision: str = "fp32", channels_last: bool = False) -> None:
    settings = settings_for(batch, precision, channels_last)
    torch.manual_seed(0)
    model = model_lib.build_model(model_cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = settings.optimizer(model)
    bare_steps(model, optimizer, settings, size, 1)  # warm-up: oneDNN builds its kernels
    loop_steps(model, optimizer, settings, size, 1, epoch=0)
    bare, loop = [], []
    for rep in range(reps):
        bare.append(batch * steps / bare_steps(model, optimizer, settings, size, steps))
        loop.append(batch * steps / loop_steps(model, optimizer, settings, size, steps, rep + 1))
    b, lo = statistics.median(bare), statistics.median(loop)
    print(f"| {name} | {size} | {batch} | {precision} | {'yes' if channels_last else 'no'} | "
          f"{b:.1f} | {lo:.1f} | {lo / b:.2f} |", flush=True)


def fold_runs(model_cfg: dict, settings: Settings, size: int, steps: int, k: int,
              out: Path) -> list[FoldRun]:
    """K `FoldRun`s (fresh networks, seeds 0..K-1) on one synthetic slice set held on the
    device, as `train_cv` holds it: each trains on the same `steps` patients of one batch of
    slices each (labels alternate), so one epoch is exactly `steps` steps, and validates on one
    patient of 2 slices (not timed)."""
    batch = settings.batch_size
    counts = [batch] * steps + [2]
    rng = np.random.default_rng(0)
    n = sum(counts)
    ids = [f"T{i:03d}" for i in range(steps)] + ["V000"]
    slices = SliceSet(images=rng.normal(size=(n, size, size)).astype(np.float16),
                      patient_index=np.repeat(np.arange(len(ids)), counts), patient_ids=ids,
                      labels=np.arange(len(ids)) % 2, sequence="T1",
                      cache_config={"size": size}, cache_hash="bench")
    images = torch.from_numpy(slices.images).to(settings.device)
    labels = torch.from_numpy(slices.labels[slices.patient_index]).to(settings.device)
    meta = model_lib.input_meta(size, pretrained=False)
    return [FoldRun(Split(f"fold_{i:02d}", 0, i, ids[:-1], ids[-1:]), slices, images, labels,
                    model_cfg, "none", meta, settings, out, seed=i, config_hash="bench")
            for i in range(k)]


def flops_per_slice(model, settings: Settings, size: int) -> float:
    """Forward + backward FLOPs of one training step, per slice (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, y, weights = bare_batch(settings, size)
    model.train()
    with FlopCounterMode(display=False) as counter:
        with settings.autocast():
            logits = model(x)
        F.cross_entropy(logits.float(), y, weight=weights).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / settings.batch_size


def allocated(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def memory_peak(device: torch.device, before: int, fn) -> float | None:
    """GiB of GPU memory a configuration needs: `torch.cuda.max_memory_allocated` while `fn`
    runs, less what was allocated before the configuration was built (None on a CPU)."""
    fn()
    if device.type != "cuda":
        return None
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 30


def host_waits(device: torch.device, loop, steps: int) -> str:
    """How often per step the host waits for the GPU while `loop` (a `timed` epoch of `steps`
    steps) runs: CUDA synchronisation calls counted by torch's profiler, less `timed`'s own
    two. Each wait stops the host from queueing the next kernels while the GPU works."""
    if device.type != "cuda":
        return "-"
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            loop()
        events = prof.key_averages()
    except Exception as exc:  # a profiler that cannot trace must not end the benchmark
        return f"n/a ({type(exc).__name__})"
    if not any(e.key.startswith(("cudaLaunch", "cuLaunch")) for e in events):
        return "n/a (no CUDA API events traced)"
    waits = sum(e.count for e in events if e.key.endswith("Synchronize"))
    return f"{(waits - 2) / steps:.2f}"


def stacked_vs_plain(name: str, model_cfg: dict, size: int, batch: int, ks: list[int],
                     steps: int, reps: int, precision: str, channels_last: bool,
                     device: torch.device, peak_tflops: float | None,
                     step_budget_s: float) -> None:
    """Rows of the plain-vs-stacked table: one network, then K = each of `ks` side by side."""
    import tempfile

    settings = settings_for(batch, precision, channels_last, device)
    layout = "yes" if settings.channels_last else "no"
    tag = f"| {name} | {size} | {batch} | {precision} | {layout} "
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        before = allocated(device)
        (plain,) = fold_runs(model_cfg, settings, size, steps, 1, out)
        flops = flops_per_slice(plain.net, settings, size)
        meta = plain.meta

        def loop1():
            return timed(device, lambda: train_epoch(
                plain.net, plain.optimizer, plain.scaler, plain.data, plain.weights, meta,
                settings, plain.generator()))

        def bare1():
            return bare_steps(plain.net, plain.optimizer, settings, size, steps)

        memory = memory_peak(device, before, lambda: (bare_steps(plain.net, plain.optimizer, settings,
                                                         size, 1), loop1()))
        rows = [("plain", 1, bare1, loop1, memory)]
        plain_bare = None
        for k in ks:
            label = f"stacked K={k}"
            try:
                before = allocated(device)
                runs = fold_runs(model_cfg, settings, size, steps, k, out)
                step = StackedStep(StackedDenseNet([run.net for run in runs],
                                                   settings.channels_last), runs)

                def bare_k(step=step):
                    return bare_stacked_steps(step, settings, size, steps)

                def loop_k(step=step):
                    return timed(device, lambda: stacked_epoch(step))

                memory = memory_peak(device, before, lambda: (
                    bare_stacked_steps(step, settings, size, 1), loop_k()))
            except torch.cuda.OutOfMemoryError:
                print(f"{tag}| {label} | does not fit in GPU memory | | | | | | | |", flush=True)
                break
            rows.append((label, k, bare_k, loop_k, memory))
            # One timed stacked step as the guard against a K that would take too long.
            one = bare_stacked_steps(step, settings, size, 1)
            if one * steps * 2 * (reps + 1) > step_budget_s:
                print(f"({label}: {one:.2f} s a step; larger K skipped, budget "
                      f"{step_budget_s:.0f} s)", flush=True)
                break
        times: dict[str, tuple[list[float], list[float]]] = {r[0]: ([], []) for r in rows}
        for _ in range(reps):  # interleaved: every configuration once per repetition
            for label, k, bare, loop, _ in rows:
                times[label][0].append(k * batch * steps / bare())
                times[label][1].append(k * batch * steps / loop())
        for label, k, _, loop, memory in rows:
            b, lo = (statistics.median(t) for t in times[label])
            if plain_bare is None:
                plain_bare, plain_loop = b, lo
            share = (f"{100 * flops * b / (peak_tflops * 1e12):.1f} / "
                     f"{100 * flops * lo / (peak_tflops * 1e12):.1f}" if peak_tflops else "-")
            mem = "-" if memory is None else f"{memory:.1f}"
            print(f"{tag}| {label} | {b:.1f} | {lo:.1f} | {lo / b:.2f} | {b / plain_bare:.2f}x | "
                  f"{lo / plain_loop:.2f}x | {share} | {mem} | {host_waits(device, loop, steps)} |",
                  flush=True)
    print(f"({flops / 1e9:.3g} GFLOP per slice, forward + backward, torch flop counter"
          + (f"; share of a {peak_tflops:g} TFLOP/s peak)" if peak_tflops else ")"), flush=True)


def graphed_vs_eager(name: str, model_cfg: dict, size: int, batch: int, ks: list[int],
                     steps: int, reps: int, precision: str, channels_last: bool,
                     device: torch.device, peak_tflops: float | None,
                     step_budget_s: float) -> None:
    """`train.StackedStep` run eagerly against replayed from its CUDA graph
    (`train.cuda_graphs`), for one network (a stack of one) and K stacked: the training step of
    the loop (slices gathered and augmented on the device, forward, loss, backward, Adam),
    without the epoch's other work. Eager and graphed are built one after the other (the graph
    keeps its memory), each timed on `steps` full batches per fold after one untimed pass, which
    includes the warm-up and the capture."""
    import tempfile

    settings = settings_for(batch, precision, channels_last, device)
    tag = f"| {name} | {size} | {batch} | {precision} | {'yes' if channels_last else 'no'} "
    flops, plain_eager = None, None
    with tempfile.TemporaryDirectory() as tmp:
        for k in [1, *ks]:
            rates: dict[bool, float] = {}
            try:
                for graphs in (False, True):
                    config = replace(settings, cuda_graphs=graphs)
                    runs = fold_runs(model_cfg, config, size, steps, k, Path(tmp))
                    flops = flops or flops_per_slice(runs[0].net, settings, size)
                    step = StackedStep(StackedDenseNet([r.net for r in runs], channels_last), runs)
                    step.stack.train()
                    generators = [run.generator() for run in runs]
                    batches = [epoch_batches(run.data, config, g)
                               for run, g in zip(runs, generators)]

                    def run_steps(step=step, batches=batches, generators=generators):
                        for i in range(steps):
                            step([b[i] for b in batches], generators)

                    one = timed(device, run_steps)   # untimed pass: warm-up and capture
                    if not graphs and one * 2 * (reps + 1) > step_budget_s:
                        print(f"(K={k}: {one / steps:.2f} s an eager step; this K and larger "
                              f"skipped, budget {step_budget_s:.0f} s)", flush=True)
                        return
                    rates[graphs] = statistics.median(
                        k * batch * steps / timed(device, run_steps) for _ in range(reps))
                    del step, runs, run_steps
                    torch.cuda.empty_cache()
            except torch.cuda.OutOfMemoryError:
                print(f"{tag}| K={k} | does not fit in GPU memory | | | | |", flush=True)
                return
            except RuntimeError as exc:  # a step the graph cannot capture: say which and why
                print(f"{tag}| K={k} | failed: {str(exc).splitlines()[0]} | | | | |", flush=True)
                return
            e, g = rates[False], rates[True]
            plain_eager = plain_eager or e
            share = (f"{100 * flops * e / (peak_tflops * 1e12):.1f} / "
                     f"{100 * flops * g / (peak_tflops * 1e12):.1f}" if peak_tflops else "-")
            print(f"{tag}| {'one network' if k == 1 else f'stacked K={k}'} | {e:.1f} | {g:.1f} | "
                  f"{g / e:.2f}x | {g / plain_eager:.2f}x | {share} |", flush=True)


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


def augmentation_side_by_side(size: int, batch: int, k: int, reps: int, steps: int,
                              device: torch.device) -> None:
    """A stacked step's augmentation of K batches: K `augment_batch` calls (the former
    `stacked_epoch`) against K `draw_augmentation`s and ONE `apply_augmentation` (the current)."""
    p = AugmentParams()
    x = torch.randn(k * batch, size, size, device=device)
    parts = x.split(batch)

    def separate(gens):
        return torch.cat([augment_batch(part, p, g) for part, g in zip(parts, gens)])

    def together(gens):
        return apply_augmentation(x, AugmentDraws.cat([draw_augmentation(batch, p, g)
                                                       for g in gens]))

    def run(fn):
        gens = [epoch_generator(i, 0) for i in range(k)]
        return timed(device, lambda: fn(gens), steps) / steps

    assert torch.allclose(separate([epoch_generator(i, 0) for i in range(k)]),
                          together([epoch_generator(i, 0) for i in range(k)]), atol=1e-6)
    run(separate), run(together)  # warm-up
    a, b = [], []
    for _ in range(reps):  # interleaved
        a.append(run(separate))
        b.append(run(together))
    a, b = statistics.median(a), statistics.median(b)
    print(f"| {size} | {k} x {batch} | {a * 1e3:.2f} | {b * 1e3:.2f} | {a / b:.2f}x |", flush=True)


# bf16 dense tensor-core peaks (TFLOP/s) of the SXM parts, from NVIDIA's data sheets.
PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_of(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given:
        return given, "given with --peak-tflops"
    if device.type != "cuda":
        return None, "no peak on a CPU"
    name = torch.cuda.get_device_name(device)
    for part, peak in PEAKS.items():
        if part in name:
            return peak, f"bf16 dense peak of an {part} SXM (NVIDIA data sheet)"
    return None, f"unknown peak for {name}: pass --peak-tflops"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-161", action="store_true", help="quick model only")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--stacked-only", action="store_true",
                        help="only the plain-vs-stacked table (on cuda: always)")
    parser.add_argument("--model", choices=["quick", "densenet161"],
                        help="network of the plain-vs-stacked table (default: densenet161 on "
                             "cuda, quick on cpu)")
    parser.add_argument("--k", type=int, nargs="+", default=[5],
                        help="stack sizes, smallest first (default 5)")
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--size", type=int, help="slice size (default 224 for DenseNet-161, 64 "
                                                 "for quick)")
    parser.add_argument("--steps", type=int, help="steps per timing (default 10 cuda, 4 cpu)")
    parser.add_argument("--precision", choices=["fp32", "bf16"],
                        help="autocast precision (default bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--peak-tflops", type=float,
                        help="peak arithmetic rate for the share of peak (default: 989, the "
                             "bf16 dense peak of an H100/H200 SXM, from the device name)")
    parser.add_argument("--step-budget-s", type=float, default=120.0,
                        help="skip a larger K once one K's timings would take longer than this")
    parser.add_argument("--no-graph", action="store_true",
                        help="on cuda, skip the CUDA-graph table (eager against captured step)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
          + (f", {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if cuda else "")
          + "\n", flush=True)
    if not (cuda or args.stacked_only):
        print("| model | size | batch | autocast | channels_last | bare slices/s | "
              "loop slices/s | loop/bare |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
        throughput("quick DenseNet", QUICK, 64, 32, 20, args.reps)
        throughput("quick DenseNet", QUICK, 64, 32, 20, args.reps, precision="bf16")
        if not args.skip_161:
            throughput("DenseNet-161", DENSENET161, 224, 8, 2, args.reps)
            throughput("DenseNet-161", DENSENET161, 224, 8, 2, args.reps, precision="bf16")
            throughput("DenseNet-161", DENSENET161, 224, 8, 2, args.reps, channels_last=True)
        print()
    model = args.model or ("densenet161" if cuda else "quick")
    cfg, name = (DENSENET161, "DenseNet-161") if model == "densenet161" else (QUICK, "quick DenseNet")
    size = args.size or (224 if model == "densenet161" else 64)
    precision = args.precision or ("bf16" if cuda else "fp32")
    peak, source = peak_of(device, args.peak_tflops)
    print(f"Plain (one network) against stacked (K networks as one StackedDenseNet), median of "
          f"{args.reps} repetitions; a stacked step counts K x {args.batch} slices. Share of peak:"
          f" {f'{peak:g} TFLOP/s, ' if peak else ''}{source}.\n")
    print("| model | size | batch | autocast | channels_last | path | bare slices/s | "
          "loop slices/s | loop/bare | bare vs plain | loop vs plain | % of peak bare / loop "
          "| GPU GiB | host waits / loop step |\n" + "| --- " * 14 + "|")
    with deterministic():  # as `sarcograde train` runs: deterministic kernels, no cuDNN autotuning
        stacked_vs_plain(name, cfg, size, args.batch, sorted(args.k),
                         args.steps or (10 if cuda else 4), args.reps, precision,
                         args.channels_last, device, peak, args.step_budget_s)
    print(f"\nAugmentation of one stacked step, K = {args.k[-1]} batches of {args.batch}: K "
          f"augment_batch calls against one batched resampling, ms per step, median of "
          f"{args.reps}.\n\n| size | slices | K augment_batch ms | one batched ms | ratio |\n"
          "| --- | --- | --- | --- | --- |")
    for aug_size in sorted({64, 224, size}):
        augmentation_side_by_side(aug_size, args.batch, args.k[-1], args.reps, args.steps or 10,
                                  device)
    if not (cuda or args.stacked_only):
        print("\n| size | batch | augment_batch ms/slice | MONAI per-slice ms/slice | ratio |\n"
              "| --- | --- | --- | --- | --- |")
        augmentation(64, 32, args.reps)
        augmentation(224, 30, args.reps)
    # Last: a capture that fails can leave the device unusable for what would follow.
    if cuda and not args.no_graph:
        print(f"\nThe training step (train.StackedStep) eager against replayed from its CUDA "
              f"graph (train.cuda_graphs), median of {args.reps}; slices/s.\n\n| model | size | "
              "batch | autocast | channels_last | networks | eager | CUDA graph | graph vs eager "
              "| graph vs one network eager | % of peak eager / graph |\n" + "| --- " * 11 + "|")
        with deterministic():
            graphed_vs_eager(name, cfg, size, args.batch, sorted(args.k), args.steps or 10,
                             args.reps, precision, args.channels_last, device, peak,
                             args.step_budget_s)


if __name__ == "__main__":
    main()
