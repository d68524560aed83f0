"""The parts of both pages on clinical utility, as plain dicts for templates/utility.html.j2:
abstention by the ensemble's spread (metrics.json's `abstention`, selective_prediction.png)."""

from __future__ import annotations

from ..formats.evaluation import SELECTIVE_FIGURE
from . import sections as s
from .format import format_number
from .inputs import lookup

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
