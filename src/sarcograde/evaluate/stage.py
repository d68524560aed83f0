"""Evaluate predictions on a graded test cohort, as in the paper's sections 2.8, 2.9 and 3.

Metrics with 95% percentile CIs from a patient bootstrap (AUC, precision, sensitivity,
specificity, F1, accuracy, Brier, calibration slope and intercept, net benefit) at the argmax
threshold and, with --run, at the Youden threshold of the training run's out-of-fold predictions;
ROC curve with its CI band and reliability diagram; decision curves; abstention by the ensemble's
spread (--coverage); subgroups; with --recalibrate N a recalibration for the site; with --train-manifest the logistic-regression baselines
(clinical, tumour volume, both; same cross-validation, DeLong test against the DL model) and the
cohort table (training against test); Kaplan-Meier overall survival by predicted and true grade
group with log-rank tests (Bonferroni-adjusted). Patients are matched by patient_id, never by
row position; those in only one of the files, or without a grade, are listed in
patient_flow.json and left out.

With a single cohort the honest estimate is the out-of-fold one: give the training run's
RUN/cv_predictions.csv instead of predictions.csv (recognised by its columns) and each patient's
p_high is the mean over the repeats of the cross-validation.

Several models (`--predictions MODEL=CSV`, repeated) are compared on the graded patients every
one of them predicted, with the same bootstrap resamples: Table 2, one ROC figure, calibration
curves, a Kaplan-Meier panel and the pairwise DeLong tests (Bonferroni-adjusted). `--pooled`
evaluates the union of several sites; `--baseline-predictions` writes the baselines' predictions
as files that a later evaluation takes like any other model's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import model_kinds as kinds
from ..artifacts import RunRecord
from ..console import info
from ..errors import SarcogradeError
from .abstention import DEFAULT_COVERAGE
from .inputs import Inputs, read_inputs, record_inputs
from .metrics import ARGMAX, RULE
from .outputs import write_outputs
from .recalibration import recalibration_split
from .score import score
from .tables import print_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", type=Path, nargs="?",
                        help="predictions.csv from `sarcograde predict`, or RUN/cv_predictions.csv "
                             "of `sarcograde train` (out-of-fold, for a single cohort)")
    parser.add_argument("--predictions", dest="model_predictions", action="append", default=[],
                        metavar="MODEL=CSV",
                        help="a named model's predictions (patient_id, p_high, predicted); repeat "
                             "to compare models on the patients they share. MODEL: any name "
                             f"that can be a file name ({kinds.MODEL_NAME_RULE}; "
                             f"{', '.join(kinds.FORMS)} are sarcograde's own). With --pooled, "
                             "CSV holds {site}, replaced by each site's name")
    parser.add_argument("--manifest", type=Path,
                        help="manifest of the test cohort (grades, clinical data, masks)")
    parser.add_argument("--pooled", action="append", default=[], metavar="SITE=MANIFEST",
                        help="instead of --manifest: evaluate the union of several sites' "
                             "patients (repeat per site), marked pooled, with per-site counts")
    parser.add_argument("--baseline-predictions", type=Path, metavar="DIR",
                        help="with --train-manifest: write the baselines' predictions of every "
                             f"test patient as DIR/{{{','.join(kinds.BASELINES)}}}.csv")
    parser.add_argument("--out", type=Path, required=True, help="output folder EVAL/")
    parser.add_argument("--train-manifest", type=Path,
                        help="manifest of the training cohort: enables the baselines and Table 1")
    parser.add_argument("--run", type=Path,
                        help="training run folder: Youden threshold from its cv_predictions.csv, "
                             "baseline folds from its folds.json")
    parser.add_argument("--model", type=Path, metavar="PKG",
                        help="the model package (`sarcograde export`) that made the predictions: "
                             "its graded model's metrics at the package's own threshold")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples of patients for the 95%% CIs (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and CV splits")
    parser.add_argument("--target", default="grade", metavar="COLUMN",
                        help="the outcome: grade (default; low G1 against high G2/G3) or a 0/1 "
                             "column of the manifests (e.g. lung_metastasis), which then names "
                             "the classes in every table and figure")
    parser.add_argument("--coverage", type=float, default=DEFAULT_COVERAGE, metavar="C",
                        help="abstention: the metrics of the share C of patients whose ensemble "
                             "spread (p_high_sd) is lowest (default 0.9)")
    parser.add_argument("--recalibrate", type=int, metavar="N",
                        help="recalibrate each model on N patients (stratified, drawn with "
                             "--seed); calibration before and after on the others")
    parser.add_argument("--sequence", help="mask sequence for the tumour volume (default: the "
                                           "manifest's only sequence)")


def _check_arguments(args) -> None:
    if args.bootstrap < 1:
        raise SarcogradeError("--bootstrap must be at least 1")
    if not 0 < args.coverage <= 1:
        raise SarcogradeError(f"--coverage must be a share in (0, 1], not {args.coverage}")
    if args.run is not None and not args.run.is_dir():
        raise SarcogradeError("run folder not found", path=args.run)
    if args.model is not None and not args.model.exists():
        raise SarcogradeError("model package not found", path=args.model)
    if args.baseline_predictions is not None and args.train_manifest is None:
        raise SarcogradeError("--baseline-predictions needs --train-manifest (the baselines are "
                              "fitted on the training cohort)")


def _config(args, inputs: Inputs) -> dict:
    """run.json's config: the settings and the models' files."""
    config = {"source": inputs.sources[inputs.reference], "bootstrap": args.bootstrap,
              "coverage": args.coverage, "recalibrate": args.recalibrate,
              "seed": args.seed, "sequence": inputs.sequence, "threshold": ARGMAX,
              "threshold_rule": RULE, "ci": "bootstrap percentile, 95%", "target": args.target}
    if not inputs.single:
        config["models"] = inputs.paths
    if inputs.sites is not None:
        config["pooled"] = {site: str(path) for site, path in inputs.sites.items()}
    return config


def run(args) -> int:
    _check_arguments(args)
    inputs = read_inputs(args)
    if args.recalibrate is not None:  # a count the cohort cannot give stops before any output
        recalibration_split(inputs.labels, args.recalibrate, args.seed)
    with RunRecord(args.out, config=_config(args, inputs), inputs=record_inputs(args, inputs),
                   seed=args.seed):
        evaluation = score(args, inputs)
        write_outputs(args.out, evaluation)
    for path in evaluation.baselines.files:
        info(f"wrote baseline predictions {path}")
    y = evaluation.y
    print_summary(evaluation.by_key, inputs.cohort)
    classes = inputs.outcome.classes
    info(f"evaluated {len(y)} patients ({int((y == 0).sum())} {classes[0]}, {int(y.sum())} "
         f"{classes[1]}); wrote {args.out}")
    return 0
