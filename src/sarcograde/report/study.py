"""The context of the study page (`sarcograde report --study DIR`): the paper's results section
for every external site and the pooled sites, as plain dicts for templates/study.html.j2.

Every number is read from the study's artifacts (evaluate/<site>/metrics.json and the files
beside it, explain/, train/, study.json) by inputs.py; nothing is recomputed here.
"""

from __future__ import annotations

from typing import Any

from .. import model_kinds as kinds
from ..formats.evaluation import CALIBRATION, CALIBRATION_MODELS, DECISION_FIGURE, KM_PANEL, ROC
from . import sections as s
from .acquisition import acquisition
from . import utility
from .evaluation import CALIBRATION_METRICS, CLASSIFICATION_METRICS, SMALL_COHORT
from .format import format_list, format_number
from ..model_kinds import POOLED
from .inputs import EvaluationFolder, StudyInputs, is_synthetic, lookup
from .methods import SURVIVAL_SENTENCE, bootstrap_count, training_sentences
from ..outcome import Outcome, outcome
from .tripod import checklist

TITLE = "Soft-tissue sarcoma grading: study results"
TOC = (("summary", "Summary"), ("flow", "Patient flow"), ("cohort", "Cohorts (Table 1)"),
       ("acquisition", "Acquisition"),
       ("performance", "Performance (Table 2)"), ("roc", "ROC curves"),
       ("decision", "Decision curves"), ("abstention", "Abstention"), ("subgroups", "Subgroups"),
       ("calibration", "Calibration"), ("recalibration", "Recalibration"),
       ("survival", "Overall survival"),
       ("delong", "DeLong tests"), ("attention", "Attention maps"), ("training", "Training"),
       ("methods", "Methods"), ("provenance", "Provenance"), ("tripod", "TRIPOD+AI checklist"))
FUSION_SENTENCE = (f"{kinds.name(kinds.FUSION)} combined the sequences' ensemble outputs by a "
                   "logistic regression fitted on the training cohort's out-of-fold predictions "
                   "only (late fusion).")


def dl_model(sequence: str, received: bool = False) -> str:
    """The DL model of a sequence folder (explain/<site>/<SEQ>, train/<SEQ>): DL-<SEQ>, or
    PKG-<SEQ> in a study of a received model package."""
    kind = kinds.PACKAGE if received else kinds.DL
    named = kinds.kind_of(sequence)
    return sequence if named and named.kind == kind else kinds.name(kind, sequence)


def received_package(config: dict | None) -> bool:
    """True for a study that graded with a received model package (`model:`) instead of
    training its DL models."""
    return bool(config and config.get("model"))


def context(inputs: StudyInputs) -> dict[str, Any]:
    config = study_config(inputs)
    target = study_outcome(inputs, config)
    sites = [site_context(inputs, name, folder, target) for name, folder in inputs.sites.items()]
    return {
        "toc": TOC, "source_folder": str(inputs.folder), "sites": sites,
        "subtitle": target.subtitle, "classes": target.classes,
        "coverage": next((site["abstention"]["coverage"] for site in sites
                          if not site["abstention"]["not_run"]), "share set"),
        "synthetic": _synthetic(inputs, config),
        "summary": summary(inputs),
        "acquisition": acquisition(inputs),
        "attention": attention(inputs, target, received_package(config)),
        "training": [{"model": dl_model(seq), **s.training(run, model=dl_model(seq))}
                     for seq, run in inputs.runs.items()],
        "methods": methods(inputs, config),
        "provenance": s.provenance(inputs.records, config, label="Record"),
        "steps": steps(inputs.study),
        "tripod": checklist(inputs, config, target, TOC),
    }


def study_config(inputs: StudyInputs) -> dict | None:
    """The study's YAML as study.json keeps it (under "config", or the whole file)."""
    study = inputs.study
    if not isinstance(study, dict):
        return None
    config = study.get("config", {k: v for k, v in study.items() if k != "steps"})
    return config if isinstance(config, dict) else None


def study_outcome(inputs: StudyInputs, config: dict | None) -> Outcome:
    """The study's target (STUDY.yaml's `target`, else the one its evaluations name) in words."""
    named = [(config or {}).get("target"),
             *(folder.metrics.get("target") for folder in inputs.sites.values())]
    return outcome(next((t for t in named if isinstance(t, str)), None))


def site_label(inputs: StudyInputs, name: str) -> str:
    if not inputs.is_pooled(name):
        return name
    return "all external sites, pooled" if name == POOLED else f"{name} (pooled sites)"


def site_context(inputs: StudyInputs, name: str, folder: EvaluationFolder,
                 target: Outcome) -> dict:
    metrics = folder.metrics
    models = metrics["models"]
    flow = s.flow(folder.flow)
    n = flow["n_included"] if flow else metrics.get("n")
    figures = folder.figures
    return {
        "name": name, "label": site_label(inputs, name), "pooled": inputs.is_pooled(name),
        "anchor": f"site-{name}",
        "small_cohort": isinstance(n, int) and n < SMALL_COHORT, "n": n,
        "flow": flow, "cohort": s.cohort(folder.cohort, id=f"cohort-table-{name}"),
        "composition": ", ".join(
            f"{site} {lookup(counts, 'n', default='n/a')} ({lookup(counts, 'n_low', default='n/a')}"
            f" {target.classes[0]})" for site, counts in (metrics.get("sites") or {}).items()),
        "table2": metric_table(name, models, CLASSIFICATION_METRICS, f"table2-{name}"),
        "calibration_table": metric_table(name, models, CALIBRATION_METRICS,
                                          f"calibration-table-{name}"),
        "notes": [f"{model}, {key}: {note}" for model, block in models.items()
                  for key, _ in CLASSIFICATION_METRICS + CALIBRATION_METRICS
                  if (note := lookup(block, key, "note"))],
        "bootstrap": bootstrap_count(metrics, folder.record),
        # A prediction file that the evaluation does not cover: a stale or partial evaluate.
        "not_evaluated": [m for m in inputs.predictions.get(name, []) if m not in models],
        "roc": s.figure(figures.get(ROC), f"ROC curves of every model, {name}.",
                        f"ROC {name}"),
        "decision": s.figure(figures.get(DECISION_FIGURE), f"Decision curves of every model, "
                             f"{name}: net benefit against treating all and none.",
                             f"decision curves {name}"),
        "abstention": utility.abstention(name, metrics, figures),
        "subgroups": utility.subgroups(name, metrics, figures),
        "recalibration": utility.recalibration(name, metrics, figures),
        "calibration": calibration_figure(name, figures),
        "survival": {**survival(name, folder, target), "truth": target.title},
        "delong": delong(name, models, metrics),
    }


def metric_table(site: str, models: dict, metrics: tuple, id: str) -> dict:
    """One row per model: its patients, then each metric with its CI."""
    rows = [[model, s.num(lookup(block, "n", default="n/a"), data_site=site, data_model=model,
                          data_metric="n")]
            + [s.estimate(lookup(block, key), data_site=site, data_model=model, data_metric=key)
               for key, _ in metrics] for model, block in models.items()]
    return s.table(["Model", "Patients"] + [label for _, label in metrics], rows, wide=True,
                   id=id)


def calibration_figure(site: str, figures: dict[str, str]) -> dict | None:
    """Every model's calibration curves where evaluate drew them, else its reliability diagram."""
    if CALIBRATION_MODELS in figures:
        return s.figure(figures[CALIBRATION_MODELS], f"Calibration of every model, {site}.",
                        f"calibration {site}")
    return s.figure(figures.get(CALIBRATION), f"Reliability diagram, {site}.",
                    f"calibration {site}")


def survival(site: str, folder: EvaluationFolder, target: Outcome) -> dict:
    """survival.json with its KM figures; without it, whatever km_*.png evaluate drew."""
    panel = s.figure(folder.figures.get(KM_PANEL), f"Kaplan-Meier estimates of overall "
                     f"survival by each model's predicted class and by the true "
                     f"{target.title}, {site}.", f"Kaplan-Meier panel {site}")
    if folder.survival is not None:
        result = s.survival(folder.survival, folder.figures, site=site)
        if panel and not result["not_run"]:
            # The paper's Fig. 3: one panel, full width, instead of each curve.
            result.update(figures=[panel], panel=True)
        return result
    km = [panel] if panel else [
        s.figure(uri, f"Kaplan-Meier estimate of overall survival ({name}).", name)
        for name, uri in folder.figures.items() if name.startswith("km")]
    if km:
        return {"not_run": None, "table": None, "figures": km, "panel": bool(panel)}
    return {"not_run": f"survival analysis ({site}): survival.json and km_*.png are missing."}


def delong(site: str, models: dict, metrics: dict) -> dict:
    """The pairwise DeLong p-values as two symmetric matrices: raw and adjusted."""
    entries = metrics.get("delong")
    if len(models) < 2:
        return {"not_run": f"DeLong tests ({site}): one model only, nothing to compare."}
    if not isinstance(entries, list) or not entries:
        return {"not_run": f"DeLong tests ({site}): metrics.json has no 'delong' list."}
    names = list(models)
    for entry in entries:  # a model only named in a test still gets its row
        names += [m for m in (entry.get("a"), entry.get("b")) if m not in names]
    pairs = {}
    for entry in entries:
        pairs[(entry.get("a"), entry.get("b"))] = pairs[(entry.get("b"), entry.get("a"))] = entry

    def matrix(key: str, metric: str) -> dict:
        rows = [[a] + [s.num("—") if a == b else s.p_cell(
            pairs.get((a, b), {}).get(key), data_site=site, data_model=a, data_versus=b,
            data_metric=metric) for b in names] for a in names]
        return s.table(["Model", *names], rows, id=f"delong-{metric}-{site}")

    pair_rows = [[e.get("a"), e.get("b"),
                  s.estimate({"value": e.get("difference"), "ci95": e.get("ci95")},
                             data_site=site, data_model=e.get("a"), data_versus=e.get("b"),
                             data_metric="auc_difference"),
                  s.num(format_number(e.get("z"))), s.p_cell(e.get("p")),
                  s.p_cell(e.get("p_adjusted"))] for e in entries]
    return {"not_run": None, "raw": matrix("p", "delong_p"),
            "adjusted": matrix("p_adjusted", "delong_p_adjusted"),
            "pairs": s.table(["Model A", "Model B", "AUC A - AUC B (95% CI)", "z", "p",
                              "Adjusted p"], pair_rows, id=f"delong-pairs-{site}"),
            "correction": metrics.get("delong_adjustment"),
            "notes": [f"{e.get('a')} vs {e.get('b')}: {e['note']}" for e in entries
                      if e.get("note")]}


def summary(inputs: StudyInputs) -> dict:
    """Each model's AUC with its CI at each site: the study at a glance."""
    models = list(dict.fromkeys(m for folder in inputs.sites.values()
                                for m in folder.metrics["models"]))
    rows = [[model] + [s.estimate(lookup(folder.metrics, "models", model, "auc"))
                       if model in folder.metrics["models"] else s.num("not evaluated")
                       for folder in inputs.sites.values()] for model in models]
    return {"table": s.table(["Model", *(site_label(inputs, n) for n in inputs.sites)], rows,
                             wide=True, id="summary-auc"),
            "n_models": len(models), "n_sites": sum(not inputs.is_pooled(n) for n in inputs.sites)}


def attention(inputs: StudyInputs, target: Outcome, received: bool = False) -> list[dict]:
    """One gallery per DL model (explain/<site>/<SEQ>/ -> DL-<SEQ> or PKG-<SEQ>), per site."""
    sequences = list(dict.fromkeys(seq for by_seq in inputs.attention.values() for seq in by_seq))
    return [{"model": dl_model(seq, received),
             "sites": [s.attention(by_seq[seq], site=site, model=dl_model(seq, received),
                                   words=target.short)
                       for site, by_seq in inputs.attention.items() if seq in by_seq]}
            for seq in sequences]


def methods(inputs: StudyInputs, config: dict | None) -> list[str]:
    """Methods sentences: the study design, each sequence's training, the evaluation."""
    paragraphs = []
    if config:
        external = [n for n in inputs.sites if not inputs.is_pooled(n)]
        models = config.get("models")
        if received_package(config):
            design = (f"The DL models were those of the model package {config['model']}, "
                      "applied as received, without retraining (each site preprocessed with the "
                      "package's settings)" + (f"; the other models were fitted on the training "
                                               f"cohort ({config['train']})"
                                               if config.get("train") else "") + ". Models were")
        else:
            design = (f"Models were trained on the training cohort "
                      f"({config.get('train', 'not recorded')}) and")
        paragraphs.append(
            f"{design} tested on {len(external)} external site(s) ({', '.join(external)}), each on "
            f"its own and pooled. Target: {config.get('target', 'grade')}; sequences: "
            f"{format_list(config.get('sequences', 'not recorded'))}; models: "
            f"{format_list(models) if models is not None else 'not recorded'}; preset: "
            f"{config.get('preset', 'not recorded')}; seed: {config.get('seed', 'not recorded')}.")
    for seq, run in inputs.runs.items():
        if sentences := training_sentences(run):
            paragraphs.append(f"{dl_model(seq)}: " + " ".join(sentences))
    first = next(iter(inputs.sites.values()))
    evaluation = [
        f"At every site each model's metrics were estimated with 95% confidence intervals from "
        f"{bootstrap_count(first.metrics, first.record)} bootstrap resamples of patients, and "
        "every pair of models was compared by DeLong's test for paired AUCs."]
    if any("decision_curve" in folder.metrics for folder in inputs.sites.values()):
        evaluation.append(utility.METHODS_SENTENCE)
    fusion = kinds.name(kinds.FUSION)
    if any(fusion in folder.metrics["models"] for folder in inputs.sites.values()):
        evaluation.append(FUSION_SENTENCE)
    if any((folder.survival or {}).get("models") for folder in inputs.sites.values()):
        evaluation.append(SURVIVAL_SENTENCE)
    paragraphs.append(" ".join(evaluation))
    return paragraphs


def steps(study: Any) -> dict | None:
    """study.json's steps (a list, or a mapping by name) as a table of their fields."""
    raw = study.get("steps") if isinstance(study, dict) else None
    if isinstance(raw, dict):
        raw = [{"step": name, **(v if isinstance(v, dict) else {"status": v})}
               for name, v in raw.items()]
    if not isinstance(raw, list) or not raw:
        return None
    rows = [r if isinstance(r, dict) else {"step": r} for r in raw]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return s.table(columns, [[_plain(r.get(c, "")) for c in columns] for r in rows], wide=True,
                   id="steps-table")


def _plain(value: Any) -> str:
    return format_list(value) if isinstance(value, (list, tuple)) else str(value)


def _synthetic(inputs: StudyInputs, config: dict | None) -> bool:
    manifests = []
    if config:
        test = config.get("test")
        manifests = [config.get("train"), *(test.values() if isinstance(test, dict) else [])]
    named = {"manifests": [str(inputs.folder / m) for m in manifests if isinstance(m, str)]}
    return is_synthetic([named, *(r.get("config") for r in inputs.records.values())])
