"""A model package's card, MODEL_CARD.md, written from its model.json alone (so the two always
agree): intended use and limitations, sequences and settings, the operating threshold, the
training cohort's counts, the cross-validated and external metrics with their CIs, how to grade
with it, the versions. `INTENDED_USE` and `LIMITATIONS` are model.json's too, for any page that
shows a package's result."""

from __future__ import annotations

from .acquisition import RANGE_RULE, range_words
from .formats.evaluation import format_estimate
from .formats.package import MODEL_CARD, MODEL_JSON, RECALIBRATION

INTENDED_USE = ("Research use: grading a soft-tissue sarcoma from MRI as low grade (FNCLCC G1) "
                "or high grade (G2/G3), to study the method and to validate it on one's own "
                "patients. Not for clinical use without local validation.")
LIMITATIONS = (
    "Not for clinical use without local validation: measure its performance on your own "
    "site's graded patients, scanners and protocols before relying on it.",
    "Its performance is known only on the cohorts below; on another site, scanner, field "
    "strength or protocol it is unknown until measured.",
    "It grades the tumour inside a given contour on the sequences it was trained on; it does "
    "not find the tumour, and a missing sequence or contour changes what it sees.",
    "p_high is an ensemble's estimate; its calibration on a new site is unknown. Read it with "
    "the spread of the fold models.",
    "A threshold chosen by Youden's rule on the training cohort's own out-of-fold predictions "
    "flatters the sensitivity and specificity shown for that cohort.",
)
METRIC_HEADER = "| AUC (95% CI) | sensitivity | specificity |"


def render_card(document: dict) -> str:
    """MODEL_CARD.md's text."""
    sections = [_title(document), _use(document), _sequences(document), _threshold(document),
                _cohort(document["training_cohort"]), _acquisition(document),
                _cross_validation(document),
                _external(document), _recalibration(document), _grading(document),
                _versions(document)]
    return "\n\n".join(s for s in sections if s) + "\n"


def _recalibration(document: dict) -> str:
    """The site the package was recalibrated for (`sarcograde recalibrate`); none: empty."""
    block = document.get(RECALIBRATION)
    if not block:
        return ""
    return (f"## Recalibration for {block['site']}\n\n"
            f"This package is package {block['previous_package']} recalibrated for the site "
            f"{block['site']}: the graded model's p_high becomes "
            f"expit({block['intercept']:.4f} + {block['slope']:.4f} logit(p_high)), a logistic "
            f"recalibration ({block['fit']}) fitted on {block['n']} labelled patients of the site "
            f"({block['n_low']} low, {block['n_high']} high). The weights, the settings and the "
            "threshold are unchanged; the metrics above are those of the package before the "
            "recalibration.")


def _title(document: dict) -> str:
    target = document.get("target", "grade")
    what = ("the grade of a soft-tissue sarcoma from MRI: low grade (FNCLCC G1) against high "
            "grade (G2/G3)") if target == "grade" else (
            f"`{target}` (0/1) of a soft-tissue sarcoma from MRI, the target of the study it "
            "was trained in (class 1 reported as `high`)")
    return (f"# sarcograde model package {document['id']}\n\n"
            f"Predicts {what}, as p_high, the probability of class 1, with sarcograde "
            f"(format {document['format']} version {document['format_version']}).")


def _use(document: dict) -> str:
    limitations = "\n".join(f"- {line}" for line in document["limitations"])
    return (f"## Intended use\n\n{document['intended_use']}\n\n"
            f"## Limitations\n\n{limitations}")


def _sequences(document: dict) -> str:
    lines = ["## Sequences and settings", "",
             "| sequence | model | fold models | network | input | preprocessing |",
             "| --- | --- | --- | --- | --- | --- |"]
    for seq in document["sequences"]:
        block = document["models"][seq]
        model, prep = block["model"], block["preprocess"]
        network = model.get("architecture", "densenet161")
        if network == "densenet":
            network += (f" ({model['init_features']} features, growth {model['growth_rate']}, "
                        f"blocks {model['block_config']})")
        n4 = (f"N4 (grid {prep.get('n4_grid_mm')} mm, iterations {prep.get('n4_iterations')})"
              if prep.get("n4") else "no N4")
        lines.append(f"| {seq} | {block['name']} (trained as `{block['trained_as']}`) | "
                     f"{len(block['folds'])} | {network}, pretrained: "
                     f"{model.get('pretrained', 'none')} | {block['input']['size']} px slices | "
                     f"{prep.get('spacing_mm')} mm voxels, {n4}, margin "
                     f"{prep.get('margin_mm')} mm |")
    aggregate = document["models"][document["sequences"][0]]["aggregate"]
    lines += ["", f"How a sequence's fold models give one p_high: {aggregate}."]
    fusion = document.get("fusion")
    if fusion:
        full = fusion["models"][0]
        terms = " + ".join(f"{c:.3f} x logit(p_{s})" for s, c in full["coefficients"].items())
        lines += ["", f"{fusion['name']} (trained as `{fusion['trained_as']}`): "
                      f"p_high = sigmoid({full['intercept']:.3f} + {terms}), a logistic "
                      "regression fitted on the training cohort's out-of-fold predictions; a "
                      "patient missing a sequence is graded by the regression fitted on the "
                      "sequences present."]
    return "\n".join(lines)


def _threshold(document: dict) -> str:
    threshold = document["threshold"]
    return (f"## Operating threshold\n\nHigh grade when {threshold['model']}'s p_high > "
            f"{threshold['value']:.3f}: {threshold['description']}.")


def _cohort(counts: dict) -> str:
    lines = ["## Training cohort", "",
             f"{counts['n']} patients: {counts['n_low']} low grade, {counts['n_high']} high "
             "grade."]
    if "grades" in counts:
        lines.append("By FNCLCC grade: " + ", ".join(f"{g} {n}"
                                                     for g, n in counts["grades"].items()) + ".")
    if "sites" in counts:
        lines.append("By site: " + ", ".join(f"{s} {n}" for s, n in counts["sites"].items())
                     + ".")
    return "\n".join(lines)


def _acquisition(document: dict) -> str:
    """The training cohort's acquisition ranges per sequence: `grade` flags a patient outside."""
    lines = ["## Acquisition of the training cohort", "",
             f"Per sequence, the range ({RANGE_RULE}) of each acquisition value; `sarcograde "
             "grade` flags a patient whose value falls outside it."]
    for seq in document["sequences"]:
        lines += ["", f"{seq}:", *(f"- {line}" for line in
                                   range_words(document["models"][seq].get("acquisition_range")))]
    return "\n".join(lines)


def _metric_cells(block: dict) -> str:
    return " | ".join(format_estimate(block.get(k)) if block.get(k) else ""
                      for k in ("auc", "sensitivity", "specificity"))


def _cross_validation(document: dict) -> str:
    cv = document["cross_validation"]
    lines = ["## Cross-validation", "", f"| model | patients (low/high) {METRIC_HEADER}",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {m['n']} ({m['n_low']}/{m['n_high']}) | {_metric_cells(m)} |"
              for name, m in cv["models"].items()]
    lines += ["", f"On the {cv['source']}; 95% CIs from {cv['bootstrap']['resamples']} "
                  "patient-level bootstrap resamples (percentile)."]
    return "\n".join(lines)


def _external(document: dict) -> str:
    external = document.get("external_validation")
    if not external:
        return ("## External validation\n\nNone in this package (exported from training runs, "
                "not from a study): validate it on your own site before use.")
    lines = ["## External validation", "", f"| site | patients (low/high) | model {METRIC_HEADER}",
             "| --- | --- | --- | --- | --- | --- |"]
    for site, block in external["sites"].items():
        if "models" not in block:
            lines.append(f"| {site} | {block.get('note', '')} | | | | |")
            continue
        for name, m in block["models"].items():
            lines.append(f"| {site} | {block['n']} ({block['n_low']}/{block['n_high']}) | "
                         f"{name} | {_metric_cells(m)} |")
    lines += ["", f"From {external['source']}; {external['threshold']}."]
    return "\n".join(lines)


def _grading(document: dict) -> str:
    images = " ".join(f"--image {s}=IMAGE --mask {s}=MASK" for s in document["sequences"])
    return ("## How to grade with it\n\n"
            f"```bash\nsarcograde grade --model PKG {images} --out DIR\n"
            "sarcograde grade --model PKG --exam DICOM_EXAM_FOLDER --out DIR   # a whole exam\n"
            "sarcograde grade --model PKG --manifest PATIENTS.csv --out DIR    # a batch\n"
            "```\n\n"
            "In a DICOM exam each sequence's series is found by the SeriesDescription rules "
            "in model.json's `series_rules` (`--series SEQ=UID` names one), the contour "
            "is its RTSTRUCT. "
            "To validate the package on a site's own patients against the clinical and volume "
            "baselines, without retraining, give it to a study as `model: PKG`. "
            "Each image is preprocessed with the package's settings above, graded by every fold "
            "model, and the result compared with the threshold. sarcograde checks every file "
            f"against the SHA-256 that {MODEL_JSON} lists before it uses the package, and "
            "refuses a changed one.")


def _versions(document: dict) -> str:
    def listed(found: dict) -> str:
        return ", ".join(f"{name} {version}" for name, version in found.items())

    lines = ["## Versions", "", f"Exported with {listed(document['versions']['exported_with'])}."]
    for seq in document["sequences"]:
        trained = document["models"][seq].get("trained_with")
        if trained:
            lines.append(f"{seq} trained with {listed(trained)}.")
    graphs = document.get("onnx")
    if graphs:
        lines.append(f"Each fold model is also an ONNX graph (opset {graphs['opset']}, "
                     f"{listed(graphs['exported_with'])}), {graphs['check']}.")
    lines += ["", f"{MODEL_CARD} is written from {MODEL_JSON}, which holds the same in full."]
    return "\n".join(lines)
