"""The radiomics settings: `configs/radiomics.yaml`, optionally overridden by a user's file.

One file holds the preprocessing of the volume, MIRP's extraction settings and the classifier's;
unknown or invalid keys are a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..config import merge
from ..errors import SarcogradeError
from ..preprocess import Params

# The feature classes of the issue, by their names here, and the prefix of MIRP's feature names.
FAMILIES = {"morphology": "morph_", "statistics": "stat_", "glcm": "cm_", "glrlm": "rlm_",
            "glszm": "szm_", "ngtdm": "ngt_", "ngldm": "ngl_"}
TEXTURE = ("glcm", "glrlm", "glszm", "ngtdm", "ngldm")
# `preprocess` keys that change the volume (size and margin only concern the DL slice crops).
VOLUME_KEYS = ("spacing_mm", "n4", "n4_grid_mm", "n4_iterations")


def _read_yaml(text: str, path) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SarcogradeError(f"cannot read radiomics settings: {' '.join(str(exc).split())}",
                              path=path) from None
    if not isinstance(data, dict):
        raise SarcogradeError("radiomics settings must be a mapping of sections", path=path)
    return data


def _unknown(given: dict, known: dict, where: str, path) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        raise SarcogradeError(f"unknown radiomics setting(s) in {where}: {', '.join(extra)}",
                              path=path)


@dataclass(frozen=True)
class Settings:
    preprocess: Params
    features: dict[str, Any]
    model: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"preprocess": {k: self.preprocess.as_dict()[k] for k in VOLUME_KEYS},
                "features": self.features, "model": self.model}

    def extraction(self) -> dict[str, Any]:
        """What the features depend on (the cache key's settings part)."""
        fields = self.preprocess.key_fields()
        return {"preprocess": {k: fields[k] for k in VOLUME_KEYS if k in fields},
                "features": self.features}


def _check_features(f: dict, path) -> dict:
    families = f["families"]
    if isinstance(families, str):
        families = [families]
    bad = [x for x in families if x not in FAMILIES]
    if bad or not families:
        raise SarcogradeError(f"radiomics features.families: unknown {bad or 'empty list'}; "
                              f"choose from {', '.join(FAMILIES)}", path=path)
    low_high = f["intensity_range"]
    try:
        bin_width = float(f["bin_width"])
        lower = float(low_high[0])
        upper = None if low_high[1] is None else float(low_high[1])
        min_voxels = int(f["min_texture_voxels"])
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise SarcogradeError(f"invalid radiomics features setting: {exc}", path=path) from None
    if not bin_width > 0 or len(low_high) != 2 or (upper is not None and upper <= lower):
        raise SarcogradeError("radiomics features: bin_width must be > 0 and intensity_range "
                              "[lower, upper or null] with upper > lower", path=path)
    return {"families": list(families), "bin_width": bin_width, "intensity_range": [lower, upper],
            "min_texture_voxels": min_voxels}


def _check_model(m: dict, path) -> dict:
    try:
        model = {"variance_threshold": float(m["variance_threshold"]),
                 "max_correlation": float(m["max_correlation"]),
                 "Cs": [float(c) for c in m["Cs"]], "inner_folds": int(m["inner_folds"])}
    except (TypeError, ValueError, KeyError) as exc:
        raise SarcogradeError(f"invalid radiomics model setting: {exc}", path=path) from None
    if (model["variance_threshold"] < 0 or not 0 < model["max_correlation"] <= 1
            or not model["Cs"] or min(model["Cs"]) <= 0 or model["inner_folds"] < 2):
        raise SarcogradeError("radiomics model: variance_threshold >= 0, 0 < max_correlation "
                              "<= 1, Cs positive numbers and inner_folds >= 2", path=path)
    return model


def load_settings(file: str | Path | None = None) -> Settings:
    """The shipped settings, with `file`'s values on top."""
    if file is None:
        return settings_from({}, None)
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SarcogradeError(f"cannot read radiomics settings: {exc.strerror}",
                              path=path) from None
    return settings_from(_read_yaml(text, path), path)


def settings_from(user: dict, path) -> Settings:
    """The shipped settings with `user`'s sections on top (a study's `overrides.radiomics`);
    `path` is the file named in errors."""
    shipped = resources.files("sarcograde").joinpath("configs", "radiomics.yaml")
    config = _read_yaml(shipped.read_text(encoding="utf-8"), "radiomics.yaml")
    _unknown(user, config, "the file", path)
    for section, values in user.items():
        if not isinstance(values, dict):
            raise SarcogradeError(f"radiomics section {section} must be a mapping", path=path)
        _unknown(values, config[section], section, path)
    config = merge(config, user)
    return Settings(preprocess=Params.from_config(config["preprocess"]),
                    features=_check_features(config["features"], path),
                    model=_check_model(config["model"], path))
