"""Subgroup analysis: every model's metrics with bootstrap CIs within each level of the
categorical clinical columns the manifests hold (sex, site, histology, tumour location, scanner
manufacturer, field strength) and within age bands. A subgroup needs `MIN_PATIENTS` patients,
both classes among them; the others are listed as too small, never scored."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..cohort import is_missing, read_table
from ..formats.evaluation import SUBGROUP_COLUMNS
from ..stats import METRICS, resample_indices
from .inputs import Inputs
from .metrics import ARGMAX, Scored, metric_block

MIN_PATIENTS = 10
SUBGROUP_METRICS = METRICS  # calibration within a subgroup of ten is not meaningful
# manifest column -> the variable's name; `site` is also the pooled evaluation's site
CATEGORICAL = {"sex": "sex", "site": "site", "histology": "histology",
               "primary_site": "tumour location", "location": "tumour location",
               "manufacturer": "scanner manufacturer", "field_strength": "field strength"}
AGE_BANDS = ((0, 50, "<50"), (50, 65, "50-64"), (65, math.inf, ">=65"))  # years, [low, high)


def _age_band(age) -> str | None:
    if age is None or not np.isfinite(float(age)):
        return None
    return next(label for low, high, label in AGE_BANDS if low <= float(age) < high)


def _manifest_rows(inputs: Inputs) -> dict[str, dict]:
    """Every test manifest's row as text by the evaluated patient id (`<site>/<id>` pooled)."""
    manifests = ({None: inputs.test_cohort.path} if inputs.sites is None else inputs.sites)
    rows = {}
    for site, path in manifests.items():
        frame = read_table(path)
        for row in frame.to_dict("records"):
            pid = str(row["patient_id"]).strip()
            rows[pid if site is None else f"{site}/{pid}"] = row
    return rows


def subgroup_values(inputs: Inputs) -> dict[str, list]:
    """variable -> each evaluated patient's level (None: unknown), for the columns present with
    two levels or more."""
    rows = _manifest_rows(inputs)
    patients = inputs.patients
    values: dict[str, list] = {}
    for column, variable in CATEGORICAL.items():
        if column == "sex":
            levels = [pt.clinical.get("sex") for pt in patients]
        elif column == "site":
            levels = [pt.site for pt in patients]
        else:
            cells = [rows.get(pt.patient_id, {}).get(column) for pt in patients]
            levels = [None if is_missing(c) else str(c).strip() for c in cells]
        if any(level is not None for level in levels) and variable not in values:
            values[variable] = levels
    values["age"] = [_age_band(pt.clinical.get("age")) for pt in patients]
    # one level (e.g. the site of a single site's evaluation) is the whole cohort, no subgroup
    return {k: v for k, v in values.items() if len({level for level in v} - {None}) > 1}


def subgroups(inputs: Inputs, models: list[Scored], y: np.ndarray, n_resamples: int,
              seed: int) -> tuple[dict, pd.DataFrame]:
    """metrics.json's `subgroups` and subgroups.csv: per subgroup big enough, every model's
    metrics (the same resamples of the subgroup's patients for every model)."""
    groups, too_small, rows = [], [], []
    for variable, levels in subgroup_values(inputs).items():
        levels = np.array(levels, object)
        for level in sorted({v for v in levels if v is not None}, key=str):
            where = np.flatnonzero(levels == level)
            yg = y[where]
            counts = {"variable": variable, "level": level, "n": len(where),
                      "n_low": int((yg == 0).sum()), "n_high": int(yg.sum())}
            if len(where) < MIN_PATIENTS or yg.all() or not yg.any():
                reason = (f"fewer than {MIN_PATIENTS} patients" if len(where) < MIN_PATIENTS
                          else "one class only")
                too_small.append({**counts, "reason": reason})
                rows.append({**counts, "note": f"too small: {reason}"})
                continue
            indices = resample_indices(len(where), n_resamples, seed)
            blocks = {m.name: metric_block(yg, m.p[where], ARGMAX, indices, SUBGROUP_METRICS)
                      for m in models}
            groups.append({**counts, "models": {name: {k: v for k, v in block.items()
                                                       if k != "confusion"}
                                                for name, block in blocks.items()}})
            for name, block in blocks.items():
                row = {**counts, "model": name}
                for metric in SUBGROUP_METRICS:
                    ci = block[metric].get("ci95") or [None, None]
                    row.update({metric: block[metric]["value"], f"{metric}_ci_low": ci[0],
                                f"{metric}_ci_high": ci[1]})
                rows.append(row)
    summary = {"min_patients": MIN_PATIENTS, "threshold": ARGMAX,
               "age_bands": [label for _, _, label in AGE_BANDS],
               "bootstrap": "percentile 95%, resamples of the subgroup's patients, the same for "
                            "every model", "groups": groups, "too_small": too_small}
    return summary, pd.DataFrame(rows, columns=list(SUBGROUP_COLUMNS))
