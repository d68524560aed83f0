"""Repeated stratified k-fold cross-validation over patients (never over slices).

Each repeat is a `StratifiedKFold` with its own shuffle seed (seed + repeat), so every patient is
validated exactly once per repeat, and the class balance of each fold follows the cohort's.
Where the minority class has fewer patients than folds, the number of folds is reduced to what
that class allows (at least 2), and the adaptation is reported, not hidden.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold

from . import LABELS
from .errors import SarcogradeError


@dataclass(frozen=True)
class Split:
    name: str          # fold_XX, XX = repeat * folds + fold
    repeat: int
    fold: int
    train: list[str]   # patient ids
    val: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def make_splits(patient_ids: list[str], labels: np.ndarray, folds: int, repeats: int,
                seed: int) -> tuple[list[Split], str | None]:
    """The `folds` x `repeats` patient splits, and a sentence saying how they were adapted (or None).

    `labels` are 0 (low) / 1 (high) per patient; patients of unknown grade must be left out first.
    """
    labels = np.asarray(labels)
    if len(labels) != len(patient_ids) or not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1, one per patient")
    if folds < 2 or repeats < 1:
        raise SarcogradeError(f"cross-validation needs folds >= 2 and repeats >= 1 "
                              f"(asked: {folds} folds, {repeats} repeats)")
    counts = np.bincount(labels, minlength=2)
    minority = int(np.argmin(counts))
    n_min = int(counts[minority])
    if n_min < 2:
        raise SarcogradeError(
            f"stratified cross-validation needs at least 2 patients of each grade; the cohort "
            f"has {counts[0]} low-grade and {counts[1]} high-grade patients with a known grade")
    adaptation = None
    if n_min < folds:
        adaptation = (f"only {n_min} {LABELS[minority]}-grade patients: stratified {folds}-fold "
                      f"cross-validation is impossible, so {n_min} folds were used")
        folds = n_min
    ids = np.asarray(patient_ids)
    splits = []
    for repeat in range(repeats):
        kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + repeat)
        for fold, (train, val) in enumerate(kfold.split(ids, labels)):
            splits.append(Split(name=f"fold_{repeat * folds + fold:02d}", repeat=repeat,
                                fold=fold, train=sorted(ids[train].tolist()),
                                val=sorted(ids[val].tolist())))
    return splits, adaptation
