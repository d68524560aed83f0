"""The context of the single-evaluation page (`sarcograde report EVAL`): plain dicts for
templates/report.html.j2, every number taken from the artifacts that inputs.py read."""

from __future__ import annotations

from typing import Any

from ..formats.evaluation import CALIBRATION, DECISION_FIGURE, ROC
from . import sections as s
from . import utility
from .format import format_cell, format_list, format_number, format_p, pretty_name
from .inputs import ReportInputs, lookup
from .methods import bootstrap_count, methods_paragraph
from ..outcome import outcome

# Below this many test patients the report warns that the confidence intervals are wide.
SMALL_COHORT = 100
CLASSIFICATION_METRICS = (("auc", "AUC"), ("precision", "Precision"),
                          ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
                          ("f1", "F1"), ("accuracy", "Accuracy"), ("net_benefit", "Net benefit"))
CALIBRATION_METRICS = (("brier", "Brier score"), ("calibration_slope", "Calibration slope"),
                       ("calibration_intercept", "Calibration intercept"))
SUMMARY_METRICS = (("auc", "AUC"), ("sensitivity", "Sensitivity"),
                   ("specificity", "Specificity"), ("accuracy", "Accuracy"))
CONFUSION_HEADER = {"model": "Model", "rule": "Threshold rule", "threshold": "Threshold",
                    "tn": "TN", "fp": "FP", "fn": "FN", "tp": "TP"}
ROC_CAPTION = "ROC curves of the evaluated patients, with the 95% bootstrap band of the DL model."
CALIBRATION_CAPTION = "Reliability diagram: observed share of high grade per bin of p_high."
DECISION_CAPTION = ("Decision curves: net benefit of treating the patients with p_high above the "
                    "threshold, against treating all and none; 95% bootstrap band of the first "
                    "model.")


TOC = (("flow", "Patient flow"), ("cohort", "Cohorts (Table 1)"), ("performance", "Performance"),
       ("abstention", "Abstention"), ("subgroups", "Subgroups"),
       ("recalibration", "Recalibration"),
       ("survival", "Overall survival"), ("attention", "Attention maps"), ("training", "Training"),
       ("methods", "Methods (generated from the configuration)"),
       ("provenance", "Configuration and provenance"))
TITLE = "Soft-tissue sarcoma grading: external validation report"


def context(inputs: ReportInputs) -> dict[str, Any]:
    m = inputs.metrics
    evaluation = inputs.evaluation
    n = m.get("n")
    target = outcome(m.get("target"))
    return {
        "toc": TOC, "synthetic": inputs.synthetic,
        "subtitle": target.subtitle, "classes": target.classes,
        "small_cohort": isinstance(n, int) and n < SMALL_COHORT,
        "n": n if n is not None else "n/a", "n_low": m.get("n_low", "n/a"),
        "n_high": m.get("n_high", "n/a"),
        "cards": [s.summary_card(key, label, m.get(key)) for key, label in SUMMARY_METRICS],
        "flow": s.flow(evaluation.flow),
        "cohort": s.cohort(evaluation.cohort),
        "performance": performance(inputs),
        "abstention": utility.abstention(None, m, evaluation.figures),
        "subgroups": utility.subgroups(None, m, evaluation.figures),
        "recalibration": utility.recalibration(None, m, evaluation.figures),
        "survival": s.survival(evaluation.survival, evaluation.figures),
        "attention": s.attention(inputs.attention) if inputs.attention else None,
        "training": s.training(inputs.run) if inputs.run else None,
        "methods": methods_paragraph(inputs),
        "has_run": inputs.run is not None,
        "provenance": s.provenance(inputs.records, (inputs.run and inputs.run.config)
                                   or lookup(evaluation.record, "config")),
        "source_folder": str(inputs.eval_dir),
    }


def model_rows(metrics: dict) -> list[tuple[str, str, dict]]:
    """(key, label, metrics block) of the DL model and every baseline evaluate tried."""
    rows = [("dl", str(metrics.get("model") or "DL model"), metrics)]
    for key, block in (lookup(metrics, "baselines", "models") or {}).items():
        if isinstance(block, dict):
            rows.append((key, str(block.get("label", pretty_name(key))), block))
    return rows


def notes(models: list[tuple[str, str, dict]], names: list[str]) -> list[str]:
    """A footnote for every value that could not be computed, saying why."""
    out = []
    for _, label, block in models:
        if block.get("note"):
            out.append(f"{label}: {block['note']}")
        out += [f"{label}, {name}: {note}" for name in names
                if (note := lookup(block, name, "note"))]
    return out


def performance(inputs: ReportInputs) -> dict:
    m = inputs.metrics
    models = model_rows(m)
    baselines = m.get("baselines") if isinstance(m.get("baselines"), dict) else {}
    has_baselines = len(models) > 1
    names = [name for name, _ in CLASSIFICATION_METRICS]
    header = ["Model"] + [label for _, label in CLASSIFICATION_METRICS]
    if has_baselines:
        header.append("DeLong p vs DL")
    rows = []
    for key, label, block in models:
        row = [label] + [s.estimate(block.get(name), data_model=key, data_metric=name)
                         for name in names]
        if has_baselines:
            p = "reference" if key == "dl" else format_p(lookup(block, "delong_vs_dl", "p"))
            row.append(s.num(p, data_model=key, data_metric="delong_p"))
        rows.append(row)
    primary_first = ["primary"] + [None] * (len(rows) - 1)
    calibration_names = [name for name, _ in CALIBRATION_METRICS]
    figures = [f for f in (s.figure(inputs.evaluation.figures.get(ROC), ROC_CAPTION, "roc"),
                           s.figure(inputs.evaluation.figures.get(DECISION_FIGURE),
                                    DECISION_CAPTION, "decision curves"),
                           s.figure(inputs.evaluation.figures.get(CALIBRATION),
                                    CALIBRATION_CAPTION, "calibration")) if f]
    return {
        "source": m.get("source"), "threshold": format_number(m.get("threshold")),
        "bootstrap": bootstrap_count(m, inputs.evaluation.record),
        "metrics_table": s.table(header, rows, wide=True, id="metrics-table",
                                 row_classes=primary_first),
        "metrics_notes": notes(models, names),
        "baselines_note": baseline_note(baselines) if has_baselines else None,
        "baselines_not_run": None if has_baselines else (
            baselines.get("note") or "evaluate was not given --train-manifest."),
        "calibration_table": s.table(
            ["Model"] + [label for _, label in CALIBRATION_METRICS],
            [[label] + [s.estimate(block.get(name), data_model=key, data_metric=name)
                        for name in calibration_names] for key, label, block in models],
            id="calibration-table", row_classes=primary_first),
        "calibration_notes": notes(models, calibration_names),
        "youden": youden(m),
        "confusion": confusion(inputs.evaluation.confusion),
        "figures": figures,
    }


def baseline_note(baselines: dict) -> str:
    """How the baselines were fitted, from metrics.json's baselines block."""
    text = [f"Baselines: {baselines['model']}" if baselines.get("model") else "Baselines"]
    features = baselines.get("features")
    if isinstance(features, dict):
        text.append("features " + "; ".join(f"{pretty_name(k)}: {format_list(v)}"
                                            for k, v in features.items()))
    if source := lookup(baselines, "cv", "source"):
        text.append(f"cross-validation: {source}")
    text += [str(n) for n in baselines.get("imputation") or []]
    text += [str(n) for n in baselines.get("dropped_features") or []]
    text.append("DeLong p: paired two-sided test of each baseline's AUC against the DL model's")
    return "; ".join(text) + "."


def youden(metrics: dict) -> dict:
    block = metrics.get("youden")
    if not isinstance(block, dict) or block.get("threshold") is None:
        reason = block.get("note") if isinstance(block, dict) else None
        return {"not_run": f"Youden threshold: {reason or 'evaluate was not given --run'} (it "
                           "needs the training run's out-of-fold predictions)."}
    threshold = format_number(block["threshold"], 3)
    argmax = format_number(metrics.get("threshold"))
    rows = [[label, s.estimate(block.get(k), data_model="youden", data_metric=k),
             s.estimate(metrics.get(k))] for k, label in CLASSIFICATION_METRICS if k in block]
    return {"not_run": None, "threshold": threshold, "argmax": argmax,
            "caution": block.get("caution"),
            "n_training": block.get("n_training"),
            "table": s.table(["Metric", f"Youden ({threshold})", f"Argmax ({argmax})"], rows,
                             id="youden-table")}


def confusion(frame) -> dict | None:
    if frame is None:
        return None
    text_columns = ("model", "rule", "threshold")
    rows = [[format_cell(v) if c in text_columns else s.num(format_cell(v))
             for c, v in zip(frame.columns, row)] for row in frame.itertuples(index=False)]
    return s.table([CONFUSION_HEADER.get(c, c) for c in frame.columns], rows,
                   id="confusion-table")
