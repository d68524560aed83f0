"""A methods paragraph for a manuscript, every number read from the runs' configurations."""

from __future__ import annotations

from typing import Any

from ..config import AugmentParams
from ..errors import SarcogradeError
from .format import format_list, format_number
from .inputs import ReportInputs, TrainingRun, lookup

MISSING = "(not recorded)"


def _value(d: dict, key: str, fmt=str) -> str:
    return fmt(d[key]) if d.get(key) is not None else MISSING


def training_sentences(run: TrainingRun | None, cache_config: dict | None = None) -> list[str]:
    """Preprocessing, network and training of one run (one sequence)."""
    run_config = (run.config if run else None) or {}
    # What the cache was built with wins over the preset's preprocess section.
    pre = {**(run_config.get("preprocess") or {}), **(run_config.get("cache") or {}),
           **(cache_config or {})}
    model = run_config.get("model") or {}
    train = run_config.get("train") or {}
    sentences = []
    sequence = run_config.get("sequence") or pre.get("sequence") or MISSING
    if pre:
        from ..preprocess.bias import AUTO, VOXELS_PER_SPAN  # SimpleITK only when needed

        grid = (f"the coarsest grid keeping {VOXELS_PER_SPAN} voxels per B-spline span"
                if pre.get("n4_grid_mm") == AUTO else f"a {_value(pre, 'n4_grid_mm')} mm grid")
        n4 = (f"N4 bias-field correction (SimpleITK, fitted on {grid}, "
              f"iterations {_value(pre, 'n4_iterations', format_list)})" if pre.get("n4")
              else "no bias-field correction")
        sentences.append(
            f"Images of the {sequence} sequence underwent {n4}, were resampled to "
            f"{_value(pre, 'spacing_mm')} mm isotropic voxels (linear interpolation for images, "
            f"nearest neighbour for masks) and z-score normalised. Every axial slice containing "
            f"tumour was cropped to the tumour's bounding box plus a {_value(pre, 'margin_mm')} "
            f"mm margin, made square and resized to {_value(pre, 'size')} x "
            f"{_value(pre, 'size')} pixels.")
    if model:
        arch = str(model.get("architecture", MISSING))
        detail = ""
        if model.get("block_config") is not None:
            detail = (f" (block configuration {format_list(model['block_config'])}, growth rate "
                      f"{_value(model, 'growth_rate')}, {_value(model, 'init_features')} initial "
                      "features)")
        init = ("initialised with ImageNet weights"
                if model.get("pretrained") not in (None, "none", False)
                else "trained from random initialisation")
        sentences.append(f"A 2D {_arch_name(arch)}{detail} with two outputs was {init}.")
    if train:
        # folds.json holds the splits actually made (fewer folds where a class is small).
        splits = run.folds or {}
        folds = {**train, **{k: splits[k] for k in ("folds", "repeats") if k in splits}}
        adaptation = splits.get("adaptation")
        sentences.append(
            f"Models were trained in stratified {_value(folds, 'folds')}-fold cross-validation "
            f"with {_value(folds, 'repeats')} repeat(s), split by patient "
            f"({_n_models(run, folds)} models){f' ({adaptation})' if adaptation else ''}, with "
            f"Adam (learning rate {_value(train, 'learning_rate', _sci)}, batch size "
            f"{_value(train, 'batch_size')}), class-weighted cross-entropy, at most "
            f"{_value(train, 'max_epochs')} epochs and early stopping on the validation loss "
            f"(patience {_value(train, 'patience')} epochs), "
            f"{augmentation_text(train.get('augment'))}.")
    return sentences


def methods_paragraph(inputs: ReportInputs) -> str:
    """The single-evaluation page's methods paragraph."""
    sentences = training_sentences(inputs.run, inputs.cache_config)
    resamples = bootstrap_count(inputs.metrics, inputs.evaluation.record)
    sentences.append(
        f"For each evaluated patient the prediction was {_aggregation(inputs)}; a patient was "
        f"called high grade when p_high > {format_number(inputs.metrics.get('threshold'))}. 95% "
        f"confidence intervals come from {resamples} bootstrap resamples of patients.")
    if lookup(inputs.metrics, "baselines", "models"):
        sentences.append("Logistic-regression baselines on clinical variables, tumour volume "
                         "and both were fitted with the same cross-validation and compared "
                         "with the DL model by DeLong's test.")
    if (inputs.evaluation.survival or {}).get("models"):
        sentences.append(SURVIVAL_SENTENCE)
    return " ".join(sentences)


SURVIVAL_SENTENCE = ("Overall survival was compared between predicted groups with Kaplan-Meier "
                     "curves and the log-rank test, Bonferroni-corrected.")


def bootstrap_count(metrics: dict, record: dict | None) -> str:
    count = metrics.get("bootstrap") or lookup(record, "config", "bootstrap")
    if isinstance(count, dict):
        count = count.get("resamples")
    return str(count) if count else MISSING


def _aggregation(inputs: ReportInputs) -> str:
    """The ensemble rule, from the run record `predict` writes beside predictions.csv."""
    source = str(inputs.metrics.get("source", ""))
    if source.startswith("out-of-fold"):
        return f"that of the fold model that had not seen the patient, {source}"
    rule = lookup(inputs.predict_record, "config", "aggregate")
    if rule == "probabilities":
        return "the mean of the slice probabilities over all fold models and tumour slices"
    if rule == "logits":
        return ("the softmax of the mean logits over all fold models and tumour slices (the "
                "paper's rule)")
    return "the ensemble mean over all fold models and tumour slices (rule not recorded)"


def _arch_name(arch: str) -> str:
    return {"densenet161": "DenseNet-161", "densenet121": "DenseNet-121",
            "densenet": "DenseNet"}.get(arch.lower(), arch)


def _n_models(run: TrainingRun, folds: dict) -> str:
    if run.n_models:
        return str(run.n_models)
    try:
        return str(int(folds["folds"]) * int(folds["repeats"]))
    except (KeyError, TypeError, ValueError):
        return MISSING


def augmentation_text(setting: Any) -> str:
    """`train.augment` in words, with the numbers `sarcograde.data` trains with
    (`sarcograde.config.AugmentParams`, importable without torch)."""
    if setting in (None, False, "none"):
        return "without augmentation"
    try:
        a = AugmentParams.from_config(setting)
    except SarcogradeError:
        return f"with on-the-fly augmentation ({setting})"
    return (f"with on-the-fly augmentation: horizontal and vertical flips (each p = {a.flip_p:g}), "
            f"rotation up to {a.rotate_deg:g} degrees (p = {a.rotate_p:g}), zoom "
            f"{a.zoom[0]:g}-{a.zoom[1]:g} (p = {a.zoom_p:g}), elastic deformation (SD "
            f"{a.elastic_sd * 100:g}% of the side, p = {a.elastic_p:g}) and a random crop of "
            f"{a.crop_min * 100:g}-100% of the side resized back (p = {a.crop_p:g})")


def _sci(x: Any) -> str:
    x = float(x)
    return f"{x:g}" if 1e-3 <= abs(x) < 1e3 else f"{x:.0e}".replace("e-0", "e-")
