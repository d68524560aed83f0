"""Overall survival in an evaluation: Kaplan-Meier curves and log-rank tests of the patients
grouped by each model's predicted grade and by the true grade, Bonferroni-adjusted over the tests
made, one figure per grouping and the panel of them all (the paper's Fig. 3)."""

from __future__ import annotations

import numpy as np

from ..cohort import Patient
from ..formats.evaluation import KM, KM_PANEL
from ..outcome import GRADE_OUTCOME, Outcome
from ..stats import classify
from ..survival import (bonferroni, kaplan_meier, logrank_test, plot_kaplan_meier,
                        plot_kaplan_meier_panel)
from .metrics import Scored, number

GRADE_GROUPS = ("low (G1)", "high (G2/G3)")


def groupings(models: list[Scored], y: np.ndarray, outcome: Outcome = GRADE_OUTCOME
              ) -> dict[str, tuple[str, np.ndarray, tuple[str, str]]]:
    """Each model's predicted groups (by the model's key), then the true outcome's (key
    "grade", whatever the target: the file km_grade.png keeps its name)."""
    predicted = tuple(f"predicted {word}" for word in outcome.short)
    what = "grade" if outcome.is_grade else outcome.title
    groups = {m.key: (f"{m.block['label']}: predicted {what}",
                      np.where(classify(m.p) == 1, *predicted[::-1]), predicted)
              for m in models}
    true = GRADE_GROUPS if outcome.is_grade else outcome.short
    groups["grade"] = (f"True {outcome.title}", np.where(y == 1, *true[::-1]), true)
    return groups


def survival_analysis(patients: list[Patient],
                      groupings: dict[str, tuple[str, np.ndarray, tuple[str, str]]]
                      ) -> tuple[dict, dict]:
    """Kaplan-Meier and log-rank per grouping (key -> (title, group of each patient, group order)).

    Returns survival.json's content and the KM figures by file name.
    """
    known = np.array([p.clinical.get("os_months") is not None
                      and p.clinical.get("os_event") is not None for p in patients], bool)
    result = {"time_unit": "months", "n": int(known.sum()),
              "excluded_no_survival_data": [p.patient_id for p, k in zip(patients, known) if not k]}
    if not known.any():
        result["note"] = "not computable: no patient has os_months and os_event"
        return result, {}
    time = np.array([p.clinical["os_months"] for p, k in zip(patients, known) if k], float)
    event = np.array([p.clinical["os_event"] for p, k in zip(patients, known) if k], int)
    result["deaths"] = int(event.sum())
    models, curves, pvalues = {}, {}, {}
    for key, (title, groups, order) in groupings.items():
        groups = np.asarray(groups)[known]
        curves[key] = {g: kaplan_meier(time[groups == g], event[groups == g])
                       for g in order if np.any(groups == g)}
        entry = {"title": title, "figure": KM.format(key=key),
                 "groups": {g: {"n": km.n, "deaths": int(km.events.sum()),
                                "median_months": number(km.median)}
                            for g, km in curves[key].items()}}
        try:
            test = logrank_test(time, event, groups)
            entry["logrank"] = {"chi2": test.statistic, "df": test.df, "p": test.p}
            pvalues[key] = test.p
        except ValueError as exc:
            entry["logrank"] = {"note": f"not computable: {exc}"}
        models[key] = entry
    adjusted = dict(zip(pvalues, bonferroni(list(pvalues.values()))))
    figures, panels = {}, []
    for key, entry in models.items():
        if key in adjusted:
            entry["logrank"]["p_bonferroni"] = float(adjusted[key])
            subtitle = (f"log-rank p = {entry['logrank']['p']:.3g} "
                        f"(Bonferroni over {len(adjusted)}: {adjusted[key]:.3g})")
        else:
            subtitle = "log-rank " + entry["logrank"]["note"]
        figures[entry["figure"]] = plot_kaplan_meier(curves[key], entry["title"], subtitle)
        panels.append((curves[key], entry["title"], subtitle))
    figures[KM_PANEL] = plot_kaplan_meier_panel(panels)  # Fig. 3: every model and the true grade
    result["correction"] = f"Bonferroni over the {len(adjusted)} log-rank tests made"
    result["models"] = models
    return result, figures
