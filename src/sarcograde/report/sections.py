"""The parts both pages share, as plain dicts for the templates: tables, figures, patient flow,
Table 1, survival, attention gallery, training curves and provenance.

A table is {"id", "wide", "header": [...], "rows": [{"cls", "cells": [...]}]}; a cell is a
string or {"text", "ci", "cls", "title", "attrs"} (attrs become `data-*` attributes). Nothing
here reads a file (inputs.py does) or writes markup (the templates do).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import pandas as pd

from .format import (format_cell, format_ci, format_estimate, format_list, format_number,
                     format_p, grade_word, pretty_name)
from .inputs import AttentionFolder, CohortTable, TrainingRun, lookup

# How many attention montages the gallery shows per kind of case.
GALLERY_PER_KIND = 2


def attrs(**values: Any) -> dict[str, str]:
    """Keyword arguments as HTML attributes: data_model -> data-model; None left out."""
    return {key.replace("_", "-"): str(v) for key, v in values.items() if v is not None}


def cell(text: Any, *, cls: str | None = None, title: str | None = None, ci: str = "",
         **data: Any) -> dict:
    return {"text": "" if text is None else str(text), "ci": ci, "cls": cls, "title": title,
            "attrs": attrs(**data)}


def num(text: Any, **data: Any) -> dict:
    return cell(text, cls="num", **data)


def estimate(block: Any, **data: Any) -> dict:
    """A metrics.json estimate as "0.75" with "(0.66-0.83)" beside it; its note as a tooltip."""
    value, _, ci = format_estimate(block).partition(" ")
    note = block.get("note") if isinstance(block, dict) else None
    return cell(value, cls="num", title=note, ci=ci, **data)


def p_cell(p: Any, **data: Any) -> dict:
    return num(format_p(p), **data)


def table(header: Iterable[Any], rows: list[list[Any]], *, id: str | None = None,
          wide: bool = False, row_classes: list[str | None] | None = None) -> dict:
    return {"id": id, "wide": wide, "header": [str(h) for h in header],
            "rows": [{"cls": row_classes[i] if row_classes else None,
                      "cells": [c if isinstance(c, dict) else ("" if c is None else str(c))
                                for c in row]} for i, row in enumerate(rows)]}


def figure(uri: str | None, caption: str, alt: str, **data: Any) -> dict | None:
    return None if uri is None else {"uri": uri, "caption": caption, "alt": alt,
                                     "attrs": attrs(**data)}


def summary_card(key: str, label: str, block: Any) -> dict:
    value = lookup(block, "value") if isinstance(block, dict) else block
    ci = format_ci(lookup(block, "ci95"))
    return {"metric": key, "label": label, "value": format_number(value),
            "detail": f"95% CI {ci[1:-1]}" if ci else ""}


# --------------------------------------------------------------------------------------------


def flow(data: dict | None) -> dict | None:
    """patient_flow.json: counts, and the excluded patients grouped by reason."""
    if data is None:
        return None
    excluded = data.get("excluded", [])
    reasons: dict[str, list[str]] = {}
    for entry in excluded:
        missing = entry.get("missing_from")  # the models whose predictions lack the patient
        reasons.setdefault(str(entry.get("reason", "no reason given")), []).append(
            str(entry.get("patient_id", ""))
            + (f" (missing from {format_list(missing)})" if missing else ""))
    return {"counts": [f"{data[key]} {what}" for key, what in
                       (("n_predictions", "patients predicted"),
                        ("n_manifest", "in the test manifest")) if key in data],
            "n_included": data.get("n_included", len(data.get("included", []))),
            "n_excluded": len(excluded), "comparison": data.get("comparison"),
            "reasons": [{"reason": reason, "n": len(ids), "patients": ", ".join(ids)}
                        for reason, ids in reasons.items()]}


def cohort(data: CohortTable | None, *, id: str = "cohort-table") -> dict | None:
    if data is None:
        return None
    return {"table": table(data.header, [[format_cell(v) for v in row] for row in data.rows],
                           wide=True, id=id), "notes": data.notes}


def survival(data: dict | None, figures: dict[str, str], *, site: str | None = None) -> dict:
    """survival.json as a table (one block of rows per stratification) and its KM figures."""
    if data is None:
        return {"not_run": "survival analysis: survival.json is missing."}
    if not data.get("models"):
        return {"not_run": f"survival analysis: {data.get('note', 'no model was stratified')}."}
    rows, classes = [], []
    for key, entry in data["models"].items():
        logrank = entry.get("logrank") or {}
        p_cells = [num(format_p(logrank.get("p")) if "p" in logrank
                       else logrank.get("note", "n/a"), data_site=site, data_model=key,
                       data_metric="logrank_p"),
                   p_cell(logrank.get("p_bonferroni"), data_site=site, data_model=key,
                          data_metric="p_bonferroni")]
        for i, (group, g) in enumerate((entry.get("groups") or {}).items()):
            median = g.get("median_months")
            rows.append([entry.get("title", pretty_name(key)) if i == 0 else "", group,
                         num(g.get("n", "")), num(g.get("deaths", "")),
                         num(format_number(median, 1) if median is not None else "not reached"),
                         *(p_cells if i == 0 else ["", ""])])
            classes.append("group-start" if i == 0 else None)
    suffix = f"-{site}" if site else ""
    return {
        "not_run": None, "panel": False, "n": data.get("n", "n/a"), "deaths": data.get("deaths", "n/a"),
        "correction": data.get("correction", "Bonferroni"),
        "table": table(["Stratified by", "Group", "Patients", "Deaths",
                        f"Median OS ({data.get('time_unit', 'months')})", "Log-rank p",
                        "Bonferroni p"], rows, wide=True, id=f"survival-table{suffix}",
                       row_classes=classes),
        "left_out": ", ".join(map(str, data.get("excluded_no_survival_data") or [])),
        "figures": [f for key, entry in data["models"].items() if (f := figure(
            figures.get(entry.get("figure", "")),
            f"Kaplan-Meier estimate of overall survival: {entry.get('title', key)}.",
            f"Kaplan-Meier {entry.get('title', key)}"))]}


def attention(data: AttentionFolder, *, site: str | None = None,
              model: str | None = None, words: tuple[str, str] = ("low", "high")) -> dict:
    """The gallery (best and worst cases of each kind) and the table of every patient; `words`
    name the predicted and true classes 0 and 1."""
    frame = data.frame
    off = frame["off_tumour"].astype(str).str.lower().isin(("true", "1", "yes"))
    frame = frame.assign(off_tumour=off, on_tumour=frame["inside"] + frame["ring"])
    frame = frame.assign(known=frame["label"].notna())
    frame = frame.assign(correct=frame["known"] & (frame["predicted"] == frame["label"]))

    picks: dict[str, list[str]] = {}

    def pick(rows: pd.DataFrame, kind: str) -> None:
        for pid in rows["patient_id"].head(GALLERY_PER_KIND):
            picks.setdefault(pid, []).append(kind)

    by_on_tumour = frame.sort_values("on_tumour", ascending=False)
    pick(by_on_tumour[by_on_tumour["correct"]], "correct")
    pick(by_on_tumour[by_on_tumour["known"] & ~by_on_tumour["correct"]], "wrong")
    pick(by_on_tumour, "highest attention on tumour")
    pick(by_on_tumour[::-1], "lowest attention on tumour")
    pick(by_on_tumour[by_on_tumour["off_tumour"]][::-1], "off tumour")

    cards = []
    by_id = frame.set_index("patient_id")
    for pid, kinds in picks.items():
        row = by_id.loc[pid]
        # Whatever a montage was picked for, its prediction and flag are always shown.
        status = (["correct" if row["correct"] else "wrong"] if pd.notna(row["label"]) else [])
        status += ["off tumour"] if row["off_tumour"] else []
        kinds = list(dict.fromkeys(status + kinds))
        cards.append({
            "patient": pid, "uri": data.montage(pid), "kinds": ";".join(kinds),
            "tags": [{"text": k, "bad": k in ("wrong", "off tumour")} for k in kinds],
            "text": (f"p_high {format_number(row['p_high'])}, predicted "
                     f"{grade_word(row['predicted'], words)}, true "
                     f"{grade_word(row['label'], words)}; "
                     f"attention inside {format_number(row['inside'])}, ring "
                     f"{format_number(row['ring'])}, elsewhere {format_number(row['elsewhere'])}")})
    rows = [[r.patient_id, num(r.n_slices), num(format_number(r.p_high)),
             grade_word(r.predicted, words), grade_word(r.label, words),
             num(format_number(r.inside), data_site=site, data_model=model,
                 data_patient=r.patient_id, data_metric="inside"),
             num(format_number(r.ring)), num(format_number(r.elsewhere)),
             cell("off tumour", cls="flag") if r.off_tumour else cell("ok", cls="ok")]
            for r in frame.itertuples(index=False)]
    suffix = "-".join(["", *(x for x in (site, model) if x)])
    return {"n": len(frame), "n_off": int(frame["off_tumour"].sum()), "cards": cards,
            "site": site, "model": model,
            "table": table(["Patient", "Slices", "p_high", "Predicted", "True", "Inside", "Ring",
                            "Elsewhere", "Flag"], rows, wide=True, id=f"attention-table{suffix}",
                           row_classes=["wrong" if known and not correct else None
                                        for known, correct in zip(frame["known"],
                                                                  frame["correct"])])}


def training(run: TrainingRun, *, model: str | None = None) -> dict:
    """One row per fold model: epochs run, best epoch and its validation loss and AUC."""
    rows, figures = [], []
    for fold in run.histories:
        if fold.history is not None:
            history = fold.history
            best = history.loc[history["val_loss"].idxmin()]
            rows.append([fold.name, num(len(history)),
                         num(int(best["epoch"]), data_model=model, data_fold=fold.name,
                             data_metric="best_epoch"),
                         num(format_number(best["val_loss"], 3)),
                         num(format_number(best.get("val_auc")))])
        else:
            rows.append([fold.name, "history.csv missing", "", "", ""])
        alt = " ".join(["learning curve", *([model] if model else []), fold.name])
        if f := figure(fold.curve, fold.name, alt):
            figures.append(f)
    return {"table": table(["Fold model", "Epochs run", "Best epoch", "Val. loss at best",
                            "Val. AUC at best"], rows,
                           id=f"training-table{'-' + model if model else ''}"),
            "figures": figures}


def provenance(records: dict[str, dict], config: Any, *, label: str = "Stage") -> dict:
    """Runs, package versions and the configuration, from the run.json files."""
    result: dict[str, Any] = {"runs": None, "versions": None, "config": []}
    if records:
        result["runs"] = table([label, "Command", "Start", "End", "Status", "Seed"],
                               [[stage, r.get("command", ""), r.get("start", ""),
                                 r.get("end", ""), r.get("status", ""), r.get("seed", "")]
                                for stage, r in records.items()], wide=True)
        result["versions"] = versions(records)
    if isinstance(config, dict):
        result["config"] = config_tables(config)
    return result


def versions(records: dict[str, dict]) -> dict:
    """Package versions; one column when every run used the same ones."""
    by_run = {stage: r.get("packages") or {} for stage, r in records.items()}
    names = sorted({name for v in by_run.values() for name in v})
    if len({json.dumps(v, sort_keys=True) for v in by_run.values()}) == 1:
        only = next(iter(by_run.values()))
        header = f"Version ({', '.join(by_run)})" if len(by_run) <= 5 else "Version (every run)"
        return table(["Package", header], [[name, only[name]] for name in names],
                     id="versions-table")
    return table(["Package", *by_run], [[name, *(v.get(name, "") for v in by_run.values())]
                                        for name in names], id="versions-table")


def config_tables(config: dict) -> list[dict]:
    """One small parameter table per config section."""
    scalars = {k: v for k, v in config.items() if not isinstance(v, dict)}
    parts = ({"general": scalars} if scalars else {}) | {
        k: v for k, v in config.items() if isinstance(v, dict)}
    if "cache" in parts:
        # A run's preset carries a preprocess section; the cache says what was actually used.
        parts.pop("preprocess", None)
        parts["preprocessing (of the cache)"] = parts.pop("cache")
    return [{"name": name, "table": table(["Parameter", "Value"],
                                          [[key, _config_value(v)] for key, v in values.items()])}
            for name, values in parts.items()]


def _config_value(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return format_list(value) if isinstance(value, (list, tuple)) else str(value)
