"""The case report, `DIR/<id>/case-report.html`: one page a clinician reads in a minute, from
grade.json, the attention montages and the package's model card (its intended use, threshold
rule and limitations).
It names the patient by the pseudonymous id only, unless `--identify` passes the patient whose
input files (which may name them) it then shows."""

from __future__ import annotations

from pathlib import Path

from ..acquisition import VALUES, amount, span
from ..cohort import Patient
from ..formats.evaluation import format_estimate
from ..formats.package import Package
from ..report.render import render, write_page
from ..report.inputs import png_data_uri
from ..report.sections import cell, figure, num, table
from .result import HIGH

TITLE = "sarcograde case report"


def number(value: float | None) -> str:
    """A probability as the page shows it (3 decimals), or an en dash."""
    return "–" if value is None else f"{value:.3f}"


def spread_text(spread: dict | None) -> tuple[str, str]:
    if not spread:
        return "–", "not defined for this package's fusion"
    sd = "–" if spread["sd"] is None else number(spread["sd"])
    return sd, (f"SD over {spread['n_models']} models; range {number(spread['min'])}–"
                f"{number(spread['max'])}")


def card_summary(document: dict, graded: str) -> str:
    """The model card in one sentence: sequences, training cohort, cross-validated AUC."""
    cohort = document.get("training_cohort") or {}
    auc = ((document.get("cross_validation") or {}).get("models") or {}).get(graded, {}).get("auc")
    text = (f"{graded} on {', '.join(document['sequences'])}, trained on {cohort.get('n', '?')} "
            f"patients ({cohort.get('n_low', '?')} low grade, {cohort.get('n_high', '?')} high "
            "grade)")
    if auc:
        text += f"; cross-validated AUC {format_estimate(auc)}"
    return text + "."


def attention_rows(result: dict) -> dict:
    rows = [[seq, num(f"{a['inside']:.0%}"), num(f"{a['ring']:.0%}"),
             num(f"{a['elsewhere']:.0%}"),
             cell("off the tumour" if a["off_tumour"] else "on the tumour",
                  cls="flag" if a["off_tumour"] else "ok")]
            for seq, a in result["attention"].items()]
    ring = next(iter(result["attention"].values()), {}).get("ring_mm", "")
    return table(["Sequence", "Inside the tumour", f"{ring:g} mm ring" if ring else "Ring",
                  "Elsewhere", "Attention"], rows, id="attention")


def acquisition_rows(block: dict) -> dict | None:
    """Each compared sequence's acquisition values beside the training range, in words."""
    rows, classes = [], []
    for seq, compared in block["sequences"].items():
        if not compared["checked"]:
            continue
        outside = {o["value"] for o in compared["outside"]}
        for name, (words, unit) in VALUES.items():
            value, known = compared["values"].get(name), compared["range"].get(name)
            status = ("outside the training range" if name in outside
                      else "unknown" if value is None or known is None else "inside")
            rows.append([seq, words, num("unknown" if value is None else amount(value, unit)),
                         num("unknown" if known is None
                             else span(known["min"], known["max"], unit)),
                         cell(status, cls="flag" if name in outside else None)])
    return table(["Sequence", "Acquisition", "This patient", "Training range", "Compared"],
                 rows, id="acquisition") if rows else None


def acquisition_notes(block: dict) -> list[str]:
    """What was and was not compared, in words."""
    if not block["checked"]:
        return [f"Acquisition not compared with the training cohort's: {block['reason']}."]
    notes = [f"Acquisition compared with the training cohort's range (its minimum and maximum): "
             f"{len(block['outside'])} value(s) outside."]
    notes += [f"{seq}: not compared: {c['reason']}." for seq, c in block["sequences"].items()
              if not c["checked"]]
    return notes


def recalibration_words(result: dict) -> str | None:
    """The package's recalibration for a site in words, or None where it has none."""
    block = result.get("recalibration")
    if not block:
        return None
    return (f"p(high grade) recalibrated for {block['site']} ({block['fit']}, fitted on "
            f"{block['n']} patients of that site); before the recalibration: "
            f"{number(result['p_high_uncalibrated'])}.")


def context(result: dict, package: Package, patient: Patient | None, folder: Path) -> dict:
    sd, spread_words = spread_text(result["spread"])
    rows = [[seq, num(number(s["p_high"])), num(number(s["spread"]["sd"])),
             num(f"{number(s['spread']['min'])}–{number(s['spread']['max'])}"),
             num(s["n_slices"])] for seq, s in result["sequences"].items()]
    identifiers = []
    if patient is not None:
        identifiers = [(f"{kind} {seq}", str(path)) for kind, files in
                       (("image", patient.images), ("mask", patient.masks))
                       for seq, path in files.items()]
    return {
        "toc": [("result", "Result"), ("attention", "Attention"), ("qa", "Quality checks"),
                ("model", "The model")],
        "patient_id": result["patient_id"], "identifiers": identifiers,
        "grade": result["grade"],
        "grade_words": ("high grade (FNCLCC G2/G3)" if result["grade"] == HIGH
                        else "low grade (FNCLCC G1)"),
        "p_high": number(result["p_high"]), "threshold": number(result["threshold"]),
        "graded_model": result["model"]["graded_model"], "spread": sd,
        "spread_words": spread_words, "borderline": result["borderline"],
        "margin": result["borderline_margin"], "recalibration": recalibration_words(result),
        "sequences": table(["Sequence", "p(high grade)", "SD", "Range", "Slices"], rows,
                           id="sequences"),
        "flags": [f["message"] for f in result["qa_flags"]],
        "qa_notes": acquisition_notes(result["acquisition_range"]),
        "acquisition": acquisition_rows(result["acquisition_range"]),
        "attention": attention_rows(result),
        "montages": [figure(png_data_uri(folder / a["montage"]),
                            f"{seq}: Grad-CAM ({a['method']}) of the predicted class at 0.5, mean "
                            f"of the fold models, over the tumour's slices",
                            f"attention montage of {seq}")
                     for seq, a in result["attention"].items()],
        "model_id": result["model"]["id"], "model_version": result["model"]["version"],
        "threshold_rule": package.document["threshold"].get("description", ""),
        "intended_use": package.document.get("intended_use", ""),
        "summary": card_summary(package.document, result["model"]["graded_model"]),
        "limitations": package.document.get("limitations", []),
    }


def write_case_report(out: Path, result: dict, package: Package,
                      patient: Patient | None = None) -> Path:
    """The page, with its run record beside it; `patient` only with --identify."""
    page = render("case.html.j2", context(result, package, patient, Path(out).parent),
                  title=TITLE)
    return write_page(out, page, config={"identify": patient is not None},
                      inputs={})
