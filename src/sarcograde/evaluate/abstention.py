"""Abstention by the ensemble's spread: per model whose predictions carry p_high_sd, the
selective-prediction curve (AUC and accuracy of the patients kept against the share kept) and
every metric, with bootstrap CIs, on the share `--coverage` of the most reliable patients."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..formats.evaluation import SELECTIVE_COLUMNS
from ..formats.predictions import SPREAD
from ..stats import bootstrap, most_reliable, n_kept, selective_curve
from .inputs import Inputs
from .metrics import ALL_METRICS, ARGMAX, Scored, estimates, metric_statistic, number

DEFAULT_COVERAGE = 0.9
SCORE = (f"{SPREAD}: the SD of p_high over the ensemble's fold models (lower is more reliable); "
         "the share kept holds the patients with the lowest spread, ties in patient order, "
         "selected again within each bootstrap resample")


def _no_spread(spread: np.ndarray | None) -> str | None:
    if spread is None:
        return (f"not computable: the predictions have no {SPREAD} column (a fusion, a "
                "baseline or out-of-fold predictions)")
    if not np.isfinite(spread).all():
        return (f"not computable: {SPREAD} is empty for some patients (an ensemble of one "
                "model has no spread)")
    return None


def kept_block(y: np.ndarray, p: np.ndarray, spread: np.ndarray, coverage: float,
               indices: np.ndarray) -> dict:
    """Every metric on the ceil(coverage * n) patients with the lowest spread, its CI from the
    same resamples with the selection redone in each."""
    k = n_kept(len(y), coverage)
    kept = most_reliable(spread, np.arange(len(y)), k)
    statistic = metric_statistic(ARGMAX, ALL_METRICS)
    samples = bootstrap(statistic, y, p, most_reliable(spread, indices, k))
    return {"n_kept": k, "n": len(y), "max_spread": number(spread[kept].max()),
            **estimates(statistic(y[kept], p[kept]), samples, y[kept], ALL_METRICS)}


def abstention(inputs: Inputs, models: list[Scored], y: np.ndarray, indices: np.ndarray,
               coverage: float) -> tuple[dict, pd.DataFrame]:
    """metrics.json's `abstention` and selective_prediction.csv (the models with a spread)."""
    blocks, frames = {}, []
    for model in models:
        spread = inputs.spreads.get(model.name)
        note = _no_spread(spread)
        if note:
            blocks[model.name] = {"note": note}
            continue
        blocks[model.name] = kept_block(y, model.p, spread, coverage, indices)
        curve = selective_curve(y, model.p, spread, ARGMAX)
        frames.append(pd.DataFrame({"model": model.name, **curve}))
    curves = (pd.concat(frames, ignore_index=True) if frames
              else pd.DataFrame(columns=list(SELECTIVE_COLUMNS)))
    return ({"coverage": coverage, "score": SCORE, "threshold": ARGMAX, "models": blocks},
            curves[list(SELECTIVE_COLUMNS)])
