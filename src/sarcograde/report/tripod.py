"""The study page's TRIPOD+AI checklist (Collins et al., BMJ 2024;385:e078378): each reporting
item that the study's artifacts answer, filled with the study's own numbers and linked to the
section of the page that shows them; the items only the authors can answer listed for them.

ITEMS is the one table of the items: their TRIPOD+AI number, topic, the page section that
answers them and the function that writes the answer from the study's artifacts (as inputs.py
loaded them; nothing is recomputed). FOR_AUTHORS lists the items the tool cannot know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..outcome import Outcome
from .evaluation import CALIBRATION_METRICS, CLASSIFICATION_METRICS
from .format import format_estimate, format_list
from .inputs import EvaluationFolder, StudyInputs, lookup


@dataclass(frozen=True)
class Study:
    """What the answers read: the study's configuration and its evaluated sites."""

    inputs: StudyInputs
    config: dict
    target: Outcome  # the outcome's words

    @property
    def external(self) -> dict[str, EvaluationFolder]:
        return {n: f for n, f in self.inputs.sites.items() if not self.inputs.is_pooled(n)}

    def per_site(self, describe: Callable[[str, EvaluationFolder], str | None]) -> str:
        """One clause per external site, "; "-joined; a site `describe` skips is left out."""
        return "; ".join(f"{name}: {text}" for name, folder in self.external.items()
                         if (text := describe(name, folder)))

    def models(self) -> list[str]:
        return list(dict.fromkeys(m for f in self.inputs.sites.values()
                                  for m in f.metrics["models"]))

    def first_model(self, folder: EvaluationFolder) -> str | None:
        return next(iter(folder.metrics["models"]), None)


def patients(folder: EvaluationFolder) -> int | None:
    """The patients evaluated at a site (patient_flow.json's count, else metrics.json's)."""
    if folder.flow and "n_included" in folder.flow:
        return folder.flow["n_included"]
    return folder.metrics.get("n")


def excluded(folder: EvaluationFolder) -> list[dict]:
    return [e for e in (folder.flow or {}).get("excluded", []) if isinstance(e, dict)]


# --------------------------------------------------------------------------------------------
# The answers, one per item: each returns the sentence the checklist shows.


def source_of_data(study: Study) -> str:
    test = study.config.get("test")
    manifests = test if isinstance(test, dict) else {}
    sites = study.per_site(lambda name, _: manifests.get(name, "manifest not recorded"))
    development = (f"model package {study.config['model']}, applied as received"
                   if study.config.get("model") else
                   f"training cohort {study.config.get('train', 'not recorded')}")
    return (f"Development: {development}; "
            f"external validation at {len(study.external)} site(s) ({sites}), each evaluated on "
            "its own" + (" and pooled" if len(study.inputs.sites) > len(study.external) else "")
            + ".")


def participants(study: Study) -> str:
    return study.per_site(lambda _, f: f"{patients(f)} patients included, {len(excluded(f))} "
                                       "left out") + "."


def data_preparation(study: Study) -> str:
    cohorts = list(study.inputs.acquisition)
    if not cohorts:
        return "No acquisition summary (the check stage did not write one)."
    return (f"Scanners and protocols of {len(cohorts)} cohort(s) ({format_list(cohorts)}) from "
            "the image headers; preprocessing preset "
            f"{study.config.get('preset', 'not recorded')}.")


def outcome(study: Study) -> str:
    low, high = study.target.classes
    counts = study.per_site(lambda _, f: f"{lookup(f.metrics, 'n_low', default='n/a')} {low}, "
                                         f"{lookup(f.metrics, 'n_high', default='n/a')} {high}")
    return f"Target: {study.target.title}; patients per class: {counts}."


def predictors(study: Study) -> str:
    return (f"MRI sequences {format_list(study.config.get('sequences', 'not recorded'))}; "
            f"models compared: {format_list(study.models())}.")


def sample_size(study: Study) -> str:
    return ("All eligible patients of each site, no sample size calculation: "
            + study.per_site(lambda _, f: f"{patients(f)} patients, "
                                          f"{lookup(f.metrics, 'n_high', default='n/a')} events "
                                          f"({study.target.classes[1]})") + ".")


def missing_data(study: Study) -> str:
    def reasons(_: str, folder: EvaluationFolder) -> str:
        counts: dict[str, int] = {}
        for entry in excluded(folder):
            reason = str(entry.get("reason", "no reason given"))
            counts[reason] = counts.get(reason, 0) + 1
        return ", ".join(f"{n} {reason}" for reason, n in counts.items()) or "none left out"
    return ("Complete-case analysis: a patient without a known outcome or a prediction of every "
            "model is left out; " + study.per_site(reasons) + ".")


def analytical_methods(study: Study) -> str:
    runs = [f"{seq}: {lookup(run.config, 'train', 'folds', default='n/a')}-fold "
            f"cross-validation, {run.n_models} fold models"
            for seq, run in study.inputs.runs.items()]
    return (f"{len(study.models())} model(s): {format_list(study.models())}; seed "
            f"{study.config.get('seed', 'not recorded')}"
            + (f"; {'; '.join(runs)}" if runs else "") + ".")


def performance_measures(study: Study) -> str:
    def auc(_: str, folder: EvaluationFolder) -> str | None:
        model = study.first_model(folder)
        block = lookup(folder.metrics, "models", model, "auc")
        return f"{model} AUC {format_estimate(block)}" if block else None
    resamples = lookup(next(iter(study.inputs.sites.values())).metrics, "bootstrap", "resamples",
                       default="n/a")
    measures = format_list([label for _, label in CLASSIFICATION_METRICS])
    return (f"{measures}, each with its 95% CI from {resamples} bootstrap resamples of "
            f"patients; DeLong tests between models. {study.per_site(auc)}.")


def calibration(study: Study) -> str:
    def slope(_: str, folder: EvaluationFolder) -> str | None:
        model = study.first_model(folder)
        block = lookup(folder.metrics, "models", model)
        if not block or "calibration_slope" not in block:
            return None
        return (f"{model} slope {format_estimate(block['calibration_slope'])}, intercept "
                f"{format_estimate(block.get('calibration_intercept'))}")
    measures = format_list([label for _, label in CALIBRATION_METRICS])
    return (f"{measures} and calibration curves. "
            + study.per_site(slope) + ".")


def model_updating(study: Study) -> str:
    def fitted(_: str, folder: EvaluationFolder) -> str | None:
        block = folder.metrics.get("recalibration")
        if not isinstance(block, dict):
            return None
        return (f"fitted on {block.get('n', 'n/a')} patients, evaluated on "
                f"{block.get('n_evaluated', 'n/a')} others "
                f"({block.get('rule', 'rule not recorded')})")
    sites = study.per_site(fitted)
    return (f"Logistic recalibration for a new site: {sites}." if sites
            else "No recalibration (evaluate was not given --recalibrate N).")


def clinical_utility(study: Study) -> str:
    done = [n for n, f in study.external.items() if "decision_curve" in f.metrics]
    if not done:
        return "No decision curves (the evaluations predate them)."
    return (f"Decision curves (net benefit at threshold probabilities 0.05 to 0.95 against "
            f"treating all and none) at {len(done)} site(s): {format_list(done)}.")


def subgroups(study: Study) -> str:
    def scored(_: str, folder: EvaluationFolder) -> str | None:
        block = folder.metrics.get("subgroups")
        if not isinstance(block, dict):
            return None
        return (f"{len(block.get('groups') or [])} subgroup(s) scored, "
                f"{len(block.get('too_small') or [])} too small")
    sites = study.per_site(scored)
    return (f"Performance per subgroup of the clinical columns: {sites}." if sites
            else "No subgroup analysis (the evaluations predate it).")


@dataclass(frozen=True)
class Item:
    number: str  # TRIPOD+AI item(s)
    topic: str
    anchor: str  # the id of the page section that answers it
    answer: Callable[[Study], str]


ITEMS = (
    Item("5", "Source of data", "cohort", source_of_data),
    Item("6, 20", "Participants", "flow", participants),
    Item("7", "Data preparation", "acquisition", data_preparation),
    Item("8", "Outcome", "cohort", outcome),
    Item("9", "Predictors", "methods", predictors),
    Item("10", "Sample size", "performance", sample_size),
    Item("11", "Missing data", "flow", missing_data),
    Item("12", "Analytical methods: model", "training", analytical_methods),
    Item("12, 23", "Performance measures", "performance", performance_measures),
    Item("12, 23", "Calibration", "calibration", calibration),
    Item("12, 24", "Model updating", "recalibration", model_updating),
    Item("12, 23", "Clinical utility", "decision", clinical_utility),
    Item("14, 23", "Subgroups (fairness)", "subgroups", subgroups),
)
FOR_AUTHORS = (("1", "Title"), ("2", "Abstract"), ("3", "Background"), ("4", "Objectives"),
               ("17", "Ethical approval"), ("18", "Open science: funding, conflicts of interest, "
                                               "protocol, registration, data and code sharing"),
               ("19", "Patient and public involvement"), ("25", "Interpretation"),
               ("26", "Limitations"), ("27", "Usability of the model in current care"))


def checklist(inputs: StudyInputs, config: dict | None, target: Outcome, toc: tuple) -> dict:
    """The filled items (number, topic, answer, link to its section) and the authors' items."""
    titles = dict(toc)
    study = Study(inputs, config or {}, target)
    return {"filled": [{"number": item.number, "topic": item.topic, "answer": item.answer(study),
                       "anchor": item.anchor, "section": titles[item.anchor]}
                      for item in ITEMS],
            "for_authors": [{"number": n, "topic": t} for n, t in FOR_AUTHORS]}
