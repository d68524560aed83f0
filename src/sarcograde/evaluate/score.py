"""Score the matched predictions: every model's metrics on the same bootstrap resamples of
patients, the Youden threshold of the training run, the baselines, the pairwise DeLong tests,
the decision curves, the abstention, the subgroups, the recalibration and the survival analysis.
`Evaluation` holds everything evaluate writes, computed before any file is written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..cohort import Patient
from ..console import warn
from ..stats import resample_indices
from .abstention import abstention
from .baselines import Baselines, score_baselines
from .decision import decision_curves, decision_summary
from .inputs import Inputs
from .metrics import (ARGMAX, RULE, Scored, delong_matrix, metric_block,
                      package_threshold_block, single_class_resamples, youden_block)
from .recalibration import recalibration, recalibration_split
from .subgroups import subgroups
from .survival import groupings, survival_analysis

# A lone predictions file's key in baselines.csv, baseline_predictions.csv and km_dl.png, which
# the report reads: the outputs of an evaluation of one model keep it.
SINGLE_KEY = "dl"
DELONG_ADJUSTMENT = ("Bonferroni over the pairs tested (p_adjusted = p x pairs, capped at 1); "
                     "paired DeLong test, two-sided")


@dataclass
class Evaluation:
    inputs: Inputs
    y: np.ndarray              # the patients' labels (1: high grade)
    indices: np.ndarray        # the bootstrap resamples, shared by every model
    n_bins: int                # of the reliability diagrams
    models: list[Scored]       # the prediction files in the order given, then the baselines
    metrics: dict              # metrics.json
    confusion: list[tuple]     # confusion.csv: (model, rule, threshold, counts)
    baselines: Baselines
    survival: dict             # survival.json
    km_figures: dict           # file name -> Kaplan-Meier figure
    decision: pd.DataFrame     # decision_curve.csv
    selective: pd.DataFrame    # selective_prediction.csv (empty: no model has a spread)
    coverage: float            # the share kept of the abstention's metrics
    subgroups: pd.DataFrame    # subgroups.csv
    # --recalibrate: each model's recalibrated p of the patients not used to fit it (`rest`)
    recalibrated: dict[str, np.ndarray] | None = None
    rest: np.ndarray | None = None

    @property
    def by_key(self) -> dict[str, dict]:
        """Each model's block by its key: baselines.csv's rows and the console summary."""
        return {m.key: m.block for m in self.models}


def _score_file(name: str, inputs: Inputs, y: np.ndarray, indices: np.ndarray) -> Scored:
    p = inputs.probabilities[name]
    block = {"label": name, "n": len(y), "threshold": ARGMAX,
             **metric_block(y, p, ARGMAX, indices)}
    return Scored(name=name, key=SINGLE_KEY if inputs.single else name, shown=name, p=p,
                  block=block)


def _reference_metrics(args, inputs: Inputs, reference: Scored, y: np.ndarray,
                       indices: np.ndarray, n_bins: int) -> dict:
    """metrics.json's top level: the reference model's metrics and how they were computed."""
    return {
        "model": reference.name, "predictions": str(inputs.shown[reference.name]),
        "source": inputs.sources[reference.name],
        "target": inputs.outcome.target, "classes": list(inputs.outcome.classes),
        "n": len(y), "n_low": int((y == 0).sum()), "n_high": int(y.sum()),
        "threshold": ARGMAX, "threshold_rule": RULE,
        **{k: v for k, v in reference.block.items() if k not in ("label", "n", "threshold")},
        "bootstrap": {"resamples": args.bootstrap, "seed": args.seed,
                      "interval": "percentile, 95%", "unit": "patient",
                      "skipped_single_class": single_class_resamples(y, indices)},
        "calibration": {"bins": n_bins, "slope": "logistic fit y ~ a + b logit(p)",
                        "intercept": "calibration-in-the-large, y ~ a + offset(logit(p))"},
        "youden": ({"note": "not computed: no --run given"} if args.run is None
                   else youden_block(args.run, inputs.patients, y, reference.p, indices)),
    }


def _site_counts(patients: list[Patient], y: np.ndarray) -> dict[str, dict[str, int]]:
    """Included patients per site: n, n_low, n_high (the pooled evaluation's composition)."""
    sites = np.array([pt.site for pt in patients], object)
    counts = {}
    for site in dict.fromkeys(sites.tolist()):
        here = y[sites == site]
        counts[site] = {"n": len(here), "n_low": int((here == 0).sum()),
                        "n_high": int(here.sum())}
    return counts


def _comparison(inputs: Inputs, models: list[Scored], y: np.ndarray) -> dict:
    """metrics.json's comparison: every model by its name, the DeLong matrix, the sites."""
    comparison = {"models": {m.name: {"n": m.block["n"], **{
        k: v for k, v in m.block.items() if k not in ("label", "n", "delong_vs_dl")}}
        for m in models}}
    for name in inputs.paths:
        comparison["models"][name].update(source=inputs.sources[name],
                                          predictions=str(inputs.shown[name]))
    comparison["delong"] = delong_matrix(y, {m.name: m.p for m in models})
    comparison["delong_adjustment"] = DELONG_ADJUSTMENT
    comparison["pooled"] = inputs.sites is not None
    if inputs.sites is not None:
        comparison["sites"] = _site_counts(inputs.patients, y)
    return comparison


def _confusion(models: list[Scored]) -> list[tuple]:
    return [(m.shown, "argmax", ARGMAX, m.block["confusion"]) for m in models]


def score(args, inputs: Inputs) -> Evaluation:
    y = inputs.labels
    indices = resample_indices(len(y), args.bootstrap, args.seed)
    n_bins = 10 if len(y) >= 100 else 5
    models = [_score_file(name, inputs, y, indices) for name in inputs.paths]
    reference = models[0]
    metrics = _reference_metrics(args, inputs, reference, y, indices, n_bins)
    confusion = _confusion(models)
    youden = metrics["youden"]
    if "threshold" in youden:
        confusion.insert(1, (reference.name, "youden", youden["threshold"], youden["confusion"]))
    if args.model is not None:
        from ..formats.package import read_package

        block = package_threshold_block(read_package(args.model), {m.name: m for m in models},
                                        y, indices)
        metrics["operating_threshold"] = block
        confusion.insert(1, (block["model"], "package", block["threshold"], block["confusion"]))
    baselines = score_baselines(args, inputs, y, indices, reference.p)
    metrics["baselines"] = baselines.block
    models += baselines.models
    confusion += _confusion(baselines.models)
    metrics.update(_comparison(inputs, models, y))
    decision = decision_curves(y, models, indices)
    metrics["decision_curve"] = decision_summary(decision)
    metrics["abstention"], selective = abstention(inputs, models, y, indices, args.coverage)
    metrics["subgroups"], subgroup_rows = subgroups(inputs, models, y, args.bootstrap, args.seed)
    after, rest = None, None
    if args.recalibrate is not None:
        split = recalibration_split(y, args.recalibrate, args.seed)
        rest = split[1]
        metrics["recalibration"], after = recalibration(models, y, inputs.patients, split,
                                                        args.seed, args.bootstrap)
    survival, km_figures = survival_analysis(inputs.patients, groupings(models, y, inputs.outcome))
    if "note" in survival:
        warn(f"survival: {survival['note']}")
    return Evaluation(inputs=inputs, y=y, indices=indices, n_bins=n_bins, models=models,
                      metrics=metrics, confusion=confusion, baselines=baselines,
                      survival=survival, km_figures=km_figures, decision=decision,
                      selective=selective, coverage=args.coverage, subgroups=subgroup_rows,
                      recalibrated=after, rest=rest)
