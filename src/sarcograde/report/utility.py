"""The parts of both pages on clinical utility, as plain dicts for templates/utility.html.j2:
abstention by the ensemble's spread (metrics.json's `abstention`, selective_prediction.png) and
the subgroups (metrics.json's `subgroups`, subgroups.png) and the recalibration for a new site
(metrics.json's `recalibration`, recalibration.png)."""

from __future__ import annotations

from ..formats.evaluation import RECALIBRATION_FIGURE, SELECTIVE_FIGURE, SUBGROUPS_FIGURE
from . import sections as s
from .format import format_number
from .inputs import lookup

METHODS_SENTENCE = ("Clinical utility was assessed by decision curves (net benefit of treating the "
                    "patients above threshold probabilities 0.05 to 0.95, with bootstrap bands, "
                    "against treating all and none), by selective prediction on the ensemble's "
                    "spread, and by subgroup metrics for subgroups of at least ten patients of "
                    "both classes.")
RECALIBRATION_METRICS = (("brier", "Brier"), ("calibration_slope", "Calibration slope"),
                         ("calibration_intercept", "Calibration intercept"))
ABSTENTION_METRICS = (("auc", "AUC"), ("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"),
                      ("specificity", "Specificity"))


def abstention(site: str | None, metrics: dict, figures: dict[str, str]) -> dict:
    """Each model's metrics on the share of patients kept, beside its AUC on all of them."""
    where = f" ({site})" if site else ""
    block = metrics.get("abstention")
    if not isinstance(block, dict) or not isinstance(block.get("models"), dict):
        return {"not_run": f"abstention{where}: metrics.json has no 'abstention' (rerun "
                           "evaluate)."}
    all_patients = metrics.get("models") or {"DL": metrics}
    rows, notes = [], []
    for model, kept in block["models"].items():
        if not isinstance(kept, dict) or kept.get("note"):
            notes.append(f"{model}: {lookup(kept, 'note', default='no entry')}")
            continue
        rows.append([model, s.num(f"{kept.get('n_kept', 'n/a')} of {kept.get('n', 'n/a')}",
                                  data_site=site, data_model=model, data_metric="n_kept"),
                     s.num(format_number(kept.get("max_spread"), 3))]
                    + [s.estimate(kept.get(key), data_site=site, data_model=model,
                                  data_metric=f"abstention_{key}")
                       for key, _ in ABSTENTION_METRICS]
                    + [s.estimate(lookup(all_patients, model, "auc"))])
    coverage = block.get("coverage")
    share = f"{float(coverage):.0%}" if isinstance(coverage, (int, float)) else "n/a"
    suffix = f"-{site}" if site else ""
    return {"not_run": None, "coverage": share, "score": block.get("score"), "notes": notes,
            "table": s.table(["Model", "Patients kept", "Largest spread kept",
                              *[f"{label} (kept)" for _, label in ABSTENTION_METRICS],
                              "AUC (all patients)"], rows, wide=True,
                             id=f"abstention-table{suffix}") if rows else None,
            "figure": s.figure(figures.get(SELECTIVE_FIGURE),
                               f"Selective prediction{where}: AUC and accuracy of the patients "
                               "kept, lowest ensemble spread first.", f"selective prediction"
                               f"{where}")}


def subgroups(site: str | None, metrics: dict, figures: dict[str, str]) -> dict:
    """One row per subgroup scored: its patients, then each model's AUC with its CI; the
    subgroups too small to score listed below."""
    where = f" ({site})" if site else ""
    block = metrics.get("subgroups")
    if not isinstance(block, dict) or not isinstance(block.get("groups"), list):
        return {"not_run": f"subgroups{where}: metrics.json has no 'subgroups' (rerun "
                           "evaluate)."}
    groups = [g for g in block["groups"] if isinstance(g, dict)]
    models = list(dict.fromkeys(m for g in groups for m in (g.get("models") or {})))
    rows = [[f"{g.get('variable')}: {g.get('level')}",
             s.num(f"{g.get('n')} ({g.get('n_low')} / {g.get('n_high')})")]
            + [s.estimate(lookup(g, "models", model, "auc"), data_site=site, data_model=model,
                          data_metric=f"subgroup_auc:{g.get('variable')}={g.get('level')}")
               for model in models]
            for g in groups]
    small = [f"{g.get('variable')}: {g.get('level')} ({g.get('n')} patients, {g.get('n_high')} "
             f"high; {g.get('reason')})" for g in block.get("too_small") or []
             if isinstance(g, dict)]
    suffix = f"-{site}" if site else ""
    return {"not_run": None, "min_patients": block.get("min_patients", "n/a"),
            "too_small": "; ".join(small),
            "table": s.table(["Subgroup", "Patients (low / high)",
                              *[f"AUC {model}" for model in models]], rows, wide=True,
                             id=f"subgroup-table{suffix}") if rows else None,
            "figure": s.figure(figures.get(SUBGROUPS_FIGURE),
                               f"AUC by subgroup{where}, every model with its 95% bootstrap "
                               "interval.", f"subgroups{where}")}


def recalibration(site: str | None, metrics: dict, figures: dict[str, str]) -> dict:
    """Each model's fitted recalibration and its calibration before and after, on the patients
    that did not fit it."""
    where = f" ({site})" if site else ""
    block = metrics.get("recalibration")
    if not isinstance(block, dict) or not isinstance(block.get("models"), dict):
        return {"not_run": f"recalibration{where}: evaluate was not given --recalibrate N."}
    rows, notes = [], []
    for model, fitted in block["models"].items():
        if not isinstance(fitted, dict) or fitted.get("note"):
            notes.append(f"{model}: {lookup(fitted, 'note', default='no entry')}")
            continue
        rows.append([model, str(fitted.get("fit", "")),
                     s.num(format_number(fitted.get("intercept"), 3)),
                     s.num(format_number(fitted.get("slope"), 3))]
                    + [s.estimate(lookup(fitted, when, key), data_site=site, data_model=model,
                                  data_metric=f"recalibration_{when}_{key}")
                       for key, _ in RECALIBRATION_METRICS for when in ("before", "after")])
    suffix = f"-{site}" if site else ""
    return {"not_run": None, "n": block.get("n"), "n_evaluated": block.get("n_evaluated"),
            "rule": block.get("rule"), "notes": notes,
            "table": s.table(["Model", "Fit", "Intercept", "Slope",
                              *[f"{label} {when}" for _, label in RECALIBRATION_METRICS
                                for when in ("before", "after")]], rows, wide=True,
                             id=f"recalibration-table{suffix}") if rows else None,
            "figure": s.figure(figures.get(RECALIBRATION_FIGURE),
                               f"Calibration of the first model before and after the "
                               f"recalibration{where}, on the patients that did not fit it.",
                               f"recalibration{where}")}
