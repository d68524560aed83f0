"""The documentation lives in the repository: no user-facing text points to a file outside it,
and every settings key of the shipped presets and radiomics settings is described in
docs/stages.md."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from sarcograde.config import AugmentParams

REPO = Path(__file__).resolve().parents[1]
USER_FACING = [REPO / "README.md", REPO / "docs", REPO / "examples", REPO / "src"]
CONFIGS = sorted((REPO / "src" / "sarcograde" / "configs").glob("*.yaml"))
STAGES = REPO / "docs" / "stages.md"
# The developers' design contract: not in the repository a user clones.
OUTSIDE = "DESIGN.md"


def built(path: Path) -> bool:
    """Build output beside the sources (bytecode, an editable install's metadata), not text."""
    return any(part == "__pycache__" or part.endswith(".egg-info") for part in path.parts)


def user_facing_files() -> list[Path]:
    files = []
    for root in USER_FACING:
        candidates = [root] if root.is_file() else sorted(root.rglob("*"))
        files += [p for p in candidates if p.is_file() and not built(p.relative_to(REPO))]
    return files


def sections_and_keys(mapping: dict) -> tuple[list[str], list[str]]:
    """A settings file's sections (mappings, at any depth) and its other keys."""
    sections, keys = [], []
    for key, value in mapping.items():
        if isinstance(value, dict):
            sections.append(str(key))
            inner_sections, inner_keys = sections_and_keys(value)
            sections += inner_sections
            keys += inner_keys
        else:
            keys.append(str(key))
    return sections, keys


def documented_in_a_table(key: str, text: str) -> bool:
    """`key` is a cell of one of the page's tables (`| `key` |`)."""
    return re.search(rf"\|\s*`{re.escape(key)}`\s*\|", text) is not None


def test_no_user_facing_text_mentions_the_design_contract():
    found = [f"{path.relative_to(REPO)}:{number}"
             for path in user_facing_files()
             for number, line in enumerate(path.read_bytes().decode("utf-8", "replace")
                                           .splitlines(), start=1)
             if OUTSIDE in line]
    assert not found, f"{OUTSIDE} is not in the repository a user clones; mentioned in {found}"


def test_the_settings_files_are_found():
    assert {p.name for p in CONFIGS} >= {"paper.yaml", "quick.yaml", "radiomics.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_settings_key_is_described_in_stages_md(config):
    text = STAGES.read_text(encoding="utf-8")
    sections, keys = sections_and_keys(yaml.safe_load(config.read_text(encoding="utf-8")))
    undocumented = [k for k in keys if not documented_in_a_table(k, text)]
    assert not undocumented, f"docs/stages.md has no table row for {config.name}'s {undocumented}"
    unnamed = [s for s in sections if f"`{s}`" not in text]
    assert not unnamed, f"docs/stages.md never names {config.name}'s section(s) {unnamed}"


def test_every_augmentation_setting_is_described_in_stages_md():
    text = STAGES.read_text(encoding="utf-8")
    missing = [f.name for f in fields(AugmentParams) if f"`{f.name}`" not in text]
    assert not missing, f"docs/stages.md does not describe train.augment's {missing}"
