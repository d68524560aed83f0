"""The table of settings: every key of the presets, of a study's `overrides` and of the radiomics
settings, with what it accepts and a one-line description; `check_settings` holds a mapping of
settings against it.

Each key lists the values it accepts, in the style of scikit-learn's parameter constraints: an
`Interval` of numbers, `Options`, a `ListOf` numbers, a `Span` [low, high], `bool`, a literal
such as "auto", None, a `Mapping` of a nested table. A key the table lacks, or a value none of
them accepts, is one `SarcogradeError` naming the file and the key, and suggesting the nearest
known key. Every source is checked before any work: the presets themselves, a `--config` file,
the command line's values, a study's `overrides`, the radiomics settings.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, NamedTuple

from .errors import SarcogradeError
from .options import deprecation_note
from .radiomics.families import FAMILIES


def _shown(value: Any) -> str:
    """A value as a YAML user wrote it: true, null, 'text', 3, [1, 2]."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else repr(value)


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


@dataclass(frozen=True)
class Interval:
    """A number of `kind` (Integral: a whole number; Real: any; never a bool) from `low` to
    `high` (None: unbounded); `closed` names the ends included: both, left, right or neither."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"
    unit: str = ""

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        return ((self.low is None or (value >= self.low if left else value > self.low))
                and (self.high is None or (value <= self.high if right else value < self.high)))

    def words(self, plural: bool = False) -> list[str]:
        noun = "whole number" if self.kind is Integral else "number"
        text = (f"{noun}s" if plural else f"a {noun}") + (f" of {self.unit}" if self.unit else "")
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            text += f" in {'[' if left else '('}{self.low:g}, {self.high:g}{']' if right else ')'}"
        elif self.low is not None:
            text += f" {'>=' if left else '>'} {self.low:g}"
        elif self.high is not None:
            text += f" {'<=' if right else '<'} {self.high:g}"
        return [text]


class Options:
    """One of the given values (compared with their types: 1 is not true)."""

    def __init__(self, *values: Any):
        self.values = values

    def accepts(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)

    def words(self, plural: bool = False) -> list[str]:
        return [v if isinstance(v, str) else _shown(v) for v in self.values]


@dataclass(frozen=True)
class Text:
    """Any non-empty text, described as `what` (e.g. a file path)."""

    what: str

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def words(self, plural: bool = False) -> list[str]:
        return [self.what]


@dataclass(frozen=True)
class ListOf:
    """A list of `length` items (None: one or more), each accepted by `item`."""

    item: Interval | Options
    length: int | None = None

    def accepts(self, value: Any) -> bool:
        return (isinstance(value, (list, tuple))
                and (len(value) == self.length if self.length else len(value) >= 1)
                and all(self.item.accepts(v) for v in value))

    def words(self, plural: bool = False) -> list[str]:
        size = f"list of {self.length}" if self.length else "non-empty list of"
        return [f"a {size} {_either(self.item.words(plural=True))}"]


@dataclass(frozen=True)
class Span:
    """[low, high], both accepted by `item`, low < high (`strict`) or low <= high; with
    `open_above`, high may be null (no upper bound)."""

    item: Interval
    strict: bool = True
    open_above: bool = False

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            return False
        low, high = value
        if not self.item.accepts(low):
            return False
        if high is None:
            return self.open_above
        return self.item.accepts(high) and (high > low if self.strict else high >= low)

    def words(self, plural: bool = False) -> list[str]:
        null = ", high may be null" if self.open_above else ""
        return [f"a [low, high] pair of {self.item.words(plural=True)[0]} with low "
                f"{'<' if self.strict else '<='} high{null}"]


@dataclass(frozen=True)
class Mapping:
    """A mapping of some of `table`'s keys (each checked against the table)."""

    table: dict

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def words(self, plural: bool = False) -> list[str]:
        return [f"a mapping of {', '.join(self.table)}"]


Constraint = Interval | Options | Text | ListOf | Span | Mapping


def _constraint(spec: Any) -> Constraint:
    """`bool`, None and a literal such as "auto" as `Options`; constraint objects as given."""
    if spec is bool:
        return Options(True, False)
    if spec is None or isinstance(spec, str):
        return Options(spec)
    return spec


class Key:
    """One setting: a one-line description and the values it accepts (any of `accepts`)."""

    def __init__(self, description: str, *accepts: Any):
        self.description = description
        self.accepts = tuple(_constraint(c) for c in accepts)

    @property
    def allowed(self) -> str:
        """What the key accepts, in words ("auto or a whole number >= 1")."""
        return _either([w for c in self.accepts for w in c.words()])

    def check(self, value: Any, name: str, path, noun: str) -> None:
        nested = [c for c in self.accepts if isinstance(c, Mapping)]
        if nested and isinstance(value, dict):
            check_settings(value, nested[0].table, path=path, prefix=f"{name}.", noun=noun)
        elif not any(c.accepts(value) for c in self.accepts):
            raise SarcogradeError(f"{name} {_shown(value)} is not {self.allowed}"
                                  f"{self._hint(value)}", path=path)

    def _hint(self, value: Any) -> str:
        """YAML reads 1e-4 (no dot) and quoted numbers as text: say so where a number was due."""
        if not isinstance(value, str) or not any(isinstance(c, Interval) for c in self.accepts):
            return ""
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads it as text: write numbers unquoted, and 1.0e-4 rather than 1e-4)"


def _probability(what: str) -> Key:
    return Key(f"probability of {what}, per slice", Interval(Real, 0, 1))


# `preprocess`: the volume and its slices (`sarcograde preprocess`, preprocess.Params).
PREPROCESS = {
    "spacing_mm": Key("side of the isotropic voxels the volume is resampled to",
                      Interval(Real, 0, None, "neither", "mm")),
    "size": Key("tumour slices are resized to size x size pixels",
                Interval(Integral, 8, None, unit="pixels")),
    "margin_mm": Key("tissue kept around the tumour's in-plane bounding box",
                     Interval(Real, 0, None, unit="mm")),
    "n4": Key("N4 bias-field correction inside the body (true) or none", bool),
    "n4_grid_mm": Key("spacing of the grid N4 is fitted on (0: full resolution; auto: the "
                      "coarsest keeping 3 voxels per B-spline span)",
                      "auto", Interval(Real, 0, None, unit="mm")),
    "n4_iterations": Key("N4's iterations at each fitting level, coarse to fine",
                         ListOf(Interval(Integral, 1, None))),
}

# `model`: the network (model.build_model).
MODEL = {
    "architecture": Key("densenet161 (the paper's network, its sizes fixed) or densenet (sized by "
                        "init_features, growth_rate and block_config)",
                        Options("densenet161", "densenet")),
    "init_features": Key("feature maps of the first convolution", Interval(Integral, 1, None)),
    "growth_rate": Key("feature maps each dense layer adds", Interval(Integral, 1, None)),
    "block_config": Key("dense layers in each dense block", ListOf(Interval(Integral, 1, None))),
    "pretrained": Key("initial weights: none (random), imagenet (torchvision's ImageNet "
                      "DenseNet-161) or the path of that weights file",
                      "none", "imagenet", Text("a file path")),
    "dropout": Key("dropout probability in the dense layers (default 0; stacked folds and CUDA "
                   "graphs need 0)", Interval(Real, 0, 1, "left")),
}

# `train.augment` as a mapping: the fields of config.AugmentParams.
AUGMENT = {
    "flip_p": _probability("each of the horizontal and the vertical flip"),
    "rotate_deg": Key("rotation angle drawn uniformly in [-rotate_deg, rotate_deg]",
                      Interval(Real, 0, 180, unit="degrees")),
    "rotate_p": _probability("a rotation"),
    "zoom": Key("magnification drawn uniformly in [low, high]",
                Span(Interval(Real, 0, None, "neither"), strict=False)),
    "zoom_p": _probability("a zoom"),
    "crop_min": Key("crop side drawn uniformly in [crop_min, 1] x the slice side, resized back",
                    Interval(Real, 0, 1, "right")),
    "crop_p": _probability("a crop"),
    "elastic_sd": Key("SD of the elastic control points' displacement, a fraction of the side",
                      Interval(Real, 0, None)),
    "elastic_grid": Key("elastic control points per side, bicubically interpolated",
                        Interval(Integral, 2, None)),
    "elastic_p": _probability("an elastic deformation"),
}

# `train`: the cross-validated training (the `train` stage).
TRAIN = {
    "folds": Key("folds of the stratified k-fold cross-validation", Interval(Integral, 2, None)),
    "repeats": Key("repeats of the k-fold split, each with other folds",
                   Interval(Integral, 1, None)),
    "batch_size": Key("slices per training step", Interval(Integral, 1, None)),
    "learning_rate": Key("Adam's learning rate", Interval(Real, 0, None, "neither")),
    "max_epochs": Key("epochs at most", Interval(Integral, 1, None)),
    "patience": Key("epochs without a lower validation loss before a fold stops (its best "
                    "weights restored)", Interval(Integral, 0, None)),
    "class_weights": Key("cross-entropy class weights: inverse_frequency of the training fold's "
                         "slices, or none", Options("inverse_frequency", "none")),
    "augment": Key("on-the-fly augmentation: true (train.augment's defaults), false, or a mapping "
                   "of some of train.augment's keys", bool, Mapping(AUGMENT)),
    "precision": Key("autocast precision: auto (bf16 or fp16 on a GPU, fp32 on a CPU), fp32, bf16 "
                     "or fp16 (GPU only)", Options("auto", "fp32", "bf16", "fp16")),
    "channels_last": Key("channels-last memory layout: auto (on a GPU only), true or false",
                         "auto", bool),
    "concurrent_folds": Key("folds trained side by side as one stacked network: auto (as many "
                            "as the GPU's memory holds; 1 on a CPU) or a number",
                            "auto", Interval(Integral, 1, None)),
    "cuda_graphs": Key("replay each training step from a CUDA graph (GPU)", bool),
    "checkpoint_every_s": Key("least seconds between two writes of a fold's resume state",
                              Interval(Real, 0, None, unit="seconds")),
    "threads_per_fold": Key("CPU threads each fold trains with, on every executor and machine "
                            "(another count rounds differently: part of the numbers)",
                            Interval(Integral, 1, None)),
}

# The sections of a preset and of a `--config` file.
SETTINGS = {"preprocess": PREPROCESS, "model": MODEL, "train": TRAIN}

# configs/radiomics.yaml: the volume, MIRP's features and the classifier of `radiomics-<SEQ>`.
RADIOMICS = {
    "preprocess": {k: PREPROCESS[k] for k in ("spacing_mm", "n4", "n4_grid_mm", "n4_iterations")},
    "features": {
        "families": Key("feature families computed", ListOf(Options(*FAMILIES))),
        "bin_width": Key("fixed bin width of the intensity discretisation, in z-score units",
                         Interval(Real, 0, None, "neither")),
        "intensity_range": Key("re-segmentation: voxels of the mask outside [low, high] (z-score) "
                               "are left out; high null: no upper bound",
                               Span(Interval(Real, None, None), open_above=True)),
        "min_texture_voxels": Key("texture families of a mask with fewer voxels are left empty",
                                  Interval(Integral, 0, None)),
    },
    "model": {
        "variance_threshold": Key("features whose training-fold variance is not above this are "
                                  "removed", Interval(Real, 0, None)),
        "max_correlation": Key("of each pair of features correlated above this, one is removed",
                               Interval(Real, 0, 1, "right")),
        "Cs": Key("inverse L1 penalty strengths the inner cross-validation chooses from",
                  ListOf(Interval(Real, 0, None, "neither"))),
        "inner_folds": Key("folds of the inner cross-validation that chooses C",
                           Interval(Integral, 2, None)),
    },
}

# A study's `overrides`: the preset's sections, evaluate's options and the radiomics settings.
STUDY_OVERRIDES = {**SETTINGS,
                   "evaluate": {"bootstrap": Key("bootstrap resamples of patients for the 95% CIs",
                                                 Interval(Integral, 1, None)),
                                "coverage": Key("abstention: the share of patients kept, lowest "
                                                "ensemble spread first",
                                                Interval(Real, 0, 1, "right")),
                                "recalibrate": Key("patients of each site (and of the pooled "
                                                   "sites) that fit a logistic recalibration",
                                                   Interval(Integral, 2, None))},
                   "radiomics": RADIOMICS}


class RenamedKey(NamedTuple):
    """A key of `section` once named `old`; `values`: its old values now spelt otherwise."""

    section: str
    old: str
    new: str
    values: dict[str, str]


# Every renamed key; a settings file or a study's overrides may use the old name for one more
# version (with a note), and a run trained under it resumes.
RENAMED_KEYS = (RenamedKey("train", "amp", "precision", {"none": "fp32"}),)


def renamed_keys(values: dict, *, path=None, prefix: str = "") -> dict:
    """`values` (sections of keys, from `path`) with each old key of RENAMED_KEYS under its new
    name and value, and a one-line note naming the file; both names given is an error."""
    out = dict(values)
    for renamed in RENAMED_KEYS:
        section = out.get(renamed.section)
        if not isinstance(section, dict) or renamed.old not in section:
            continue
        old, new = (f"{prefix}{renamed.section}.{k}" for k in (renamed.old, renamed.new))
        if renamed.new in section:
            raise SarcogradeError(f"{old} and {new} are one setting ({renamed.old} is its old "
                                  f"name); give {new} only", path=path)
        section = dict(section)
        value = section.pop(renamed.old)
        section[renamed.new] = renamed.values.get(value, value) if isinstance(value, str) else value
        deprecation_note(str(path or "sarcograde"), f"{old}: {value}",
                         f"{new}: {section[renamed.new]}", "name")
        out[renamed.section] = section
    return out


def _unknown(key: Any, table: dict, prefix: str, noun: str) -> str:
    known = [str(k) for k in table]
    kind = "section" if all(isinstance(e, dict) for e in table.values()) else noun
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {prefix}{close[0]}?" if close else f"known: {', '.join(known)}"
    return f"unknown {kind} {prefix}{key}; {hint}"


def check_settings(values: dict, table: dict = SETTINGS, *, path=None, prefix: str = "",
                   noun: str = "setting") -> None:
    """Hold `values` (sections of keys) against `table`; the first unknown key or section, or
    value out of its constraints, is a SarcogradeError naming `path` and `prefix` + the key."""
    for key, value in values.items():
        entry, name = table.get(key), f"{prefix}{key}"
        if entry is None:
            raise SarcogradeError(_unknown(key, table, prefix, noun), path=path)
        if isinstance(entry, Key):
            entry.check(value, name, path, noun)
        elif isinstance(value, dict):
            check_settings(value, entry, path=path, prefix=f"{name}.", noun=noun)
        else:
            raise SarcogradeError(f"{name} {_shown(value)} is not a mapping of settings",
                                  path=path)


class Documented(NamedTuple):
    section: str        # "train", "train.augment", "radiomics.features" ...
    key: str
    description: str


def describe(table: dict = SETTINGS, section: str = "") -> list[Documented]:
    """Every key of `table` with its section and description, nested tables after their key."""
    rows = []
    for key, entry in table.items():
        if isinstance(entry, dict):
            rows += describe(entry, f"{section}.{key}" if section else key)
            continue
        rows.append(Documented(section, key, entry.description))
        for nested in (c for c in entry.accepts if isinstance(c, Mapping)):
            rows += describe(nested.table, f"{section}.{key}")
    return rows
