"""The radiomics settings: `configs/radiomics.yaml`, optionally overridden by a user's file.

One file holds the preprocessing of the volume, MIRP's extraction settings and the classifier's;
both files are held against the settings table (`config_schema.RADIOMICS`): an unknown key or an
invalid value is a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..config import merge
from ..config_schema import RADIOMICS, check_settings
from ..errors import SarcogradeError
from ..preprocess import Params
from .families import FAMILIES, TEXTURE

__all__ = ["FAMILIES", "TEXTURE", "VOLUME_KEYS", "Settings", "load_settings", "settings_from"]

# `preprocess` keys that change the volume (size and margin only concern the DL slice crops).
VOLUME_KEYS = tuple(RADIOMICS["preprocess"])
NOUN = "radiomics setting"


def _read_yaml(text: str, path) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SarcogradeError(f"cannot read radiomics settings: {' '.join(str(exc).split())}",
                              path=path) from None
    if not isinstance(data, dict):
        raise SarcogradeError("radiomics settings must be a mapping of sections", path=path)
    return data


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


def _features(f: dict) -> dict:
    """The checked `features` section with its numbers as floats and ints (they are hashed)."""
    low, high = f["intensity_range"]
    return {"families": list(f["families"]), "bin_width": float(f["bin_width"]),
            "intensity_range": [float(low), None if high is None else float(high)],
            "min_texture_voxels": int(f["min_texture_voxels"])}


def _model(m: dict) -> dict:
    return {"variance_threshold": float(m["variance_threshold"]),
            "max_correlation": float(m["max_correlation"]), "Cs": [float(c) for c in m["Cs"]],
            "inner_folds": int(m["inner_folds"])}


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
    config = _read_yaml(shipped.read_text(encoding="utf-8"), shipped)
    check_settings(config, RADIOMICS, path=shipped, noun=NOUN)
    check_settings(user, RADIOMICS, path=path, noun=NOUN)
    config = merge(config, user)
    return Settings(preprocess=Params.from_config(config["preprocess"]),
                    features=_features(config["features"]), model=_model(config["model"]))
