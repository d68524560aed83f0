"""STUDY.yaml: read, check and resolve it into a `Study` (docs/study.md describes every key).

Every problem is one `SarcogradeError` naming the YAML file and the key (or manifest) at fault,
raised before any stage runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import model_kinds as kinds
from ..cohort import is_missing, read_table
from ..config import PRESETS
from ..config_schema import SETTINGS, STUDY_OVERRIDES, check_settings, renamed_keys
from ..errors import SarcogradeError

KEYS = {"train", "test", "sequences", "target", "preset", "models", "seed", "overrides", "model"}
# `model: PKG` (a received model package) replaces training: `train` is then needed only by the
# baselines and radiomics, and `sequences` defaults to the package's.
REQUIRED = ("test",)
# Model kinds a study can list (model_kinds names their models). Radiomics is listed
# explicitly: it is not run by default; nor is fusion with one sequence, which has none to fuse.
MODELS = kinds.STUDY_KINDS
BASELINES = kinds.BASELINES
# The `overrides` section holding configs/radiomics.yaml's sections.
RADIOMICS = "radiomics"
RESERVED_SITES = {"train", kinds.POOLED}
_NAME = re.compile(kinds.SEQUENCE_NAME)  # site and sequence names; model names take the same


@dataclass(frozen=True)
class Study:
    path: Path                       # the YAML file
    train: Path | None               # training manifest (None: a package study without one)
    test: dict[str, Path]            # site -> manifest, in the YAML's order
    sequences: list[str]
    target: str
    preset: str
    models: list[str]
    seed: int
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: Path | None = None        # a model package graded instead of training DL models

    @property
    def cohorts(self) -> dict[str, Path]:
        """Every cohort by name: `train` first (where there is one), then the test sites."""
        return {**({"train": self.train} if self.train is not None else {}), **self.test}

    def model_names(self) -> list[str]:
        """The models' names (DL-<SEQ>, DL-fusion, radiomics-<SEQ>, clinical, volume,
        clinical+volume; PKG-<SEQ> and PKG-fusion for a package's), which name their
        prediction files."""
        names = kinds.study_models(self.models, self.sequences)
        if self.model is None:
            return names
        received = {kinds.name(kinds.DL, seq): kinds.name(kinds.PACKAGE, seq)
                    for seq in self.sequences}
        received[kinds.name(kinds.FUSION)] = kinds.name(kinds.PACKAGE_FUSION)
        return [received.get(name, name) for name in names]

    def as_dict(self) -> dict[str, Any]:
        """The study as resolved (defaults filled in, paths absolute or as given), for
        study.json's `config`."""
        return {"train": None if self.train is None else str(self.train),
                "test": {site: str(m) for site, m in self.test.items()},
                "sequences": list(self.sequences), "target": self.target, "preset": self.preset,
                "models": list(self.models), "seed": self.seed, "overrides": self.overrides,
                **({"model": str(self.model)} if self.model is not None else {})}

    @property
    def config_overrides(self) -> dict[str, dict]:
        """The overrides that are preset sections (preprocess, model, train)."""
        return {k: v for k, v in self.overrides.items() if k in SETTINGS}


def _fail(path: Path, message: str) -> SarcogradeError:
    return SarcogradeError(message, path=path)


def _name(path: Path, value: Any, what: str) -> str:
    text = str(value)
    if not _NAME.fullmatch(text):
        raise _fail(path, f"{what} {text!r} must be letters, digits, '_', '.', '-'")
    return text


def default_models(sequences: list[str], package=None, train: Path | None = None) -> list[str]:
    """The model kinds of a study without `models:`: all but radiomics, and fusion only where
    there are two sequences or more to fuse; with a model package, its fusion only where it has
    one, and the baselines only where there is a training cohort to fit them on."""
    if package is not None:
        fused = package.fusion is not None and len(sequences) > 1
        return [m for m in MODELS if m == kinds.DL or (m == kinds.FUSION and fused)
                or (m in BASELINES and train is not None)]
    return [m for m in MODELS
            if m != kinds.RADIOMICS and (m != kinds.FUSION or len(sequences) > 1)]


def _package(path: Path, value: Any):
    """The `model:` package, verified (checksums, format), or None."""
    if value in (None, ""):
        return None
    from ..formats.package import read_package

    if not isinstance(value, str):
        raise _fail(path, "model must be the path of a model package (folder or zip)")
    package_path = Path(value).expanduser()
    package_path = package_path if package_path.is_absolute() else path.parent / package_path
    if not package_path.exists():
        raise _fail(path, f"model: model package not found: {package_path}")
    return read_package(package_path)


def _check_package_models(path: Path, models: list, package, sequences: list[str],
                          train: Path | None) -> None:
    """What a study can do with a received package: grade with its models (dl), its fusion
    where it has one and every sequence is graded, and fit the baselines or radiomics only on
    a training cohort of its own."""
    if kinds.DL not in models:
        raise _fail(path, "models: with a model package, list dl (the package's models)")
    if kinds.FUSION in models and (package.fusion is None or
                                   set(sequences) != set(package.sequences)):
        raise _fail(path, "models: fusion needs the package's fusion and all its sequences "
                          f"({', '.join(package.sequences)})")
    needs_train = [m for m in models if m in (*BASELINES, kinds.RADIOMICS)]
    if needs_train and train is None:
        raise _fail(path, f"models: {needs_train[0]} is fitted on the training cohort: give "
                          "train, or leave it out")


def _manifest(path: Path, value: Any, what: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"{what} must be the path of a manifest CSV")
    manifest = Path(value).expanduser()
    manifest = manifest if manifest.is_absolute() else path.parent / manifest
    if not manifest.is_file():
        raise _fail(path, f"{what}: manifest not found: {manifest}")
    return manifest


def _check_target(path: Path, target: str, manifests: dict[str, Path]) -> None:
    """A target other than grade must be a 0/1 column of every manifest, both classes in train."""
    for cohort, manifest in manifests.items():
        frame = read_table(manifest)
        if target not in frame.columns:
            raise _fail(path, f"target {target!r} is not a column of the {cohort} manifest "
                              f"{manifest}")
        values = {str(v).strip() for v in frame[target] if not is_missing(v)}
        bad = sorted(values - {"0", "1", "0.0", "1.0"})
        if bad:
            raise _fail(path, f"target {target!r} must be 0/1 (or empty for unknown); the "
                              f"{cohort} manifest {manifest} has {bad[0]!r}")
        if cohort == "train" and len({float(v) for v in values}) < 2:
            raise _fail(path, f"target {target!r} has one class only in the training manifest")


def _check_overrides(path: Path, overrides: Any) -> dict[str, dict]:
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise _fail(path, "overrides must map a stage to its options, e.g. train: {max_epochs: 2}")
    overrides = renamed_keys(overrides, path=path, prefix="overrides.")
    check_settings(overrides, STUDY_OVERRIDES, path=path, prefix="overrides.")
    return {str(k): dict(v) for k, v in overrides.items()}


def load_study(path: str | Path) -> Study:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(path, f"cannot read study file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise _fail(path, f"not valid YAML{line}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise _fail(path, "a study file is a mapping of keys (train, test, sequences, ...)")
    unknown = set(raw) - KEYS
    if unknown:
        raise _fail(path, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                          f"a study has {', '.join(sorted(KEYS))}")
    for key in REQUIRED:
        if raw.get(key) in (None, "", [], {}):
            raise _fail(path, f"missing key {key!r}")

    package = _package(path, raw.get("model"))
    if raw.get("train") in (None, "") and package is None:
        raise _fail(path, "missing key 'train' (or 'model', a received model package)")
    train = None if raw.get("train") in (None, "") else _manifest(path, raw["train"], "train")
    if not isinstance(raw["test"], dict):
        raise _fail(path, "test must map each external site's name to its manifest")
    test = {}
    for site, manifest in raw["test"].items():
        site = _name(path, site, "test site")
        if site in RESERVED_SITES:
            raise _fail(path, f"test site name {site!r} is reserved; choose another")
        test[site] = _manifest(path, manifest, f"test.{site}")

    sequences = raw.get("sequences")
    if sequences in (None, "", []) and package is not None:
        sequences = package.sequences
    elif sequences in (None, "", []):
        raise _fail(path, "missing key 'sequences'")
    if isinstance(sequences, str):
        sequences = [sequences]
    if not isinstance(sequences, list) or len(set(map(str, sequences))) != len(sequences):
        raise _fail(path, "sequences must be a list of distinct sequence names")
    sequences = [_name(path, s, "sequence") for s in sequences]
    if package is not None:
        unknown = [s for s in sequences if s not in package.sequences]
        if unknown:
            raise _fail(path, f"sequence {unknown[0]!r} is not one the model package grades "
                              f"({', '.join(package.sequences)})")
    manifests = {**({"train": train} if train is not None else {}), **test}
    for cohort, manifest in manifests.items():
        columns = set(read_table(manifest).columns)
        for seq in sequences:
            if f"image_{seq}" not in columns:
                have = sorted(c[len("image_"):] for c in columns if c.startswith("image_"))
                raise _fail(path, f"unknown sequence {seq!r}: the {cohort} manifest {manifest} "
                                  f"has no image_{seq} column (it has {', '.join(have) or 'none'})")

    target = str(raw.get("target") or "grade")
    if target != "grade":
        _check_target(path, target, manifests)

    preset = str(raw.get("preset") or "paper")
    if preset not in PRESETS:
        raise _fail(path, f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")

    models = raw.get("models", default_models(sequences, package, train))
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not models:
        raise _fail(path, f"models must be a list of {', '.join(MODELS)}")
    bad = [str(m) for m in models if m not in MODELS]
    if bad:
        raise _fail(path, f"unknown model {bad[0]!r}; choose from {', '.join(MODELS)}")
    if kinds.DL not in models and kinds.RADIOMICS not in models:
        raise _fail(path, "models must include dl or radiomics: the baselines are compared "
                          "against them")
    listed = [m for m in BASELINES if m in models]
    if listed and len(listed) < len(BASELINES):
        raise _fail(path, f"models: {', '.join(BASELINES)} are fitted together by evaluate; "
                          "list all three or none")
    if kinds.FUSION in models and kinds.DL not in models:
        raise _fail(path, "models: fusion combines the DL models; list dl too")
    if kinds.FUSION in models and len(sequences) < 2:
        raise _fail(path, "models: fusion needs at least two sequences")
    if package is not None:
        _check_package_models(path, models, package, sequences, train)

    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _fail(path, f"seed must be an integer, not {seed!r}")
    return Study(path=path, train=train, test=test, sequences=sequences, target=target,
                 preset=preset, models=[m for m in MODELS if m in models], seed=seed,
                 overrides=_check_overrides(path, raw.get("overrides")),
                 model=None if package is None else package.path)
