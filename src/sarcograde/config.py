"""Presets (`paper`, `quick`) and user overrides, merged into one plain dict per run."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import SarcogradeError

PRESETS = ("paper", "quick")


def load_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise SarcogradeError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("sarcograde").joinpath("configs", f"{name}.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
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
    """The preset, then a YAML file's values, then command-line overrides, each on top."""
    config = load_preset(preset)
    if file is not None:
        path = Path(file)
        try:
            user = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SarcogradeError(f"cannot read config: {exc}", path=path) from None
        if not isinstance(user, dict):
            raise SarcogradeError("config must be a mapping of sections", path=path)
        unknown = set(user) - set(config) - {"preset"}
        if unknown:
            raise SarcogradeError(f"unknown config section(s): {', '.join(sorted(unknown))}",
                                  path=path)
        config = merge(config, user)
    return merge(config, overrides or {})
