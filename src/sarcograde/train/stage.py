"""Train the grading network with repeated stratified k-fold cross-validation over patients.

As in Navarro et al. 2021 (section 2.5): batch 30, Adam 1e-4, up to 100 epochs, early stopping
on the validation loss (best weights restored), class-weighted cross-entropy, on-the-fly
augmentation; 5 folds x 3 repeats = 15 models by default. Writes RUN/fold_XX/{model.pt,
history.csv, learning_curve.png}, RUN/folds.json and RUN/cv_predictions.csv.

A fold's history.csv is rewritten after every epoch, and off a terminal (a log file) every epoch
of every fold is one line. Training is checkpointed (at most every train.checkpoint_every_s):
rerun the same command after an interruption and training goes on from the last checkpoint,
skipping finished folds, with the numbers of an uninterrupted run. With the paper preset on a
machine without a GPU, one timed step first says how long an epoch will take there.

Each fold trains with train.threads_per_fold CPU threads (--threads-per-fold), on any executor
and machine, so that its numbers do not depend on where it ran; on CPUs the local executor
trains folds side by side in worker processes, as many as the cores hold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import executors
from ..config import PRESETS, load_config
from ..ensemble import PRECISIONS
from ..options import add_renamed_option
from .cv import train_cv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cache", type=Path, help="cache folder written by `sarcograde preprocess`")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write (or resume)")
    parser.add_argument("--preset", choices=PRESETS, default="paper",
                        help="parameter preset (default: paper, the published method)")
    parser.add_argument("--config", type=Path, help="YAML file with model/train values on top "
                                                     "of the preset")
    parser.add_argument("--folds", type=int, help="folds per repeat (preset: 5)")
    parser.add_argument("--repeats", type=int, help="repeats of the k-fold split (paper: 3)")
    parser.add_argument("--fold", type=int, metavar="K",
                        help="train only split K (0-based, fold_KK), e.g. one job of an array")
    parser.add_argument("--pretrained", metavar="PATH|imagenet|none",
                        help="torchvision ImageNet DenseNet-161 weights: a file, 'imagenet' "
                             "(torch's checkpoint folder or download) or 'none' (from scratch)")
    parser.add_argument("--sequence", help="sequence to train on, where the cache holds several")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and "
                                                              "augmentation (default 0)")
    add_renamed_option(parser, "train", "--precision", choices=PRECISIONS,
                       help="autocast precision (default: the preset's train.precision; auto "
                            "is bf16 on a GPU, fp32 on a CPU, where bf16 can be faster on recent "
                            "processors)")
    add_renamed_option(parser, "train", "--threads-per-fold", type=int, metavar="N",
                       help="CPU threads each fold trains with (train.threads_per_fold, preset "
                            "1); on CPUs the folds run side by side, as many as the cores hold")
    parser.add_argument("--concurrent-folds", metavar="auto|N",
                        help="folds trained side by side as one stacked network (default 1; "
                             "auto: as many as the GPU's memory holds, 1 on a CPU)")
    executors.add_arguments(parser)


def _concurrent_folds(value: str | None) -> int | str | None:
    """--concurrent-folds as the config holds it: "auto", a whole number, or None (not given);
    anything else is passed on for `Settings` to refuse in one line."""
    return int(value) if value is not None and value.isdigit() else value


def run(args: argparse.Namespace) -> int:
    config = load_config(args.preset, args.config, {
        "model": {"pretrained": args.pretrained},
        "train": {"folds": args.folds, "repeats": args.repeats,
                  "precision": args.precision,
                  "concurrent_folds": _concurrent_folds(args.concurrent_folds),
                  "threads_per_fold": args.threads_per_fold}})
    train_cv(args.cache, args.out, config, seed=args.seed, only_fold=args.fold,
             sequence=args.sequence, device=args.device,
             executor=executors.from_arguments(args))
    return 0
