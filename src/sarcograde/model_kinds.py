"""Every kind of model sarcograde compares, by name: how a model's name is built from its kind
and sequence and parsed back, the file that holds its predictions, and the pooled site's name.

    DL-<SEQ>          the DenseNet ensemble of one sequence (`train`, `predict`)
    DL-fusion         the late fusion of the sequences' DL ensembles (`fusion`)
    radiomics-<SEQ>   IBSI radiomics features and their L1 logistic regression (`radiomics`)
    clinical, volume, clinical+volume
                      the logistic-regression baselines that `evaluate` fits on the training
                      cohort (`baselines`)
    PKG-<SEQ>, PKG-fusion
                      a model package's sequences' models and their fusion (`export` names
                      them in the package's model.json; a study with `model: PKG` predicts
                      with them under these names)

A study lists the kinds it runs (`models:` in STUDY.yaml, `STUDY_KINDS`); every model's
predictions are `<name>.csv` (patient_id, p_high, predicted). A new kind is an entry of
`TEMPLATES` here, and the code that computes it. `evaluate` compares any other predictions too
(a radiologist's reading, another group's model) under any name that can be a file name
(`check_model_name`); a name of no kind has no kind-specific meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SarcogradeError

DL, FUSION, RADIOMICS = "dl", "fusion", "radiomics"
CLINICAL, VOLUME, CLINICAL_VOLUME = "clinical", "volume", "clinical+volume"
PACKAGE, PACKAGE_FUSION = "package", "package-fusion"

# kind -> the name of its model, or of its model per sequence where the template holds {seq}
TEMPLATES = {DL: "DL-{seq}", FUSION: "DL-fusion", RADIOMICS: "radiomics-{seq}",
             CLINICAL: "clinical", VOLUME: "volume", CLINICAL_VOLUME: "clinical+volume",
             PACKAGE: "PKG-{seq}", PACKAGE_FUSION: "PKG-fusion"}
BASELINES = (CLINICAL, VOLUME, CLINICAL_VOLUME)
# What a study's `models:` may list, in the order its models are named, predicted and compared.
STUDY_KINDS = (DL, FUSION, RADIOMICS, *BASELINES)
# The baselines' keys in baselines.py and in metrics.json's `baselines` block ("+" is awkward
# in a key that is also part of a file name, km_<key>.png).
BASELINE_KEYS = {CLINICAL: "clinical", VOLUME: "volume", CLINICAL_VOLUME: "clinical_volume"}
# evaluate's name for a lone predictions file given without --sequence
UNNAMED_DL = "DL"
# the evaluation of every test site together; no test site may take this name
POOLED = "pooled"
PREDICTIONS_SUFFIX = ".csv"

# A sequence name as a study and a manifest column take it (T2FS, T1.FSGd, T1_post-Gd).
SEQUENCE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_PATTERNS = {kind: re.compile(re.escape(template).replace(re.escape("{seq}"),
                                                          f"(?P<seq>{SEQUENCE_NAME})"))
             for kind, template in TEMPLATES.items()}
# Any model's name: it names files (<name>.csv, km_<name>.png), so it must be able to be one.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
MODEL_NAME_RULE = "letters, digits, '_.+-', starting with a letter or digit"
# How each kind is written in messages and help: DL-<SEQ>, DL-fusion, ...
FORMS = tuple(template.replace("{seq}", "<SEQ>") for template in TEMPLATES.values())


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: its kind, and its sequence for a kind with one model per sequence."""

    kind: str
    sequence: str | None = None

    def __str__(self) -> str:
        return name(self.kind, self.sequence)


def per_sequence(kind: str) -> bool:
    """True for a kind with one model per sequence (DL-<SEQ>, radiomics-<SEQ>, PKG-<SEQ>)."""
    return "{seq}" in TEMPLATES[kind]


def name(kind: str, sequence: str | None = None) -> str:
    """The model's name: `name(DL, "T2FS")` is "DL-T2FS", `name(FUSION)` is "DL-fusion"."""
    if per_sequence(kind) != (sequence is not None):
        raise ValueError(f"model kind {kind} {'needs' if per_sequence(kind) else 'takes no'} "
                         "sequence")
    return TEMPLATES[kind].format(seq=sequence)


def kind_of(text: str) -> ModelName | None:
    """The kind and sequence of a model's name, or None for a name of no kind."""
    # a kind's one name (DL-fusion) before the per-sequence pattern it also fits (DL-<SEQ>)
    for kind in sorted(TEMPLATES, key=per_sequence):
        match = _PATTERNS[kind].fullmatch(text)
        if match:
            return ModelName(kind, match.groupdict().get("seq"))
    return None


def parse(text: str) -> ModelName:
    """The kind and sequence of a model's name; a one-line error for a name of no kind."""
    parsed = kind_of(text)
    if parsed is None:
        raise SarcogradeError(f"unknown model name {text!r}: use {', '.join(FORMS[:-1])} or "
                              f"{FORMS[-1]}")
    return parsed


def check_model_name(text: str) -> str:
    """`text` when it can name a model's files (reader-1, DL-T2FS, clinical+volume); else a
    one-line error."""
    if not MODEL_NAME.fullmatch(text):
        raise SarcogradeError(f"model name {text!r} cannot be a file name ({MODEL_NAME_RULE})")
    return text


def study_models(kinds: list[str] | tuple[str, ...], sequences: list[str]) -> list[str]:
    """The names of the models a study with these kinds and sequences compares, in
    `STUDY_KINDS` order, one per sequence for a per-sequence kind."""
    return [name(kind, seq) for kind in STUDY_KINDS if kind in kinds
            for seq in (sequences if per_sequence(kind) else [None])]


def prediction_file(model: str) -> str:
    """The file name of a model's predictions: `<name>.csv`."""
    return f"{model}{PREDICTIONS_SUFFIX}"
