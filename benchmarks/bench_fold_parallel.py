"""Two folds on two cores: one process with 2 torch threads training them one after the other
(what `train --executor local` did before `train.threads_per_fold`) against two processes with
1 thread each training one fold each at the same time (what it does now, at the presets'
`threads_per_fold: 1`); for reference, one process with 1 thread training both in turn.

Each configuration trains every fold a few steps of the real loop (`train.train_epoch`: gather,
augment, forward, class-weighted loss, backward, fused Adam step) on synthetic slices, under
`train.deterministic()` as `sarcograde train` runs: 20 steps of the quick preset's network (64
px, batch 32), 1 of the paper's DenseNet-161 (224 px, batch 30). The two worker processes are
started, built and warmed up once (one step each), then the configurations are interleaved,
`--reps` times; slices/s counts both folds' slices over the wall time from the first step to the
last, and the ratio is against the one-process, two-thread baseline of the same repetition. The
load average is printed before and after each repetition, because this machine is shared.

    python benchmarks/bench_fold_parallel.py [--reps 3] [--skip-161]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

import torch

from bench_train import DENSENET161, QUICK, loop_steps, settings_for
from sarcograde import model as model_lib
from sarcograde.train import deterministic

# (name, model config, slice size, batch, steps per fold and configuration)
MODELS = [("quick DenseNet", QUICK, 64, 32, 20),
          ("DenseNet-161 (paper)", DENSENET161, 224, 30, 1)]


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def worker(connection, model_cfg: dict, size: int, batch: int, folds: int) -> None:
    """Hold `folds` fresh networks; on (threads, folds, steps, epoch) train the first `folds`
    of them in turn, `steps` steps each with `threads` torch threads, and send back (start,
    end) of that."""
    settings = settings_for(batch, "none", False)
    nets = []
    for seed in range(folds):
        torch.manual_seed(seed)
        net = model_lib.build_model(model_cfg)
        nets.append((net, settings.optimizer(net)))
    with deterministic():
        for net, optimizer in nets:  # warm-up: oneDNN builds its kernels
            loop_steps(net, optimizer, settings, size, 1, epoch=0)
        connection.send("ready")
        while (command := connection.recv()) is not None:
            threads, n, steps, epoch = command
            torch.set_num_threads(threads)
            start = time.monotonic()
            for net, optimizer in nets[:n]:
                loop_steps(net, optimizer, settings, size, steps, epoch)
            connection.send((start, time.monotonic()))


def start_workers(model_cfg: dict, size: int, batch: int) -> list:
    """Two workers: the first holds two folds (it trains both in the one-process
    configuration), the second one."""
    context = multiprocessing.get_context("spawn")
    ends = []
    for folds in (2, 1):
        mine, theirs = context.Pipe()
        context.Process(target=worker, args=(theirs, model_cfg, size, batch, folds),
                        daemon=True).start()
        ends.append(mine)
    for end in ends:
        assert end.recv() == "ready"
    return ends


def wall(commands: list[tuple]) -> float:
    """Seconds from the first start to the last end of the workers given (end, command)."""
    for end, command in commands:
        end.send(command)
    stamps = [end.recv() for end, _ in commands]
    return max(stop for _, stop in stamps) - min(start for start, _ in stamps)


def compare(name: str, model_cfg: dict, size: int, batch: int, steps: int, reps: int) -> str:
    """The table's row of one model (each repetition printed as it ends)."""
    ends = start_workers(model_cfg, size, batch)
    one, two, alone = [], [], []
    slices = 2 * steps * batch
    try:
        for rep in range(reps):  # interleaved: each configuration once per repetition
            before, epoch = loadavg(), rep + 1
            one.append(slices / wall([(ends[0], (2, 2, steps, epoch))]))
            two.append(slices / wall([(end, (1, 1, steps, epoch)) for end in ends]))
            alone.append(slices / wall([(ends[0], (1, 2, steps, epoch))]))
            print(f"({name}, repetition {epoch}: {one[-1]:.2f}, {two[-1]:.2f}, {alone[-1]:.2f} "
                  f"slices/s; load average {before} -> {loadavg()})", flush=True)
    finally:
        for end in ends:
            end.send(None)
    a, b, c = (statistics.median(x) for x in (one, two, alone))
    ratios = ", ".join(f"{y / x:.2f}" for x, y in zip(one, two))
    return (f"| {name} | {size} | {batch} | {steps} | {a:.2f} | {b:.2f} | {b / a:.2f}x "
            f"({ratios}) | {c:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-161", action="store_true", help="quick model only")
    args = parser.parse_args()
    print(f"torch {torch.__version__}; {os.cpu_count()} CPUs; load average at start: "
          f"{loadavg()}\n", flush=True)
    rows = [compare(name, cfg, size, batch, steps, args.reps)
            for name, cfg, size, batch, steps in (MODELS[:1] if args.skip_161 else MODELS)]
    print(f"\nMedian of {args.reps} interleaved repetitions; ratio: two processes against one, "
          "in the same repetition.\n\n| model | size | batch | steps per fold | 1 process x 2 "
          "threads, slices/s | 2 processes x 1 thread, slices/s | ratio (per repetition) | "
          "1 process x 1 thread, slices/s (reference) |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows))
    print(f"\nload average at end: {loadavg()}")


if __name__ == "__main__":
    main()
