"""What `fusion fit` writes into its folder (docs/artifacts.md): model.json, the logistic
regressions of the late fusion (`sarcograde.fusion`), read by `fusion apply`."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import write_json
from ..errors import SarcogradeError
from .common import read_json_object

FUSION_MODEL = "model.json"
RERUN = "fusion fit"


def write_fusion_model(folder: Path, model: dict) -> Path:
    path = Path(folder) / FUSION_MODEL
    write_json(path, model)
    return path


def read_fusion_model(path: Path, name: str) -> dict:
    """A fusion model.json whose `model` is `name` (DL-fusion), with its sequences and models."""
    if not Path(path).is_file():
        raise SarcogradeError(f"fusion {FUSION_MODEL} not found", path=path)
    model = read_json_object(path, RERUN)
    if model.get("model") != name or not {"sequences", "models"} <= set(model):
        raise SarcogradeError(f"not a fusion {FUSION_MODEL} (written by `sarcograde {RERUN}`)",
                              path=path)
    return model
