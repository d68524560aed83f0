"""One patient's result from the sequences' predictions: p_high (fused where the package has a
fusion), the grade at the package's threshold, the ensemble's spread, the borderline flag, the QA
flags in words. Pure rules on numbers: no file is read here."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import fusion as fusion_lib
from ..acquisition import FLAG as ACQUISITION_FLAG
from ..stats import recalibrated

BORDERLINE = 0.02  # a p_high this close to the threshold (or closer) is flagged borderline
HIGH, LOW = "high", "low"
# the package's recalibration as grade.json repeats it
RECALIBRATION_SHOWN = ("site", "n", "fit", "intercept", "slope", "previous_package")
ACQUISITION_NOT_CHECKED = "no sequence's acquisition was compared with the training cohort's"


def is_borderline(p_high: float, threshold: float) -> bool:
    """True when |p_high - threshold| <= BORDERLINE (a tiny margin absorbs float rounding)."""
    return abs(p_high - threshold) <= BORDERLINE + 1e-12


def grade_of(p_high: float, threshold: float) -> str:
    """High grade when p_high > threshold (the package's rule)."""
    return HIGH if p_high > threshold else LOW


def spread(per_model: list[float]) -> dict:
    """SD (sample, undefined for one model) and range of the fold models' p_high."""
    values = np.asarray(per_model, dtype=float)
    sd = float(values.std(ddof=1)) if len(values) > 1 else None
    return {"n_models": len(values), "sd": sd, "min": float(values.min()),
            "max": float(values.max())}


def fused(fusion_model: dict, p_high: dict[str, float]) -> float:
    """The fusion applied to the sequences' p_high (those the patient has)."""
    frames = {seq: pd.DataFrame({"patient_id": ["patient"], "p_high": [p]})
              for seq, p in p_high.items()}
    return float(fusion_lib.apply(fusion_model, frames)["p_high"].iloc[0])


def fused_per_model(fusion_model: dict, per_model: dict[str, dict[str, float]]) -> list[float]:
    """The fusion applied fold model by fold model, where every sequence has the same fold names
    (a study's runs share their folds); empty otherwise."""
    names = [list(models) for models in per_model.values()]
    if not names or any(n != names[0] for n in names):
        return []
    return [fused(fusion_model, {seq: models[name] for seq, models in per_model.items()})
            for name in names[0]]


def flag(code: str, message: str, sequence: str | None = None) -> dict:
    return {"code": code, "sequence": sequence, "message": message}


def acquisition_range(compared: dict[str, dict]) -> tuple[dict, list[dict]]:
    """grade.json's `acquisition_range` from each sequence's comparison (acquisition.compare),
    and a QA flag for each value outside the training range."""
    checked = {seq: c for seq, c in compared.items() if c["checked"]}
    block = {"checked": bool(checked), "sequences": compared,
             "outside": [{"sequence": seq, **o} for seq, c in checked.items()
                         for o in c["outside"]]}
    if not checked:
        reasons = dict.fromkeys(c["reason"] for c in compared.values())
        block["reason"] = "; ".join(reasons) or ACQUISITION_NOT_CHECKED
    return block, [flag(ACQUISITION_FLAG, o["message"], o["sequence"]) for o in block["outside"]]


def result(patient_id: str, package, predictions: dict[str, dict],
           per_model: dict[str, dict[str, float]], flags: list[dict],
           compared: dict[str, dict] | None = None) -> dict:
    """grade.json's content (docs/artifacts.md) from each sequence's prediction row
    (predict.prediction_row), its fold models' p_high by name, the QA flags so far and each
    sequence's acquisition compared with the training range."""
    acquisition, outside = acquisition_range(compared or {})
    flags = [*flags, *outside]
    p_seq = {seq: row["p_high"] for seq, row in predictions.items()}
    if package.fusion is not None:
        p_high = fused(package.fusion, p_seq)
        models = fused_per_model(package.fusion, per_model)
        graded = package.fusion["name"]
    else:
        (seq, p_high), = p_seq.items()
        models = list(per_model[seq].values())
        graded = package.models[seq].name
    uncalibrated = p_high
    if package.recalibration is not None:  # `sarcograde recalibrate` fitted it for a site
        p_high = float(recalibrated(p_high, package.recalibration["intercept"],
                                    package.recalibration["slope"]))
    threshold = package.threshold
    borderline = is_borderline(p_high, threshold)
    if borderline:
        flags = [*flags, flag("borderline", f"p_high {p_high:.3f} is within {BORDERLINE} of the "
                                            f"threshold {threshold:.3f}: the grade could go "
                                            "either way")]
    return {
        "patient_id": patient_id,
        "model": {"id": package.id, "graded_model": graded,
                  "checksum": package.document.get("checksum"),
                  "version": package.document.get("versions", {}).get("exported_with", {})
                  .get("sarcograde")},
        "p_high": p_high, "grade": grade_of(p_high, threshold), "threshold": threshold,
        **({"p_high_uncalibrated": uncalibrated,
            "recalibration": {k: package.recalibration.get(k) for k in RECALIBRATION_SHOWN}}
           if package.recalibration is not None else {}),
        "borderline": borderline, "borderline_margin": BORDERLINE,
        "spread": spread(models) if models else None,
        "sequences": {seq: {"p_high": row["p_high"], "n_slices": int(row["n_slices"]),
                            "spread": spread(list(per_model[seq].values()))}
                      for seq, row in predictions.items()},
        "qa_flags": flags,
        "acquisition_range": acquisition,
    }

