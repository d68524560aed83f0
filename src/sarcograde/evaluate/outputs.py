"""Write an evaluation into EVAL/ (docs/artifacts.md): each file atomically, the figures, and no
stale output of an earlier run into the same folder (a stale figure would mislead)."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import save_figure
from ..console import warn
from ..errors import SarcogradeError
from ..formats import evaluation as evaluation_format
from ..formats import predictions as predictions_format
from ..formats.evaluation import (CALIBRATION, CALIBRATION_MODELS, DECISION_FIGURE, KM_PANEL, ROC,
                                  RECALIBRATION_FIGURE, SELECTIVE, SELECTIVE_FIGURE,
                                  SUBGROUPS_FIGURE)
from .figures import (calibration_figure, decision_figure, roc_figure, selective_figure,
                      subgroup_figure)
from .score import Evaluation
from .tables import confusion_rows, model_rows, table2, table2_markdown

COHORT_TABLE = {evaluation_format.COHORT_TABLE_CSV, evaluation_format.COHORT_TABLE_MD}


def _previous_km_figures(out: Path) -> list[Path]:
    """The Kaplan-Meier figures an earlier evaluation into `out` wrote, as its survival.json
    names them: a km_*.png that sarcograde did not write is never removed."""
    try:
        survival = evaluation_format.read_survival(out) or {}
    except SarcogradeError:  # a damaged record names nothing: remove nothing
        return []
    models = survival.get("models")
    names = [entry.get("figure") for entry in models.values()
             if isinstance(entry, dict)] if isinstance(models, dict) else []
    return [out / Path(name).name for name in names if isinstance(name, str)]


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Delete the optional outputs of an earlier run that are not in `keep`."""
    optional = [*_previous_km_figures(out), out / KM_PANEL, out / ROC,
                out / evaluation_format.COHORT_TABLE_CSV, out / evaluation_format.COHORT_TABLE_MD,
                out / CALIBRATION_MODELS, out / SELECTIVE, out / SELECTIVE_FIGURE,
                out / SUBGROUPS_FIGURE, out / RECALIBRATION_FIGURE]
    for path in optional:
        if path.name not in keep:
            path.unlink(missing_ok=True)


def _has_roc(evaluation: Evaluation) -> bool:
    return evaluation.models[0].block["auc"]["value"] is not None


def _has_recalibration(evaluation: Evaluation) -> bool:
    """--recalibrate was given and the first model could be recalibrated."""
    return bool(evaluation.recalibrated) and evaluation.models[0].name in evaluation.recalibrated


def _write_figures(out: Path, evaluation: Evaluation) -> None:
    y, models, cohort = evaluation.y, evaluation.models, evaluation.inputs.cohort
    outcome = evaluation.inputs.outcome
    reference = models[0]
    for name, fig in evaluation.km_figures.items():
        save_figure(fig, out / name)
    if _has_roc(evaluation):
        curves = {m.shown: (m.p, m.block) for m in models}
        save_figure(roc_figure(y, curves, reference.shown, evaluation.indices, cohort, outcome),
                    out / ROC)
    else:
        warn(f"roc.png not drawn: {reference.block['auc']['note']}")
    save_figure(calibration_figure(y, {reference.name: (reference.p, reference.block)},
                                   evaluation.n_bins, cohort, outcome), out / CALIBRATION)
    if len(models) > 1:
        save_figure(calibration_figure(y, {m.name: (m.p, m.block) for m in models},
                                       evaluation.n_bins, cohort, outcome),
                    out / CALIBRATION_MODELS)
    save_figure(decision_figure(evaluation.decision, reference.name, cohort), out / DECISION_FIGURE)
    if len(evaluation.selective):
        save_figure(selective_figure(evaluation.selective, evaluation.coverage, cohort),
                    out / SELECTIVE_FIGURE)
    groups = evaluation.metrics["subgroups"]["groups"]
    if groups:
        overall = {m.name: m.block["auc"]["value"] for m in models}
        save_figure(subgroup_figure(groups, overall, cohort), out / SUBGROUPS_FIGURE)
    if _has_recalibration(evaluation):
        rest, block = evaluation.rest, evaluation.metrics["recalibration"]
        fitted = block["models"][reference.name]
        curves = {f"{reference.name} before": (reference.p[rest], fitted["before"]),
                  f"{reference.name} after": (evaluation.recalibrated[reference.name],
                                              fitted["after"])}
        save_figure(calibration_figure(y[rest], curves, evaluation.n_bins,
                                       f"{cohort} without the {block['n']} recalibration "
                                       "patients", outcome), out / RECALIBRATION_FIGURE)


def write_outputs(out: Path, evaluation: Evaluation) -> None:
    """Every output of the evaluation into `out`; those of an earlier run it does not write go."""
    inputs, metrics = evaluation.inputs, evaluation.metrics
    table = evaluation.baselines.cohort_table
    _remove_stale(out, keep=set(evaluation.km_figures)
                  | ({ROC} if _has_roc(evaluation) else set())
                  | ({CALIBRATION_MODELS} if len(evaluation.models) > 1 else set())
                  | (COHORT_TABLE if table is not None else set())
                  | ({SELECTIVE, SELECTIVE_FIGURE} if len(evaluation.selective) else set())
                  | ({SUBGROUPS_FIGURE} if metrics["subgroups"]["groups"] else set())
                  | ({RECALIBRATION_FIGURE} if _has_recalibration(evaluation) else set()))
    evaluation_format.write_patient_flow(out, inputs.flow)
    evaluation_format.write_metrics(out, metrics)
    evaluation_format.write_confusion(out, confusion_rows(evaluation.confusion))
    evaluation_format.write_baselines(out, model_rows(evaluation.by_key))
    evaluation_format.write_table2(out, table2(metrics["models"]), table2_markdown(
        metrics["models"], metrics["delong"], inputs.cohort))
    evaluation_format.write_delong(out, metrics["delong"])
    evaluation_format.write_baseline_predictions(
        out, [pt.patient_id for pt in inputs.patients], evaluation.y,
        {m.key: m.p for m in evaluation.models})
    evaluation_format.write_survival(out, evaluation.survival)
    evaluation_format.write_decision_curve(out, evaluation.decision)
    if len(evaluation.selective):
        evaluation_format.write_selective(out, evaluation.selective)
    evaluation_format.write_subgroups(out, evaluation.subgroups)
    for path, frame in evaluation.baselines.files.items():
        predictions_format.write_predictions(path, frame)
    _write_figures(out, evaluation)
    if table is not None:
        evaluation_format.write_cohort_table(out, *table)
