"""The one builder of small fake caches and training runs for the tests, in the formats of
docs/artifacts.md, written through `sarcograde.formats` (the writers every stage uses).

- `write_cache(root, patients)`: a CACHE of given slices; `graded_cache(root, grades)`: a CACHE
  of random tumour slices whose texture follows the grade (something to learn).
- `write_run(root, models)`: a RUN with folds.json and fold_XX/model.pt of given networks;
  `calibrated_model(seed)`: a tiny quick-preset DenseNet with realistic batch-norm statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sarcograde import model as model_lib
from sarcograde.formats.cache import write_cache_config, write_index, write_patient
from sarcograde.formats.run import Folds, write_folds
from sarcograde.splits import Split

SIZE = 32
MODEL_CFG = {"architecture": "densenet", "init_features": 16, "growth_rate": 8,
             "block_config": [2, 4, 4], "pretrained": "none"}
PREPROCESS = {"sequence": "T1", "spacing_mm": 1.0, "size": SIZE, "margin_mm": 10.0, "n4": True,
              "n4_grid_mm": 6.0, "n4_iterations": [20, 20]}


# ------------------------------------------------------------------------------- slices

def synthetic_slices(rng: np.random.Generator, n: int, size: int = SIZE, brightness: float = 0.0):
    """z-scored noise slices with a disc-shaped tumour (brighter by `brightness`) and its mask."""
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2).astype(np.uint8)
    image = rng.normal(size=(n, size, size)) + brightness * mask
    return image.astype(np.float16), np.repeat(mask[None], n, axis=0)


def tumour_slices(rng: np.random.Generator, n: int, high: bool, size: int = SIZE) -> np.ndarray:
    """z-scored slices of a tumour disc: high grade is bright and coarsely textured, low grade
    dim and smooth; position, radius and noise vary per slice."""
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        radius = rng.uniform(0.15, 0.3) * size
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        image = rng.normal(0, 0.7, (size, size))
        if high:
            texture = np.kron(rng.normal(0, 1.5, (size // 4, size // 4)), np.ones((4, 4)))
            image += disc * (1.5 + texture)
        else:
            image += disc * 0.5
        out[i] = image
    return out.astype(np.float16)


def cohort(n_low: int, n_high: int, n_unknown: int = 0) -> dict[str, int | None]:
    """Grades (FNCLCC 1-3, None = unknown) of L00.., H00.., U00.."""
    grades = {f"L{i:02d}": 1 for i in range(n_low)}
    grades.update({f"H{i:02d}": 2 + i % 2 for i in range(n_high)})
    grades.update({f"U{i:02d}": None for i in range(n_unknown)})
    return grades


# ------------------------------------------------------------------------------- caches

def write_cache(root: Path, patients: dict[str, dict], preprocess: dict | None = None,
                manifest: str | None = "/cohort/manifest.csv") -> Path:
    """A CACHE folder as `preprocess` writes it. `patients` maps id -> {"image", "mask",
    "grade" (or None), "pixel_mm" (optional, default 1.5), "key" (optional)}."""
    root = Path(root)
    config = dict(preprocess or PREPROCESS)
    if manifest is not None:
        config["manifest"] = manifest
    write_cache_config(root, config)
    rows = []
    for pid, p in patients.items():
        n = len(p["image"])
        pixel_mm = np.full(n, p.get("pixel_mm", 1.5))
        area = p["mask"].sum(axis=(1, 2)) * pixel_mm ** 2
        key = p.get("key", f"key-{pid}-{p.get('version', 0)}")
        write_patient(root / "patients" / f"{pid}.npz", {
            "image": p["image"], "mask": p["mask"], "z_mm": np.arange(n, dtype=float),
            "area_mm2": area, "pixel_mm": pixel_mm, "spacing": np.ones(3),
            "origin": np.zeros(3), "direction": np.eye(3).ravel(),
            "crop_index": np.zeros(2, np.int64), "tumour_volume_ml": np.float64(area.sum() / 1000),
            "key": np.array(key)})
        grade = p.get("grade")
        rows.append({"patient_id": pid, "sequence": config.get("sequence", "T1"), "site": "A",
                     "grade": "" if grade is None else grade,
                     "label": "" if grade is None else int(grade >= 2), "n_slices": n,
                     "tumour_volume_ml": area.sum() / 1000, "npz": f"patients/{pid}.npz",
                     "key": key})
    write_index(root, rows)
    return root


def graded_cache(root: Path, grades: dict[str, int | None], seed: int = 0, size: int = SIZE,
                 slices: tuple[int, int] = (4, 9)) -> Path:
    """A CACHE of the patients in `grades` with `tumour_slices` (4-8 per patient)."""
    rng = np.random.default_rng(seed)
    patients = {}
    for pid, grade in grades.items():
        n = int(rng.integers(*slices))
        high = bool(rng.integers(2)) if grade is None else grade >= 2
        image = tumour_slices(rng, n, high, size)
        patients[pid] = {"image": image, "mask": (np.abs(image) > 1).astype(np.uint8),
                         "grade": grade, "pixel_mm": 1.0, "key": f"k{pid}{seed}"}
    return write_cache(root, patients, {"sequence": "T1", "spacing_mm": 1.0, "size": size,
                                        "margin_mm": 10.0}, manifest=None)


# ------------------------------------------------------------------------------- runs

def calibrated_model(seed: int, size: int = SIZE) -> torch.nn.Module:
    """A randomly initialised quick-preset DenseNet whose batch-norm statistics were estimated
    on synthetic slices, so that its activations (and bf16 rounding) are those of a real one."""
    torch.manual_seed(seed)
    net = model_lib.build_model(MODEL_CFG)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass gives the batch statistics exactly
    images, _ = synthetic_slices(np.random.default_rng(seed), 64, size, brightness=2.0)
    net.train()
    with torch.no_grad():
        net(model_lib.prepare_input(images, model_lib.input_meta(size, pretrained=False)))
    return net.eval()


def write_run(root: Path, models: list[torch.nn.Module], preprocess: dict | None = None,
              sizes: list[int] | None = None, model_cfg: dict | None = None) -> Path:
    """A RUN folder as `train` writes it: folds.json and fold_XX/model.pt."""
    root = Path(root)
    preprocess = preprocess or PREPROCESS
    splits = []
    for k, net in enumerate(models):
        name = f"fold_{k:02d}"
        size = (sizes or [preprocess["size"]] * len(models))[k]
        model_lib.save_fold_model(root / name / "model.pt", net, model_cfg=model_cfg or MODEL_CFG,
                                  input_meta=model_lib.input_meta(size, pretrained=False),
                                  preprocess_cfg={**preprocess, "manifest": "/train/manifest.csv"},
                                  best_epoch=1, repeat=0, fold=k)
        splits.append(Split(name=name, repeat=0, fold=k, train=[], val=[]))
    write_folds(root, Folds(folds=len(models), repeats=1, seed=0, splits=splits))
    return root
