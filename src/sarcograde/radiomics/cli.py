"""Radiomics baseline (`radiomics-<SEQ>`): IBSI features with MIRP inside the tumour mask
(`extract` -> DIR/features.csv), an L1 logistic regression fitted with the DL models' repeated
stratified cross-validation (`fit` -> RUN/), and its ensemble applied to another cohort
(`predict`). Settings: configs/radiomics.yaml, overridden by --config FILE."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import PRESETS, load_config
from .settings import load_settings


def _settings_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="YAML",
                        help="file overriding configs/radiomics.yaml (same sections and keys)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("extract", help="features.csv of one cohort and sequence (resumable)")
    p.add_argument("manifest", type=Path, help="cohort manifest CSV")
    p.add_argument("--sequence", help="image_<SEQ>/mask_<SEQ> to use; may be left out when the "
                   "manifest has only one")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output folder (reused and completed on a rerun)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="patients in parallel")
    _settings_argument(p)
    p = sub.add_parser("fit", help="cross-validated fold models from a training features.csv")
    p.add_argument("features", type=Path, help="features.csv of the training cohort")
    p.add_argument("--manifest", type=Path, required=True, help="the training manifest (grades)")
    p.add_argument("--out", type=Path, required=True, metavar="RUN", help="run folder")
    p.add_argument("--preset", choices=PRESETS, default="paper",
                   help="folds and repeats of the CV, as for `sarcograde train`")
    p.add_argument("--folds", type=int, help="override the preset's folds")
    p.add_argument("--repeats", type=int, help="override the preset's repeats")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits (as train's)")
    _settings_argument(p)
    p = sub.add_parser("predict", help="ensemble predictions for a cohort's features.csv")
    p.add_argument("run", type=Path, help="run folder of `radiomics fit`")
    p.add_argument("features", type=Path, help="features.csv of the cohort to grade")
    p.add_argument("--out", type=Path, required=True, help="predictions CSV to write")


def run(args: argparse.Namespace) -> int:
    if args.action == "extract":
        from .extract import extract

        return extract(args.manifest, args.sequence, args.out, load_settings(args.config),
                       args.jobs)
    if args.action == "fit":
        from .run import fit_run

        train = load_config(args.preset, None, {"train": {"folds": args.folds,
                                                          "repeats": args.repeats}})["train"]
        fit_run(args.features, args.manifest, args.out, load_settings(args.config),
                folds=int(train["folds"]), repeats=int(train["repeats"]), seed=args.seed)
        return 0
    from .run import predict_run

    predict_run(args.run, args.features, args.out)
    return 0
