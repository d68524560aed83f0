"""Presets (`paper`, `quick`) and user overrides, merged into one plain dict per run, each source
held against the settings table (`config_schema`) first; the `train.augment` settings read from
it (`AugmentParams`, used by `data` and described by `report`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config_schema import check_settings, renamed_keys
from .errors import SarcogradeError

PRESETS = ("paper", "quick")


def load_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise SarcogradeError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    source = resources.files("sarcograde").joinpath("configs", f"{name}.yaml")
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    check_settings(config, path=source)
    config["preset"] = name
    return config


def merge(base: dict, override: dict) -> dict:
    """Recursively merge `override` into a copy of `base`; None values in `override` are ignored."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(preset: str = "paper", file: str | Path | None = None,
                overrides: dict | None = None) -> dict[str, Any]:
    """The preset, then a YAML file's values, then command-line overrides (None: not given), each
    on top; each is checked against the settings table first."""
    config = load_preset(preset)
    if file is not None:
        path = Path(file)
        try:
            user = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SarcogradeError(f"cannot read config: {exc}", path=path) from None
        if not isinstance(user, dict):
            raise SarcogradeError("config must be a mapping of sections", path=path)
        user = renamed_keys(user, path=path)
        check_settings(user, path=path)
        config = merge(config, user)
    given = _given(overrides or {})
    check_settings(given)
    return merge(config, given)


def _given(overrides: dict) -> dict:
    """The overrides without their None values (options not given)."""
    return {key: _given(value) if isinstance(value, dict) else value
            for key, value in overrides.items() if value is not None}


@dataclass(frozen=True)
class AugmentParams:
    """On-the-fly augmentation of the paper (section 2.5); each part drawn per slice.

    Probabilities are per slice and part; sizes are fractions of the slice side, so the same
    settings suit 64- and 224-pixel slices.
    """

    flip_p: float = 0.5             # each of the horizontal and the vertical flip
    rotate_deg: float = 15.0        # rotation angle uniform in [-rotate_deg, rotate_deg]
    rotate_p: float = 0.5
    zoom: tuple[float, float] = (0.9, 1.1)   # magnification, uniform in this range
    zoom_p: float = 0.5
    crop_min: float = 0.8           # crop side uniform in [crop_min, 1] x side, resized back
    crop_p: float = 0.5
    elastic_sd: float = 0.02        # SD of control-point displacement, fraction of the side
    elastic_grid: int = 5           # control points per side, smoothly (bicubic) interpolated
    elastic_p: float = 0.3

    @classmethod
    def from_config(cls, value: bool | dict | None) -> "AugmentParams | None":
        """`train.augment`: true (the defaults above), false, or a mapping of some of the fields
        (held against the settings table)."""
        if value is False:
            return None
        if value is True:
            return cls()
        check_settings({"train": {"augment": value}})
        return cls(**{**value, "zoom": tuple(value.get("zoom", cls.zoom))})
